//! Property tests of the parsers here that read outside input: page tokens, the
//! `Authorization` header and tokens (JWT header and claims of any shape, signed with
//! the real key or not). Each property runs a bounded number of generated cases; none
//! may panic, and each parser accepts only what it should. Failing cases are kept in
//! `proptest-regressions/` and replayed first.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::Signer;
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::{
    paging::{ServicesCursor, decode, encode},
    token::{
        LEEWAY_SECS, MAX_TOKEN_LEN, TokenError, bearer_token,
        testing::{claims, now, signer, verifier},
    },
};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 2_000,
        ..ProptestConfig::default()
    }
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        any::<String>().prop_map(Value::from),
        Just(json!("slipway")),
        Just(json!("user")),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(any::<String>(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A JWT header: the real one, or one with odd `alg`, `kid` and extra fields.
fn jwt_header() -> impl Strategy<Value = Value> {
    let alg = prop_oneof![
        Just(json!("EdDSA")),
        Just(json!("none")),
        Just(json!("HS256")),
        Just(json!("RS256")),
        json_value()
    ];
    let kid = prop_oneof![Just(Some(json!("k1"))), Just(None), json_value().prop_map(Some)];
    (alg, kid, prop::option::of(json_value())).prop_map(|(alg, kid, extra)| {
        let mut header = json!({"alg": alg, "typ": "JWT"});
        if let Some(kid) = kid {
            header["kid"] = kid;
        }
        if let Some(extra) = extra {
            header["x"] = extra;
        }
        header
    })
}

/// Claims: the good ones with any single field replaced by any value or dropped.
fn jwt_claims() -> impl Strategy<Value = Value> {
    const FIELDS: [&str; 9] = ["iss", "aud", "sub", "iat", "nbf", "exp", "jti", "type", "permissions"];
    (
        prop::sample::select(&FIELDS[..]),
        prop::option::of(json_value()),
        any::<bool>(),
    )
        .prop_map(|(field, value, change)| {
            let mut claims = serde_json::to_value(claims(now())).unwrap_or_default();
            if change {
                match value {
                    Some(value) => claims[field] = value,
                    None => {
                        if let Some(map) = claims.as_object_mut() {
                            map.remove(field);
                        }
                    }
                }
            }
            claims
        })
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

proptest! {
    #![proptest_config(config())]

    /// Any text as a page token: refused or, when accepted, the one token of its
    /// cursor.
    #[test]
    fn page_tokens_accept_only_their_own_form(text in any::<String>()) {
        if let Ok(Some(cursor)) = decode::<ServicesCursor>(&text) {
            prop_assert_eq!(encode(&cursor), text);
        }
    }

    /// Page tokens of base64 text of any shape (the form they have once decoded).
    #[test]
    fn decoded_page_tokens_of_any_shape(plain in any::<String>()) {
        let token = URL_SAFE_NO_PAD.encode(plain.as_bytes());
        if let Ok(Some(cursor)) = decode::<ServicesCursor>(&token) {
            prop_assert_eq!(encode(&cursor), token);
        }
    }

    #[test]
    fn every_cursor_round_trips(id in 0..=i64::MAX) {
        prop_assert_eq!(decode::<ServicesCursor>(&encode(&ServicesCursor(id))), Ok(Some(ServicesCursor(id))));
    }

    /// Any header value: a token only after the Bearer scheme.
    #[test]
    fn bearer_headers(value in any::<String>()) {
        if let Some(token) = bearer_token(Some(&value)) {
            let scheme = value.trim().split(' ').next().unwrap_or_default();
            prop_assert!(scheme.eq_ignore_ascii_case("bearer"));
            prop_assert!(value.contains(token));
        }
    }

    /// Any text, or three base64 parts of anything, is refused.
    #[test]
    fn garbage_tokens_are_refused(text in any::<String>(), parts in prop::collection::vec(any::<Vec<u8>>(), 3)) {
        let (key, _) = signer(1);
        let verifier = verifier(&key);
        prop_assert!(verifier.verify(&text).is_err());
        let dotted: Vec<String> = parts.iter().map(|p| URL_SAFE_NO_PAD.encode(p)).collect();
        prop_assert!(verifier.verify(&dotted.join(".")).is_err());
    }

    /// Tokens signed with the real key whose header or claims are odd: accepted only
    /// when the header is EdDSA with the key's id and the claims are whole and good.
    #[test]
    fn signed_tokens_with_odd_headers_and_claims(header in jwt_header(), claims in jwt_claims()) {
        let (key, _) = signer(1);
        let verifier = verifier(&key);
        let signed = format!("{}.{}", b64(&header), b64(&claims));
        let signature = URL_SAFE_NO_PAD.encode(key.sign(signed.as_bytes()).to_bytes());
        let token = format!("{signed}.{signature}");
        match verifier.verify(&token) {
            Ok(verified) => {
                prop_assert_eq!(&header["alg"], &json!("EdDSA"));
                prop_assert_eq!(&header["kid"], &json!("k1"));
                prop_assert_eq!(verified.iss.as_str(), "slipway");
                prop_assert_eq!(verified.aud.as_str(), "slipway");
                prop_assert!(verified.exp + LEEWAY_SECS as i64 >= now());
                prop_assert!(verified.nbf <= now() + LEEWAY_SECS as i64);
            }
            Err(TokenError::TooLong) => prop_assert!(token.len() > MAX_TOKEN_LEN),
            Err(_) => {}
        }
    }
}

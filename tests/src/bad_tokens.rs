//! Tokens that are wrong in exactly one way, built from a good token's claims, for
//! refusal tests of every token type.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use common::token::Claims;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

use crate::stack::{Stack, sign};

/// `(what is wrong, token)` for each way a token of `good`'s shape can be bad:
/// framing, signature, algorithm, key, time window, issuer and audience. `public_x`
/// is the auth service's current public key (the JWKS `x`), for the classic attack of
/// HS256 signed with the public key as secret.
pub fn variants(stack: &Stack, good: &Claims, public_x: &str) -> Vec<(&'static str, String)> {
    let now = good.iat;
    let real = stack.sign_with_real_key(good);
    let mut tampered = real.clone().into_bytes();
    let middle = tampered.iter().position(|&b| b == b'.').unwrap_or(0) + 5;
    tampered[middle] = if tampered[middle] == b'A' { b'B' } else { b'A' };
    let forged_key = ed25519_dalek::SigningKey::from_bytes(&[42u8; 32]);
    let hs256 = |secret: &[u8]| {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), good, &EncodingKey::from_secret(secret))
            .expect("sign hs256")
    };
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(good).expect("claims json"));
    let alg_none = format!(
        "{}.{payload}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#)
    );
    let public_bytes = URL_SAFE_NO_PAD.decode(public_x).unwrap_or_default();
    let changed = |f: &dyn Fn(&mut Claims)| {
        let mut claims = good.clone();
        f(&mut claims);
        stack.sign_with_real_key(&claims)
    };
    vec![
        ("empty", String::new()),
        ("garbage", "not-a-jwt".to_owned()),
        ("truncated", real[..40].to_owned()),
        ("tampered", String::from_utf8(tampered).unwrap_or_default()),
        (
            "longer than the verifier accepts",
            format!("{}.{}.{}", "a".repeat(4000), "b".repeat(4000), "c".repeat(300)),
        ),
        ("alg none", alg_none),
        ("hs256 with the public key as secret", hs256(&public_bytes)),
        ("hs256 with the public key's text as secret", hs256(public_x.as_bytes())),
        ("unknown key", sign(&forged_key, good)),
        ("expired", changed(&|c| c.exp = now - 120)),
        ("not yet valid", changed(&|c| c.nbf = now + 600)),
        ("wrong issuer", changed(&|c| c.iss = "fastdeploy".into())),
        ("wrong audience", changed(&|c| c.aud = "other".into())),
    ]
}

/// The auth service's current public key, as the gateway publishes it.
pub async fn public_x(stack: &Stack) -> String {
    let jwks: serde_json::Value = stack
        .http
        .get(stack.url("/.well-known/jwks.json"))
        .send()
        .await
        .expect("GET jwks")
        .json()
        .await
        .expect("jwks json");
    jwks["keys"][0]["x"].as_str().expect("a key").to_owned()
}

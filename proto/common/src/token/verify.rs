//! The one token verifier: local EdDSA signature check against the auth service's
//! public keys, exact issuer and audience, time window, and the expected type.

use std::{collections::HashMap, sync::RwLock};

use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use proto::auth::v1::Jwks;

use super::{Claims, TokenType, jwk::decoding_key};

/// Longer tokens are refused before any parsing or crypto work.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Clock skew allowed on `nbf` and `exp`: a token verifies until `exp` + this.
pub const LEEWAY_SECS: u64 = 5;

/// Why a token was refused. The text is safe to log; callers show clients a fixed message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token too long")]
    TooLong,
    #[error("malformed token")]
    Malformed,
    #[error("algorithm not allowed")]
    Algorithm,
    #[error("unknown signing key")]
    UnknownKey,
    #[error("bad signature")]
    Signature,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("wrong issuer")]
    Issuer,
    #[error("wrong audience")]
    Audience,
    #[error("wrong token type: {0}")]
    WrongType(TokenType),
    #[error("token revoked")]
    Revoked,
    #[error("revocation list unavailable")]
    RevocationsUnavailable,
}

/// Verifies Slipway tokens against a set of public keys that can be replaced at run time.
pub struct Verifier {
    keys: RwLock<HashMap<String, DecodingKey>>,
    validation: Validation,
    /// Tokens whose signature and claims checked out, until they expire. Revocation is
    /// checked by the caller on every use, so a cached token is never trusted past a
    /// revocation.
    cache: RwLock<HashMap<Box<str>, Claims>>,
}

/// More cached tokens than this and the cache starts over.
const MAX_CACHED: usize = 10_000;

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<String> = self
            .keys
            .read()
            .map(|k| k.keys().cloned().collect())
            .unwrap_or_default();
        f.debug_struct("Verifier").field("kids", &kids).finish()
    }
}

impl Verifier {
    pub fn new(issuer: &str, audience: &str) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        Verifier {
            keys: RwLock::new(HashMap::new()),
            validation,
            cache: RwLock::new(HashMap::new()),
        }
    }

    /// Replaces the key set; JWKs that are not valid Ed25519 keys are skipped.
    pub fn set_keys(&self, jwks: &Jwks) -> usize {
        let keys: HashMap<String, DecodingKey> = jwks
            .keys
            .iter()
            .filter_map(|jwk| decoding_key(jwk).map(|key| (jwk.kid.clone(), key)))
            .collect();
        let count = keys.len();
        let mut guard = match self.keys.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let same_kids = guard.len() == keys.len() && keys.keys().all(|kid| guard.contains_key(kid));
        *guard = keys;
        drop(guard);
        if !same_kids {
            // A key may have gone: nothing it signed may stay trusted.
            if let Ok(mut cache) = self.cache.write() {
                cache.clear();
            }
        }
        count
    }

    pub fn has_keys(&self) -> bool {
        self.keys.read().map(|k| !k.is_empty()).unwrap_or(false)
    }

    /// Verifies signature, algorithm, key id, issuer, audience and time window; a
    /// token verified before is answered from the cache while its window lasts.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLong);
        }
        let now = jsonwebtoken::get_current_timestamp() as i64;
        let leeway = LEEWAY_SECS as i64;
        if let Some(claims) = self.cache.read().ok().and_then(|c| c.get(token).cloned()) {
            if now > claims.exp + leeway {
                if let Ok(mut cache) = self.cache.write() {
                    cache.remove(token);
                }
                return Err(TokenError::Expired);
            }
            return Ok(claims);
        }
        let claims = self.verify_signature(token)?;
        if let Ok(mut cache) = self.cache.write() {
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
            cache.insert(token.into(), claims.clone());
        }
        Ok(claims)
    }

    /// The full check without the cache: signature, algorithm, key id, issuer,
    /// audience, time window.
    pub fn verify_signature(&self, token: &str) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLong);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::Algorithm);
        }
        let kid = header.kid.ok_or(TokenError::UnknownKey)?;
        let keys = self.keys.read().map_err(|_| TokenError::UnknownKey)?;
        let key = keys.get(&kid).ok_or(TokenError::UnknownKey)?;
        let data = jsonwebtoken::decode::<Claims>(token, key, &self.validation).map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => TokenError::Signature,
            ErrorKind::ExpiredSignature => TokenError::Expired,
            ErrorKind::ImmatureSignature => TokenError::NotYetValid,
            ErrorKind::InvalidIssuer => TokenError::Issuer,
            ErrorKind::InvalidAudience => TokenError::Audience,
            ErrorKind::InvalidAlgorithm => TokenError::Algorithm,
            _ => TokenError::Malformed,
        })?;
        Ok(data.claims)
    }

    /// Verifies and checks the token is of the expected type.
    pub fn verify_type(&self, token: &str, expected: TokenType) -> Result<Claims, TokenError> {
        let claims = self.verify(token)?;
        if claims.token_type != expected {
            return Err(TokenError::WrongType(claims.token_type));
        }
        Ok(claims)
    }
}

/// The token of an `Authorization: Bearer <token>` value; the scheme is case-insensitive.
/// `None` means "not authenticated" (no header, another scheme); an empty token after
/// `Bearer` is returned as is and then fails verification, as in fastDeploy.
pub fn bearer_token(header: Option<&str>) -> Option<&str> {
    let value = header?.trim();
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::{
        public_jwk,
        testing::{claims, now, sign, signer, verifier},
    };
    use jsonwebtoken::{EncodingKey, Header};

    #[test]
    fn accepts_a_good_token_and_refuses_each_bad_part() {
        let (key, enc) = signer(1);
        let v = verifier(&key);
        let now = now();
        let good = sign(&enc, "k1", &claims(now));
        assert_eq!(
            v.verify_type(&good, TokenType::User).unwrap().user.as_deref(),
            Some("alice")
        );
        assert_eq!(
            v.verify_type(&good, TokenType::Service),
            Err(TokenError::WrongType(TokenType::User))
        );

        let (_, other) = signer(2);
        assert_eq!(v.verify(&sign(&other, "k1", &claims(now))), Err(TokenError::Signature));
        assert_eq!(v.verify(&sign(&enc, "k9", &claims(now))), Err(TokenError::UnknownKey));
        let expired = Claims {
            exp: now - 60,
            ..claims(now)
        };
        assert_eq!(v.verify(&sign(&enc, "k1", &expired)), Err(TokenError::Expired));
        let future = Claims {
            nbf: now + 600,
            ..claims(now)
        };
        assert_eq!(v.verify(&sign(&enc, "k1", &future)), Err(TokenError::NotYetValid));
        let iss = Claims {
            iss: "fastdeploy".into(),
            ..claims(now)
        };
        assert_eq!(v.verify(&sign(&enc, "k1", &iss)), Err(TokenError::Issuer));
        let aud = Claims {
            aud: "other".into(),
            ..claims(now)
        };
        assert_eq!(v.verify(&sign(&enc, "k1", &aud)), Err(TokenError::Audience));

        let hs = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims(now),
            &EncodingKey::from_secret(key.verifying_key().as_bytes()),
        )
        .unwrap();
        assert_eq!(v.verify(&hs), Err(TokenError::Algorithm));
        assert_eq!(v.verify("garbage"), Err(TokenError::Malformed));
        assert_eq!(v.verify(&"a".repeat(MAX_TOKEN_LEN + 1)), Err(TokenError::TooLong));

        let mut parts: Vec<&str> = good.split('.').collect();
        let tampered_payload = {
            use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
            let admin = Claims {
                user: Some("root".into()),
                ..claims(now)
            };
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&admin).unwrap())
        };
        parts[1] = &tampered_payload;
        assert_eq!(v.verify(&parts.join(".")), Err(TokenError::Signature));
    }

    #[test]
    fn cached_tokens_still_expire_and_a_key_change_empties_the_cache() {
        let (key, enc) = signer(1);
        let v = verifier(&key);
        let now = now();
        let short = Claims {
            exp: now - LEEWAY_SECS as i64 + 1,
            ..claims(now)
        };
        let token = sign(&enc, "k1", &short);
        assert!(v.verify(&token).is_ok());
        assert!(v.verify(&token).is_ok(), "answered from the cache");
        std::thread::sleep(std::time::Duration::from_millis(2100));
        assert_eq!(
            v.verify(&token),
            Err(TokenError::Expired),
            "the cache never outlives exp"
        );

        let good = sign(&enc, "k1", &claims(now));
        assert!(v.verify(&good).is_ok());
        let (other, _) = signer(2);
        v.set_keys(&Jwks {
            keys: vec![public_jwk("k2", &other.verifying_key())],
        });
        assert_eq!(
            v.verify(&good),
            Err(TokenError::UnknownKey),
            "a retired key's tokens are not served from the cache"
        );
    }

    #[test]
    fn alg_none_is_refused() {
        let (key, _) = signer(1);
        let v = verifier(&key);
        use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","kid":"k1"}"#);
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(now())).unwrap());
        assert!(v.verify(&format!("{header}.{body}.")).is_err());
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(Some("bearer abc")), Some("abc"));
        assert_eq!(bearer_token(Some("Basic abc")), None);
        assert_eq!(bearer_token(Some("Bearer")), Some(""));
        assert_eq!(bearer_token(None), None);
    }
}

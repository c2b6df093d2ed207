//! Keys, claims and signing for the token tests.

use ed25519_dalek::{SigningKey, pkcs8::EncodePrivateKey};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use proto::auth::v1::Jwks;

use super::{Claims, TokenType, Verifier, public_jwk};

pub fn signer(seed: u8) -> (SigningKey, EncodingKey) {
    let key = SigningKey::from_bytes(&[seed; 32]);
    let der = key.to_pkcs8_der().unwrap();
    let enc = EncodingKey::from_ed_der(der.as_bytes());
    (key, enc)
}

pub fn claims(now: i64) -> Claims {
    Claims {
        iss: "slipway".into(),
        aud: "slipway".into(),
        sub: "user:alice".into(),
        iat: now,
        nbf: now,
        exp: now + 600,
        jti: "j1".into(),
        token_type: TokenType::User,
        user: Some("alice".into()),
        service: None,
        origin: None,
        deployment: None,
        permissions: None,
        parent: None,
        services: None,
        ext: None,
    }
}

pub fn sign(enc: &EncodingKey, kid: &str, c: &Claims) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, c, enc).unwrap()
}

pub fn verifier(key: &SigningKey) -> Verifier {
    let v = Verifier::new("slipway", "slipway");
    v.set_keys(&Jwks {
        keys: vec![public_jwk("k1", &key.verifying_key())],
    });
    v
}

pub fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

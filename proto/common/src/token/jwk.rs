//! Ed25519 public keys as JWKs (RFC 8037 `OKP` keys) and back.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::VerifyingKey;
use jsonwebtoken::DecodingKey;
use proto::auth::v1::Jwk;

/// A key id derived from the public key itself: stable across restarts and replicas.
pub fn key_id(key: &VerifyingKey) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(key.as_bytes());
    URL_SAFE_NO_PAD.encode(&digest[..12])
}

/// The JWK of an Ed25519 public key.
pub fn public_jwk(kid: &str, key: &VerifyingKey) -> Jwk {
    Jwk {
        kty: "OKP".into(),
        crv: "Ed25519".into(),
        x: URL_SAFE_NO_PAD.encode(key.as_bytes()),
        kid: kid.into(),
        alg: "EdDSA".into(),
        r#use: "sig".into(),
    }
}

/// A decoding key from a JWK, refusing anything but a 32-byte Ed25519 key (a wrong
/// length would make the verifier panic later).
pub fn decoding_key(jwk: &Jwk) -> Option<DecodingKey> {
    if jwk.kty != "OKP" || jwk.crv != "Ed25519" || (!jwk.alg.is_empty() && jwk.alg != "EdDSA") {
        return None;
    }
    let raw = URL_SAFE_NO_PAD.decode(jwk.x.as_bytes()).ok()?;
    let raw: [u8; 32] = raw.try_into().ok()?;
    // Reject points that are not valid public keys.
    VerifyingKey::from_bytes(&raw).ok()?;
    Some(DecodingKey::from_ed_der(&raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_keys_of_the_wrong_shape() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]).verifying_key();
        let good = public_jwk("k1", &key);
        assert!(decoding_key(&good).is_some());
        let short = Jwk {
            x: URL_SAFE_NO_PAD.encode([1u8; 31]),
            ..good.clone()
        };
        assert!(decoding_key(&short).is_none());
        let rsa = Jwk {
            kty: "RSA".into(),
            ..good.clone()
        };
        assert!(decoding_key(&rsa).is_none());
        let hs = Jwk {
            alg: "HS256".into(),
            ..good
        };
        assert!(decoding_key(&hs).is_none());
    }
}

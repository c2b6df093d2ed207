//! Token verification and minting figures: the bare Ed25519 verify, Slipway's cold
//! (signature) and cached verification, and the mint rate, all in one run.
//! Targets (issue 3): cached under 5 µs; cold within 1.5x of the bare verify.

use std::time::{Duration, Instant};

use common::token::{Claims, TokenType, Verifier, key_id, public_jwk};
use ed25519_dalek::{Signature, SigningKey, Verifier as _, pkcs8::EncodePrivateKey};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use proto::auth::v1::Jwks;

const N: usize = 2_000;

fn per_op(elapsed: Duration, n: usize) -> f64 {
    elapsed.as_secs_f64() * 1e6 / n as f64
}

fn claims(i: usize) -> Claims {
    let now = jsonwebtoken::get_current_timestamp() as i64;
    Claims {
        iss: common::ISSUER.into(),
        aud: common::AUDIENCE.into(),
        sub: "service:alpha".into(),
        iat: now,
        nbf: now,
        exp: now + 3600,
        jti: format!("bench-{i}"),
        token_type: TokenType::Service,
        user: Some("alice".into()),
        service: Some("alpha".into()),
        origin: Some("github".into()),
        deployment: None,
        permissions: None,
        parent: None,
        services: None,
        ext: None,
    }
}

fn main() {
    let key = SigningKey::from_bytes(&[9u8; 32]);
    let kid = key_id(&key.verifying_key());
    let der = key.to_pkcs8_der().expect("pkcs8");
    let encoding = EncodingKey::from_ed_der(der.as_bytes());
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.clone());

    // Mint rate: sign N distinct tokens.
    let start = Instant::now();
    let tokens: Vec<String> = (0..N)
        .map(|i| jsonwebtoken::encode(&header, &claims(i), &encoding).expect("sign"))
        .collect();
    let mint = start.elapsed();

    // Bare Ed25519: verify the same signatures with ed25519-dalek directly.
    let verifying = key.verifying_key();
    let parts: Vec<(Vec<u8>, Signature)> = tokens
        .iter()
        .map(|t| {
            let (input, sig) = t.rsplit_once('.').expect("three parts");
            let sig = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, sig).expect("b64");
            (input.as_bytes().to_vec(), Signature::from_slice(&sig).expect("sig"))
        })
        .collect();
    let start = Instant::now();
    for (input, sig) in &parts {
        verifying.verify(input, sig).expect("valid");
    }
    let bare = start.elapsed();

    let verifier = Verifier::new(common::ISSUER, common::AUDIENCE);
    verifier.set_keys(&Jwks {
        keys: vec![public_jwk(&kid, &verifying)],
    });

    // Cold: every token seen for the first time (signature, claims, cache insert).
    let start = Instant::now();
    for token in &tokens {
        verifier.verify(token).expect("valid");
    }
    let cold = start.elapsed();

    // Cached: the same token again and again.
    let hot = &tokens[0];
    let start = Instant::now();
    for _ in 0..N * 10 {
        verifier.verify(hot).expect("valid");
    }
    let cached = start.elapsed();

    let (bare_us, cold_us, cached_us) = (per_op(bare, N), per_op(cold, N), per_op(cached, N * 10));
    println!("token verification and minting, {N} tokens of {} bytes", hot.len());
    println!("  bare ed25519 verify    {bare_us:8.2} µs/op");
    println!(
        "  slipway verify, cold   {cold_us:8.2} µs/op   ({:.2}x bare; target <= 1.50x)",
        cold_us / bare_us
    );
    println!("  slipway verify, cached {cached_us:8.2} µs/op   (target < 5 µs)");
    println!(
        "  mint (sign)            {:8.0} tokens/s",
        N as f64 / mint.as_secs_f64()
    );
}

//! The auth service's signing keys as its database holds them: for tests that sign
//! tokens with the real key, and that check what is stored.

use std::path::Path;

use auth_service::{kek::Kek, storage::Store};
use base64::{Engine, engine::general_purpose::STANDARD};
use secrecy::ExposeSecret;

/// Every row of `signing_keys`, oldest generation first.
pub async fn rows(database_url: &str) -> Vec<auth_service::storage::signing_keys::Model> {
    let store = Store::open(database_url).await.expect("auth database");
    store.signing_keys().await.expect("signing keys")
}

/// The private key of the newest generation, opened with the KEK in `kek_file`.
pub async fn current_signing_key(database_url: &str, kek_file: &Path) -> ed25519_dalek::SigningKey {
    let row = rows(database_url).await.pop().expect("a signing key");
    let kek = Kek::load(kek_file).expect("the key-encryption key");
    let sealed = STANDARD.decode(&row.sealed_private_key).expect("base64");
    let seed = kek.open(&row.kid, &sealed).expect("the key opens with the KEK");
    let seed: [u8; 32] = seed.expose_secret().as_slice().try_into().expect("32 bytes");
    ed25519_dalek::SigningKey::from_bytes(&seed)
}

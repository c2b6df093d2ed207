//! fastDeploy tokens at the edge, during a migration: with `--legacy-tokens`, a
//! bearer token signed HS256 is traded at the auth service (which alone holds the
//! fastDeploy secret) for a short-lived Slipway token, and the request goes on with
//! that one. Exchanges are cached until shortly before the new token expires, so CI
//! polling with an old token costs one auth call per few minutes.

use std::{collections::HashMap, sync::Mutex};

use common::token::{Claims, TokenError};
use proto::auth::v1::ExchangeLegacyTokenRequest;
use sha2::{Digest, Sha256};

use crate::backends::Backends;

const MAX_CACHED: usize = 1000;
/// An exchanged token is used until this many seconds before it expires.
const MARGIN_SECS: i64 = 30;

#[derive(Default)]
pub struct LegacyExchange {
    cache: Mutex<HashMap<[u8; 32], String>>,
}

/// Whether a token's header names HS256 (fastDeploy's algorithm).
pub fn is_legacy(token: &str) -> bool {
    decode_part(token, 0).is_some_and(|header| header["alg"] == "HS256")
}

/// One dot-separated part of a JWT as JSON, read without checking anything.
fn decode_part(token: &str, index: usize) -> Option<serde_json::Value> {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let bytes = URL_SAFE_NO_PAD.decode(token.split('.').nth(index)?).ok()?;
    serde_json::from_slice(&bytes).ok()
}

impl LegacyExchange {
    /// The Slipway token this fastDeploy token is worth, or why not.
    pub async fn exchange(&self, backends: &Backends, legacy: &str) -> Result<String, TokenError> {
        let key: [u8; 32] = Sha256::digest(legacy.as_bytes()).into();
        let now = chrono::Utc::now().timestamp();
        if let Ok(cache) = self.cache.lock()
            && let Some(token) = cache.get(&key)
            && expiry(token).is_some_and(|exp| exp - MARGIN_SECS > now)
        {
            return Ok(token.clone());
        }
        let minted = backends
            .auth()
            .exchange_legacy_token(ExchangeLegacyTokenRequest {
                token: legacy.to_owned(),
            })
            .await
            .map_err(|status| {
                tracing::info!(code = ?status.code(), reason = status.message(), "legacy token refused");
                if status.code() == tonic::Code::Unauthenticated {
                    TokenError::Algorithm
                } else {
                    TokenError::RevocationsUnavailable
                }
            })?
            .into_inner();
        tracing::warn!(legacy = true, "legacy fastDeploy token exchanged");
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
            cache.insert(key, minted.token.clone());
        }
        Ok(minted.token)
    }
}

/// The `exp` of a token we minted ourselves (read without checking; it is checked
/// again by the verifier on every use).
fn expiry(token: &str) -> Option<i64> {
    serde_json::from_value::<Claims>(decode_part(token, 1)?)
        .ok()
        .map(|c| c.exp)
}

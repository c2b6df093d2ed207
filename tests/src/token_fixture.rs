//! Fixture of the token tests: HTTP calls, polling for a status, the auth service's
//! gRPC client and the deploy service's credential.

use crate::support;

use std::time::Duration;

use crate::Stack;
use serde_json::Value;
use support::send;

pub async fn post(stack: &Stack, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    send(stack, reqwest::Method::POST, path, token, Some(body)).await
}

pub async fn get(stack: &Stack, path: &str, token: &str) -> (u16, Value) {
    send(stack, reqwest::Method::GET, path, Some(token), None).await
}

/// Polls until `path` answers `want` for `token` (revocations reach the gateway
/// through the feed, within about a second).
pub async fn wait_status(stack: &Stack, path: &str, token: &str, want: u16) {
    crate::wait_until(Duration::from_secs(5), async || match get(stack, path, token).await {
        (status, _) if status == want => Ok(()),
        (status, body) => Err(format!("{path} still {status} {body}, want {want}")),
    })
    .await
}

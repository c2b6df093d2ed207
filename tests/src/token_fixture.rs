//! Fixture of the token tests: HTTP calls, polling for a status, the auth service's
//! gRPC client and the deploy service's credential.

use crate::support;

use std::time::{Duration, Instant};

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
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = get(stack, path, token).await;
        if status == want {
            return;
        }
        assert!(Instant::now() < deadline, "{path} still {status} {body}, want {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

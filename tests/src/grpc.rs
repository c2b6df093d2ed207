//! Small helpers for tests that speak gRPC to a service (or to the gateway).

use std::net::SocketAddr;

use tonic::transport::Channel;

/// A request carrying `Authorization: Bearer <token>`.
pub fn bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header value"),
    );
    request
}

/// A connected channel to `addr`.
pub async fn channel(addr: SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("url")
        .connect()
        .await
        .expect("connect")
}

/// The claims of a token, read without checking it.
pub fn claims_of(token: &str) -> serde_json::Value {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let payload = URL_SAFE_NO_PAD
        .decode(token.split('.').nth(1).expect("a JWT"))
        .expect("base64url payload");
    serde_json::from_slice(&payload).expect("JSON claims")
}

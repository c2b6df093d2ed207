//! Small helpers for tests that speak gRPC to a service (or to the gateway).

use std::net::SocketAddr;

use proto::auth::v1::{AttenuateTokenRequest, auth_service_client::AuthServiceClient};
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

/// How a grpc-web response body ended: the `grpc-status` and `grpc-message` of its
/// trailer frame, or `None` when the body ended without one. Panics when a message
/// frame comes (the callers' streams are quiet) or the body breaks off.
pub async fn grpc_web_trailers(response: &mut reqwest::Response) -> Option<(String, String)> {
    let mut buffer = Vec::new();
    loop {
        let chunk = response.chunk().await.expect("the grpc-web body broke off")?;
        buffer.extend_from_slice(&chunk);
        if buffer.len() < 5 {
            continue;
        }
        let length = u32::from_be_bytes(buffer[1..5].try_into().expect("4 bytes")) as usize;
        if buffer.len() < 5 + length {
            continue;
        }
        assert_eq!(buffer[0], 0x80, "a message frame came before the trailers");
        let text = String::from_utf8(buffer[5..5 + length].to_vec()).expect("UTF-8 trailers");
        let field = |name: &str| {
            text.split("\r\n")
                .find_map(|line| line.strip_prefix(name))
                .map(|v| v.trim().to_owned())
                .unwrap_or_default()
        };
        return Some((field("grpc-status:"), field("grpc-message:")));
    }
}

/// A token derived from `parent` by the auth service at `auth` (recorded, so
/// revocable), narrowed as `request` says.
pub async fn attenuated(auth: SocketAddr, parent: &str, request: AttenuateTokenRequest) -> String {
    AuthServiceClient::new(channel(auth).await)
        .attenuate_token(bearer(request, parent))
        .await
        .expect("attenuating a token")
        .into_inner()
        .token
}

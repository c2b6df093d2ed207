//! gRPC and grpc-web at the edge. Every request whose content-type is
//! `application/grpc*` comes here, whatever its path: native gRPC over HTTP/2 (h2c) as
//! it is, grpc-web (HTTP/1.1 or HTTP/2, binary or text) translated to gRPC by
//! tonic-web. The RPC is looked up in the scope table, the bearer token verified with
//! the gateway's verifier and checked against the entry, all before anything reaches
//! a backend; then the call is forwarded untouched (bodies streamed both ways) to the
//! backend that serves it. Service-to-service credentials are stripped: nobody passes
//! the deploy service's authority through the edge. A server stream opened with a
//! token ends when that token is revoked or expires: the backend ends it, and the
//! gateway ends its side too (trailers with UNAUTHENTICATED), whichever comes first.
//!
//! Request messages are bounded by `--max-body-bytes`: once the token is checked (a
//! refused call's body is never read), the first message's 5-byte header is read and a
//! longer message is refused `RESOURCE_EXHAUSTED` at once; the request stream is then
//! capped at that one message (every RPC takes one request message), so a body that
//! goes on past it ends the call with `RESOURCE_EXHAUSTED` too. Nothing is buffered
//! beyond what the backend has not taken yet.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, Version, header, request::Parts},
    middleware::Next,
    response::Response,
};
use common::{
    authz::{EndingBody, TokenEnd, token_end},
    identity::{CALLER_HEADER, CLIENT_ADDRESS_HEADER, CREDENTIAL_HEADER},
    scope_table::{self, Access},
    token::Claims,
};
use http_body_util::BodyExt;
use tonic::{Status, body::Body as GrpcBody, transport::Channel};
use tower::{Layer, Service, ServiceExt};
use tower_http::cors::{AllowHeaders, AllowMethods, AllowOrigin, CorsLayer};

use crate::{
    Config,
    body_limit::{Capped, is_too_large},
    fastdeploy::auth::verified,
    server::AppState,
};

/// Headers never passed to a backend: the service-to-service identity (only the
/// deploy service may present it, directly), the browser's cookies, and HTTP/1.1
/// connection headers that HTTP/2 forbids.
const STRIPPED: &[&str] = &[
    CALLER_HEADER,
    CREDENTIAL_HEADER,
    "cookie",
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

/// Headers a grpc-web client in a browser must be able to read (`retry-after`: the
/// retry hint of a refused login).
const EXPOSED: &[&str] = &[
    "grpc-status",
    "grpc-message",
    "grpc-status-details-bin",
    common::error::RETRY_AFTER,
];

/// The RPC whose caller's address the auth service is told (its login limits).
const LOGIN: &str = "/slipway.auth.v1.AuthService/Login";

/// Middleware: gRPC and grpc-web requests go to the proxy, everything else on to the
/// HTTP routes.
pub async fn dispatch(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if !is_grpc(request.headers()) {
        return next.run(request).await;
    }
    // grpc-web in, gRPC to the proxy; gRPC back, grpc-web out. Native gRPC passes as is.
    let service = tonic_web::GrpcWebLayer::new().layer(Proxy { state });
    match service.oneshot(request).await {
        Ok(response) => response.map(axum::body::Body::new),
        Err(never) => match never {},
    }
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

/// The proxy as a tower service, for tonic-web to wrap.
#[derive(Clone)]
struct Proxy {
    state: AppState,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, Infallible>> + Send>>;

impl Service<http::Request<GrpcBody>> for Proxy {
    type Response = http::Response<GrpcBody>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<GrpcBody>) -> Self::Future {
        let state = self.state.clone();
        Box::pin(async move { Ok(forward(state, request).await) })
    }
}

/// Admits and forwards one call; any refusal is a trailers-only gRPC answer.
async fn forward(state: AppState, request: http::Request<GrpcBody>) -> http::Response<GrpcBody> {
    let path: String = request.uri().path().chars().take(200).collect();
    let exceeded = Arc::new(AtomicBool::new(false));
    let refusal = match admit(&state, request, &exceeded).await {
        Ok(Admitted {
            backend,
            channel,
            request,
            stream,
        }) => {
            let response = call(backend, channel, request).await;
            if !exceeded.load(Ordering::Acquire) {
                return match stream {
                    Some(claims) => {
                        let end = stream_end(&state, claims);
                        response.map(|body| GrpcBody::new(EndingBody::new(body, end)))
                    }
                    None => response,
                };
            }
            too_large(state.max_body_bytes)
        }
        Err(status) => status,
    };
    tracing::info!(rpc = %path, code = ?refusal.code(), reason = refusal.message(), "grpc call refused at the gateway");
    refusal.into_http()
}

/// A call the caller may make: where it goes and what to send.
struct Admitted {
    backend: &'static str,
    channel: Channel,
    request: http::Request<GrpcBody>,
    /// For a server stream: the claims of the token that opened it (none for an open
    /// RPC), to end the stream with it.
    stream: Option<Option<Claims>>,
}

/// When the gateway ends a proxied stream itself: when the token that opened it is no
/// longer good (see [`token_end`]), or when the gateway stops (UNAVAILABLE).
fn stream_end(state: &AppState, claims: Option<Claims>) -> TokenEnd {
    let shutdown = state.hub.shutdown().clone();
    let token = claims.map(|claims| token_end(state.verifier.clone(), claims));
    Box::pin(async move {
        let stopping = async move {
            shutdown.cancelled().await;
            Status::unavailable("the gateway is shutting down")
        };
        match token {
            Some(token) => tokio::select! {
                status = token => status,
                status = stopping => status,
            },
            None => stopping.await,
        }
    })
}

fn too_large(max: usize) -> Status {
    Status::resource_exhausted(format!("the request must be one message of at most {max} bytes"))
}

/// The backend and the request to send it, once the scope table says the caller may
/// and the first message's header is within the limit.
async fn admit(
    state: &AppState,
    request: http::Request<GrpcBody>,
    exceeded: &Arc<AtomicBool>,
) -> Result<Admitted, Status> {
    let rpc = scope_table::rpc(request.uri().path()).ok_or_else(|| Status::unimplemented("no such RPC here"))?;
    let (mut parts, body) = request.into_parts();
    if parts.headers.contains_key(CREDENTIAL_HEADER) {
        tracing::warn!(rpc = rpc.path, "service credential presented at the edge; dropped");
    }
    for name in STRIPPED {
        parts.headers.remove(*name);
    }
    parts.headers.remove(CLIENT_ADDRESS_HEADER);
    if rpc.path == LOGIN {
        let peer = crate::fastdeploy::auth::peer_address(&parts.extensions);
        let mut metadata = tonic::metadata::MetadataMap::new();
        crate::fastdeploy::auth::name_client(&mut metadata, state, peer);
        parts.headers.extend(metadata.into_headers());
    }
    let claims = match rpc.access {
        Access::Open => None,
        Access::Internal => return Err(scope_table::Refusal::Internal.into()),
        access => Some(authorize(state, &mut parts, access).await?),
    };
    let (backend, channel) = backend(state, rpc.path)?;
    let body = bounded(body, state.max_body_bytes, exceeded.clone()).await?;
    parts.version = Version::HTTP_2;
    Ok(Admitted {
        backend,
        channel,
        request: http::Request::from_parts(parts, body),
        stream: rpc.server_streaming.then_some(claims),
    })
}

/// Bytes of a gRPC message's header: a compression flag and a big-endian length.
const MESSAGE_HEADER: usize = 5;

/// The request body capped at one message of at most `max` bytes, after reading just
/// far enough to see the first message's declared length (refused when longer).
pub(crate) async fn bounded(body: GrpcBody, max: usize, exceeded: Arc<AtomicBool>) -> Result<GrpcBody, Status> {
    let mut body = Capped::new(body, max.saturating_add(MESSAGE_HEADER), exceeded);
    let mut read = Vec::new();
    let mut header = Vec::with_capacity(MESSAGE_HEADER);
    while header.len() < MESSAGE_HEADER {
        let Some(frame) = body.frame().await else { break };
        let frame = frame.map_err(|error| {
            if is_too_large(error.as_ref()) {
                too_large(max)
            } else {
                Status::cancelled("the request body was cut short")
            }
        })?;
        let Some(data) = frame.data_ref() else {
            read.push(frame);
            break;
        };
        let wanted = MESSAGE_HEADER - header.len();
        header.extend_from_slice(&data[..wanted.min(data.len())]);
        read.push(frame);
    }
    if let Some(length) = header.get(1..MESSAGE_HEADER) {
        let length = u32::from_be_bytes([length[0], length[1], length[2], length[3]]);
        // Every RPC takes one message: the body may hold that one and nothing more.
        match usize::try_from(length) {
            Ok(n) if n <= max && body.limit_to(MESSAGE_HEADER + n) => {}
            _ => return Err(too_large(max)),
        }
    }
    body.unread(read);
    Ok(GrpcBody::new(body))
}

/// Verifies the bearer token (a fastDeploy token is exchanged first when that is on)
/// and checks it against the entry; the backend gets the token it will verify again.
async fn authorize(state: &AppState, parts: &mut Parts, access: Access) -> Result<Claims, Status> {
    let (token, claims) = verified(parts, state).await.map_err(Status::from)?;
    if let Err(refusal) = access.check(&claims) {
        tracing::info!(jti = %claims.jti, %refusal, "grpc call refused: scope");
        return Err(refusal.into());
    }
    let value = HeaderValue::try_from(format!("Bearer {token}"))
        .map_err(|_| Status::unauthenticated("Could not validate credentials"))?;
    parts.headers.insert(header::AUTHORIZATION, value);
    Ok(claims)
}

/// The backend serving an RPC, by its service's full name.
fn backend_of(path: &str) -> Option<&'static str> {
    match path.trim_start_matches('/').split('/').next()? {
        "slipway.auth.v1.AuthService" => Some("auth"),
        "slipway.registry.v1.RegistryService" => Some("registry"),
        "slipway.deploy.v1.DeployService" => Some("deploy"),
        _ => None,
    }
}

fn backend(state: &AppState, path: &str) -> Result<(&'static str, Channel), Status> {
    let name = backend_of(path).ok_or_else(|| Status::unimplemented("no such RPC here"))?;
    let channel = match name {
        "auth" => &state.backends.auth,
        "registry" => &state.backends.registry,
        _ => &state.backends.deploy,
    };
    Ok((name, channel.clone()))
}

/// Sends the call on. The channel's deadline covers the wait for the backend's
/// response headers only, so a unary call is bounded while a server stream, whose
/// headers come at once, lives as long as the client keeps it.
async fn call(
    backend: &'static str,
    mut channel: Channel,
    request: http::Request<GrpcBody>,
) -> http::Response<GrpcBody> {
    let result = match channel.ready().await {
        Ok(ready) => ready.call(request).await,
        Err(error) => Err(error),
    };
    match result {
        Ok(response) => response,
        Err(error) => {
            let timed_out = std::iter::successors(Some(&error as &(dyn std::error::Error + 'static)), |e| e.source())
                .any(|e| e.is::<tonic::TimeoutExpired>());
            tracing::warn!(backend, timed_out, error = %error, "backend call failed");
            if timed_out {
                Status::deadline_exceeded(format!("{backend} service did not answer in time")).into_http()
            } else {
                Status::unavailable(format!("{backend} service unavailable")).into_http()
            }
        }
    }
}

/// CORS for browsers, on every route (fastDeploy's contract 1.5: listed origins,
/// credentials allowed, any method and header, preflights cached 600 s) plus the
/// grpc-web headers a client must read. Loopback origins are always allowed; others
/// only when listed in `--cors-origins`.
pub fn cors(config: &Config) -> CorsLayer {
    let listed: Vec<String> = config
        .cors_origins
        .iter()
        .map(|o| o.trim().trim_end_matches('/').to_owned())
        .filter(|o| !o.is_empty())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin: &HeaderValue, _| {
            origin
                .to_str()
                .is_ok_and(|o| is_loopback_origin(o) || listed.iter().any(|l| l == o))
        }))
        .allow_credentials(true)
        .allow_methods(AllowMethods::mirror_request())
        .allow_headers(AllowHeaders::mirror_request())
        .expose_headers(
            EXPOSED
                .iter()
                .map(|h| header::HeaderName::from_static(h))
                .collect::<Vec<_>>(),
        )
        .max_age(Duration::from_secs(600))
}

/// `http(s)://localhost`, `127.0.0.1` or `[::1]`, with any port.
fn is_loopback_origin(origin: &str) -> bool {
    let Some(rest) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    let host = match rest.strip_prefix("[::1]") {
        Some(port) => return port.is_empty() || is_port(port),
        None => rest,
    };
    let (name, port) = host.find(':').map_or((host, ""), |i| host.split_at(i));
    matches!(name, "localhost" | "127.0.0.1") && (port.is_empty() || is_port(port))
}

fn is_port(suffix: &str) -> bool {
    suffix
        .strip_prefix(':')
        .is_some_and(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_origins_with_any_port_and_nothing_else() {
        for ok in [
            "http://localhost",
            "http://localhost:5173",
            "http://127.0.0.1:8080",
            "https://127.0.0.1",
            "http://[::1]:3000",
        ] {
            assert!(is_loopback_origin(ok), "{ok}");
        }
        for bad in [
            "http://localhost.evil.example",
            "http://127.0.0.1.nip.io",
            "http://evil.example",
            "null",
            "file://",
            "http://localhost:",
            "http://localhost:80/x",
            "ftp://localhost",
            "http://[::1]x",
        ] {
            assert!(!is_loopback_origin(bad), "{bad}");
        }
    }

    #[test]
    fn grpc_content_types_are_recognised() {
        let with = |ct: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
            is_grpc(&headers)
        };
        assert!(with("application/grpc"));
        assert!(with("application/grpc+proto"));
        assert!(with("application/grpc-web+proto"));
        assert!(with("application/grpc-web-text"));
        assert!(!with("application/json"));
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn every_rpc_has_a_backend() {
        for rpc in scope_table::RPCS {
            assert!(backend_of(rpc.path).is_some(), "{}", rpc.path);
        }
        assert_eq!(backend_of("/grpc.health.v1.Health/Check"), None);
    }
}

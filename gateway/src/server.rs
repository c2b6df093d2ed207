//! Assembles the gateway's HTTP server: routes, fallbacks and layers.

use std::sync::Arc;

use anyhow::Context;

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, State},
    http::{HeaderMap, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use common::token::RemoteVerifier;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

use crate::{Config, backends::Backends, error::ApiError, fastdeploy, services_cache::ServicesCache};

/// What every handler and middleware shares. Cloned for every request (axum clones a
/// route's state and each layer's service per request), so it is one `Arc`.
#[derive(Clone)]
pub struct AppState(pub(crate) Arc<Shared>);

pub struct Shared {
    pub backends: Backends,
    pub verifier: Arc<RemoteVerifier>,
    /// The WebSocket live feed.
    pub hub: Arc<fastdeploy::websocket::Hub>,
    /// fastDeploy token exchange, when `--legacy-tokens` is on.
    pub legacy: Option<Arc<crate::legacy::LegacyExchange>>,
    /// `GET /services/`'s answer while the registry's WatchServices is followed.
    pub services: Arc<ServicesCache>,
    /// `--max-body-bytes`: the largest request body (HTTP) or request message (gRPC).
    pub max_body_bytes: usize,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// Longest wait at start for the auth service's revocation feed.
const FIRST_FEED_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Serves HTTP on `listener` until `shutdown` is cancelled, then drains open requests.
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let backends = Backends::new(&config)?;
    let max_stale = std::time::Duration::from_secs(config.revocation_max_stale_secs);
    let credential = config
        .credential
        .load(common::identity::GATEWAY)
        .context("loading the gateway's credential")?;
    let verifier = Arc::new(RemoteVerifier::new(backends.auth(), max_stale).with_credential(credential.clone()));
    if let Err(status) = verifier.refresh().await {
        tracing::warn!(code = ?status.code(), "auth-service keys not fetched yet; retrying when a token arrives");
    }
    let follower = tokio::spawn({
        let (verifier, shutdown) = (verifier.clone(), shutdown.clone());
        async move { verifier.follow_revocations(shutdown).await }
    });
    // A moment for the first revocation snapshot, so that a restarted gateway does not
    // refuse its first callers (503, or a WebSocket's "failure") for want of it; they
    // wait in the listen backlog meanwhile. An auth service that is down holds up the
    // start no longer than FIRST_FEED_WAIT.
    let fresh_by = tokio::time::Instant::now() + FIRST_FEED_WAIT;
    while !verifier.revocations_fresh() && tokio::time::Instant::now() < fresh_by {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The WebSocket hub's upstreams and the services cache's follow the backends with
    // the gateway's own credential from the start, on nobody's behalf.
    let hub = fastdeploy::websocket::Hub::new(shutdown.clone());
    let feed = tokio::spawn(hub.clone().run(backends.clone(), credential.clone()));
    let services = ServicesCache::new(backends.clone(), credential, shutdown.clone());
    let cache = tokio::spawn(services.clone().run());
    let legacy = config.legacy_tokens.then(|| {
        tracing::warn!("legacy fastDeploy tokens are exchanged at the auth service");
        Arc::new(crate::legacy::LegacyExchange::default())
    });
    let app = router(
        AppState(Arc::new(Shared {
            backends,
            verifier,
            hub,
            legacy,
            services,
            max_body_bytes: config.max_body_bytes,
        })),
        &config,
    );
    tracing::info!(service = "gateway", addr = %listener.local_addr()?, "listening");
    // Stop accepting and drain requests first, for at most `common::shutdown::DRAIN`
    // (WebSockets are closed with 1001, NDJSON and proxied gRPC streams ended as the
    // shutdown starts), then stop the live feed, the services cache and following
    // revocations. Peer
    // addresses are kept for X-Forwarded-Proto, believed from loopback peers only.
    // Connections that send nothing, send their headers too slowly or stop reading
    // are closed (`connections`).
    let limits = crate::connections::Limits {
        header_read: std::time::Duration::from_millis(config.header_read_timeout_ms),
        stalled_write: std::time::Duration::from_millis(config.stalled_write_timeout_ms),
    };
    let server = crate::connections::serve(listener, app, limits, shutdown.clone());
    common::shutdown::drain_bounded(
        "gateway",
        async {
            server.await;
            Ok::<(), std::convert::Infallible>(())
        },
        &shutdown,
    )
    .await?;
    shutdown.cancel();
    let _ = feed.await;
    let _ = cache.await;
    let _ = follower.await;
    tracing::info!(service = "gateway", "stopped");
    Ok(())
}

pub fn router(state: AppState, config: &Config) -> Router {
    crate::routes::router()
        // Every route of the table (`routes::ROUTES`) is checked against its entry
        // before its handler runs (route layers do not see the fallback: 404s and redirects).
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::interceptor::enforce,
        ))
        .fallback(not_found_or_redirect)
        .with_state(state.clone())
        // HTTP bodies are bounded while they are read (see `body_limit`); gRPC calls
        // are bounded by message in the proxy.
        .layer(axum::middleware::from_fn_with_state(
            config.max_body_bytes,
            crate::body_limit::limit,
        ))
        // gRPC and grpc-web (content-type application/grpc*), whatever the path, go to
        // the proxy, which checks the scope table before any backend sees the call.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::grpc_proxy::dispatch,
        ))
        // Around routes and proxy alike: a sync or delete empties the services cache
        // once the registry has answered, so its client reads its own change.
        .layer(axum::middleware::from_fn_with_state(
            state.services.clone(),
            crate::services_cache::invalidate_on_write,
        ))
        // The request's span and per-route counts and latency (gRPC calls included).
        .layer(axum::middleware::from_fn(crate::metrics::observe))
        // Request ids (tower-http): a client's sane `x-request-id` is kept, any other
        // request gets a new one; the response echoes it, and `observe` hands it on.
        .layer(common::request_id::layers::<axum::body::Body>())
        // Extractors' own limit, the same as `body_limit`'s.
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        // CORS around everything, so preflights are answered for routes and RPCs alike.
        .layer(crate::grpc_proxy::cors(config))
        // Outermost: one span per request, covering every layer and handler.
        .layer(TraceLayer::new_for_http())
}

pub(crate) async fn healthz() -> &'static str {
    "ok"
}

pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    let mut down = state.backends.not_ready().await;
    if !state.verifier.revocations_fresh() {
        down.push("revocation feed");
    }
    if down.is_empty() {
        Json(json!({ "status": "ready" })).into_response()
    } else {
        ApiError::Detail(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}", down.join(", ")),
        )
        .into_response()
    }
}

pub(crate) async fn jwks(State(state): State<AppState>) -> Result<Response, ApiError> {
    let jwks = state
        .backends
        .auth()
        .get_jwks(proto::auth::v1::GetJwksRequest {})
        .await
        .map_err(|s| ApiError::from_backend("auth", &s))?
        .into_inner();
    Ok(Json(jwks).into_response())
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}

/// fastDeploy's trailing-slash redirects (contract 1.3): a path that misses only by
/// its trailing slash is answered 307 to the served one (`routes::redirects_to`).
async fn not_found_or_redirect(method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path();
    let toggled = match path.strip_suffix('/') {
        Some(stripped) if !stripped.is_empty() => stripped.to_owned(),
        Some(_) => return ApiError::not_found().into_response(),
        None => format!("{path}/"),
    };
    if method != Method::OPTIONS && crate::routes::redirects_to(&toggled) {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
        let location = format!("http://{host}{toggled}{query}");
        return (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, location)]).into_response();
    }
    ApiError::not_found().into_response()
}

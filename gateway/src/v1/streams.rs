//! The server streams over HTTP/JSON: `WatchEvents`, `WatchDeploymentLog`,
//! `WatchServices` and `WatchRevocations` as `application/x-ndjson` responses, one proto3 JSON message
//! per line, each line sent as soon as its message arrives.
//!
//! - The token is checked as on the RPC's gRPC entry before the upstream is opened;
//!   a backend that is down (or does not answer within `--backend-timeout-ms`) is 503
//!   `{"detail": …}` before anything is streamed. Once the headers are sent, no unary
//!   deadline applies: the stream lasts as long as the upstream and the client do.
//! - The body owns the upstream gRPC stream: a client that goes away drops the body,
//!   and with it the upstream (the backend sees the call cancelled).
//! - The body ends when the upstream ends. It ends after one last line
//!   `{"error": {"status": <HTTP status>, "detail": "…"}}` when the upstream fails,
//!   the caller's token expires or is revoked (checked again before every message),
//!   or the gateway shuts down. No message has an `error` field, so that line cannot
//!   be mistaken for one.

use std::{convert::Infallible, sync::Arc, time::Duration};

use axum::{
    body::{Body, Bytes},
    extract::{Path, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use common::token::{RemoteVerifier, TokenError};
use proto::{
    auth::v1::WatchRevocationsRequest,
    deploy::v1::{WatchDeploymentLogRequest, WatchEventsRequest},
    registry::v1::WatchServicesRequest,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Params;
use crate::{
    error::ApiError,
    fastdeploy::auth::with_token,
    interceptor::Caller,
    metrics::{self, OpenStream},
    server::AppState,
};

pub const NDJSON: &str = "application/x-ndjson";

/// `WatchEventsRequest` as query parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    #[serde(default)]
    service: String,
    #[serde(default)]
    deployment_id: i64,
    #[serde(default)]
    after_sequence: i64,
}

/// `WatchRevocationsRequest` (and `WatchServicesRequest`) as query parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationsQuery {
    #[serde(default)]
    after_sequence: i64,
}

/// Deployment and step events the token may read (`?service=&deployment_id=&after_sequence=`,
/// as in `WatchEventsRequest`).
pub async fn watch_deployments(
    State(state): State<AppState>,
    token: Caller,
    Params(query): Params<EventsQuery>,
) -> Result<Response, ApiError> {
    let request = WatchEventsRequest {
        service: query.service,
        deployment_id: query.deployment_id,
        after_sequence: query.after_sequence,
    };
    let upstream = state
        .backends
        .deploy()
        .watch_events(with_token(request, &token.token)?)
        .await
        .map_err(|s| ApiError::from_backend("deploy", &s))?;
    Ok(Feed::new(
        &state,
        "/v1/deployments/watch",
        "deploy",
        upstream.into_inner(),
        Some(&token),
    )
    .respond())
}

/// `WatchDeploymentLogRequest` as query parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    #[serde(default)]
    after_line: i64,
}

/// A deployment's output lines after `?after_line=`, stored then live, until the run ends.
pub async fn watch_log(
    State(state): State<AppState>,
    token: Caller,
    Path(raw): Path<String>,
    Params(query): Params<LogQuery>,
) -> Result<Response, ApiError> {
    follow_log(&state, &token, super::deployments::id(&raw)?, query.after_line).await
}

/// The NDJSON follow of a deployment's log (also `GET /v1/deployments/{id}/log?follow=true`).
pub async fn follow_log(state: &AppState, token: &Caller, id: i64, after_line: i64) -> Result<Response, ApiError> {
    let request = WatchDeploymentLogRequest {
        deployment_id: id,
        after_line,
    };
    let upstream = state
        .backends
        .deploy()
        .watch_deployment_log(with_token(request, &token.token)?)
        .await
        .map_err(|s| ApiError::from_backend("deploy", &s))?;
    Ok(Feed::new(
        state,
        "/v1/deployments/{id}/log/watch",
        "deploy",
        upstream.into_inner(),
        Some(token),
    )
    .respond())
}

/// Every service change from now on (sync, delete); `?after_sequence=` resumes, as in
/// `WatchServicesRequest`.
pub async fn watch_services(
    State(state): State<AppState>,
    token: Caller,
    Params(query): Params<RevocationsQuery>,
) -> Result<Response, ApiError> {
    let request = WatchServicesRequest {
        after_sequence: query.after_sequence,
    };
    let upstream = state
        .backends
        .registry()
        .watch_services(with_token(request, &token.token)?)
        .await
        .map_err(|s| ApiError::from_backend("registry", &s))?;
    Ok(Feed::new(
        &state,
        "/v1/services/watch",
        "registry",
        upstream.into_inner(),
        Some(&token),
    )
    .respond())
}

/// The revocation feed verifiers follow (a user token holding `tokens:read`, like its
/// RPC): a snapshot of revoked token ids, then each new batch, with heartbeats
/// (`?after_sequence=` resumes). Past the auth service's caps on open feeds: 429.
pub async fn watch_revocations(
    State(state): State<AppState>,
    token: Caller,
    Params(query): Params<RevocationsQuery>,
) -> Result<Response, ApiError> {
    let request = WatchRevocationsRequest {
        after_sequence: query.after_sequence,
    };
    let upstream = state
        .backends
        .auth()
        .watch_revocations(with_token(request, &token.token)?)
        .await
        .map_err(|s| ApiError::from_backend("auth", &s))?;
    Ok(Feed::new(
        &state,
        "/v1/revocations/watch",
        "auth",
        upstream.into_inner(),
        Some(&token),
    )
    .respond())
}

/// The caller's token, checked again before every message and good until it expires.
struct Holder {
    verifier: Arc<RemoteVerifier>,
    token: String,
    expires_at: Instant,
}

/// One streamed response: the upstream gRPC stream and what ends it early. Dropping
/// it (the client went away) drops the upstream.
struct Feed<M> {
    upstream: tonic::Streaming<M>,
    backend: &'static str,
    caller: Option<Holder>,
    shutdown: CancellationToken,
    ended: bool,
    _open: OpenStream,
}

impl<M> Feed<M>
where
    M: Serialize + prost::Message + Default + Send + 'static,
{
    fn new(
        state: &AppState,
        route: &'static str,
        backend: &'static str,
        upstream: tonic::Streaming<M>,
        token: Option<&Caller>,
    ) -> Self {
        let caller = token.map(|t| {
            let left = t.claims.exp.saturating_sub(chrono::Utc::now().timestamp());
            Holder {
                verifier: state.verifier.clone(),
                token: t.token.clone(),
                expires_at: Instant::now() + Duration::from_secs(u64::try_from(left).unwrap_or(0)),
            }
        });
        Feed {
            upstream,
            backend,
            caller,
            shutdown: state.hub.shutdown().clone(),
            ended: false,
            _open: metrics::open_stream(route),
        }
    }

    /// The NDJSON response; its log lines stay in the request's span.
    fn respond(self) -> Response {
        let span = tracing::Span::current();
        let lines = futures::stream::unfold(self, move |mut feed| {
            async move {
                let line = feed.next_line().await?;
                Some((Ok::<Bytes, Infallible>(line), feed))
            }
            .instrument(span.clone())
        });
        let mut response = Body::from_stream(lines).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(NDJSON));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        // Proxies such as nginx would otherwise hold lines back.
        headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
        response
    }

    /// The next line of the body, or `None` once it has ended.
    async fn next_line(&mut self) -> Option<Bytes> {
        if self.ended {
            return None;
        }
        let expires_at = self.caller.as_ref().map(|c| c.expires_at);
        let next = tokio::select! {
            () = self.shutdown.cancelled() => Err(unavailable("the gateway is shutting down")),
            () = at(expires_at) => Err(ApiError::Detail(StatusCode::UNAUTHORIZED, "token expired".into())),
            message = self.upstream.message() => match message {
                Ok(Some(message)) => Ok(message),
                Ok(None) => return None,
                Err(status) if connection_lost(&status) => {
                    tracing::warn!(backend = self.backend, error = %status.message(), "upstream stream lost");
                    Err(unavailable(&format!("{} service unavailable", self.backend)))
                }
                Err(status) => {
                    tracing::info!(backend = self.backend, code = ?status.code(), "upstream stream failed");
                    Err(ApiError::from_backend(self.backend, &status))
                }
            },
        };
        let line = match next {
            Ok(message) => match self.still_allowed().await {
                Ok(()) => serde_json::to_vec(&message).map_err(|error| {
                    tracing::error!(%error, "message not serialisable as JSON");
                    ApiError::Detail(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error".into())
                }),
                Err(refusal) => Err(refusal),
            },
            Err(error) => Err(error),
        };
        let mut line = line.unwrap_or_else(|error| {
            self.ended = true;
            error_line(error)
        });
        line.push(b'\n');
        Some(Bytes::from(line))
    }

    /// Whether the caller's token is still good (not revoked, not expired).
    async fn still_allowed(&self) -> Result<(), ApiError> {
        let Some(caller) = &self.caller else { return Ok(()) };
        match caller.verifier.verify(&caller.token).await {
            Ok(_) => Ok(()),
            Err(TokenError::RevocationsUnavailable) => Err(unavailable("auth service unavailable")),
            Err(reason) => {
                tracing::info!(%reason, "stream ended: token no longer valid");
                Err(ApiError::invalid_credentials())
            }
        }
    }
}

/// Whether a status comes from the connection to the backend failing (tonic makes
/// one, with the transport error as its source) rather than from the backend's own
/// answer (which has none).
fn connection_lost(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unknown && std::error::Error::source(status).is_some()
}

fn unavailable(detail: &str) -> ApiError {
    ApiError::Detail(StatusCode::SERVICE_UNAVAILABLE, detail.to_owned())
}

/// `{"error": {"status": …, "detail": …}}`: the HTTP status and detail a unary call
/// failing the same way would have answered.
fn error_line(error: ApiError) -> Vec<u8> {
    let (status, detail) = match error {
        ApiError::Detail(status, detail) => (status, json!(detail)),
        ApiError::Validation(errors) => (StatusCode::UNPROCESSABLE_ENTITY, json!(errors)),
    };
    json!({ "error": { "status": status.as_u16(), "detail": detail } })
        .to_string()
        .into_bytes()
}

async fn at(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_lines_are_one_json_object_with_status_and_detail() {
        let line = error_line(ApiError::Detail(StatusCode::CONFLICT, "fell \"behind\"\n".into()));
        assert!(!line.contains(&b'\n'), "one line");
        let value: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(value, json!({"error": {"status": 409, "detail": "fell \"behind\"\n"}}));
    }
}

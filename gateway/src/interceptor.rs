//! The HTTP interceptor: every request the router sends to a handler is first checked
//! against its entry in the route table (`routes::ROUTES`), whose `/v1` entries take
//! their rules from the RPC table the gRPC and grpc-web proxy enforces. A refused request never reaches a handler, so it
//! never reaches a backend. Handlers take the verified caller as [`Caller`] and name no
//! token type or permission themselves.
//!
//! Refusals keep each API's rules (`ApiError::refused`): fastDeploy routes answer 401
//! for any bad, wrong-type or under-permitted token (its contract, 3.3); `/v1` routes
//! answer 401 for a missing or invalid token and 403 for a valid one the entry does not
//! admit. A request whose path has no entry at all is 500 (fail closed; the router is
//! built from the table, so none should).
//!
//! The token is verified before any of the body is read: a request without a valid
//! token is refused with its body unread, whatever its size (`body_limit` bounds the
//! rest).

use axum::{
    body::Body,
    extract::{FromRequestParts, MatchedPath, Request, State},
    http::{StatusCode, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
};
use common::token::Claims;
use serde_json::Value;

use crate::{
    error::ApiError,
    fastdeploy::{auth::verified, objects::parse_json},
    routes::{Credential, Lookup, entry},
    server::AppState,
};

/// The verified caller of a route that needs a token: the token as sent (a fastDeploy
/// token already exchanged) and its claims.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token: String,
    pub claims: Claims,
}

/// The request body of a route marked `json_before_scope`, decoded (`None` when blank).
#[derive(Debug, Clone)]
pub struct JsonBody(pub Option<Value>);

impl<S: Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts.extensions.remove::<Caller>().ok_or_else(unguarded)
    }
}

impl<S: Sync> FromRequestParts<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts.extensions.remove::<JsonBody>().ok_or_else(unguarded)
    }
}

/// A handler asked for what the interceptor did not provide: a route whose entry does
/// not say it takes a token (or its JSON body). Never the caller's fault, so 500, and
/// loud in the log.
fn unguarded() -> ApiError {
    tracing::error!("handler reached without the interceptor's check: its route-table entry does not provide it");
    ApiError::Detail(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error".into())
}

/// The middleware: checks the request against its route's entry, then runs the handler.
pub async fn enforce(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match admit(&state, request).await {
        Ok(request) => next.run(request).await,
        Err(error) => error.into_response(),
    }
}

async fn admit(state: &AppState, request: Request) -> Result<Request, ApiError> {
    let Some(template) = request.extensions().get::<MatchedPath>().cloned() else {
        return Ok(request);
    };
    let route = match entry(request.method(), template.as_str()) {
        Lookup::Found(route) => route,
        Lookup::OtherMethod => return Ok(request),
        Lookup::Unknown => {
            tracing::error!(
                path = template.as_str(),
                "route served without an entry in the route table"
            );
            return Err(ApiError::Detail(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal Server Error".into(),
            ));
        }
    };
    let (mut parts, body) = request.into_parts();
    // The token first: without a valid one, the body is never read.
    let caller = if route.credential == Credential::Header && route.access.needs_token() {
        Some(
            verified(&parts, state)
                .await
                .map_err(|refusal| ApiError::refused(Some(route), &refusal))?,
        )
    } else {
        None
    };
    let body = if route.json_before_scope {
        let bytes = crate::body_limit::read_all(body).await?;
        parts.extensions.insert(JsonBody(parse_json(&bytes)?));
        Body::empty()
    } else {
        body
    };
    if let Some((token, claims)) = caller {
        if let Err(refusal) = route.access.check(&claims) {
            crate::metrics::count_refusal(refusal.reason());
            tracing::info!(jti = %claims.jti, %refusal, path = route.path, "token refused: scope");
            return Err(ApiError::refused(Some(route), &refusal));
        }
        parts.extensions.insert(Caller { token, claims });
    }
    Ok(Request::from_parts(parts, body))
}

//! The HTTP interceptor: every request the router sends to a handler is first checked
//! against its entry in `common::scope_table::ROUTES`, the same table the gRPC and
//! grpc-web proxy enforces for RPCs. A refused request never reaches a handler, so it
//! never reaches a backend. Handlers take the verified caller as [`Caller`] and name no
//! token type or permission themselves.
//!
//! Refusals keep each API's rules: fastDeploy routes answer 401 for any bad, wrong-type
//! or under-permitted token (its contract, 3.3); `/v1` routes answer 401 for a missing
//! or invalid token and 403 for a valid one the entry does not admit. A request whose
//! path has no entry at all is 500 (fail closed; tests keep the table complete).
//!
//! The token is verified before any of the body is read: a request without a valid
//! token is refused with its body unread, whatever its size (`body_limit` bounds the
//! rest).

use axum::{
    body::Body,
    extract::{FromRequestParts, MatchedPath, Request, State},
    http::{Method, StatusCode, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
};
use common::{
    scope_table::{Credential, Refusal, Route, routes_at},
    token::Claims,
};
use serde_json::Value;

use crate::{
    error::ApiError,
    fastdeploy::{auth::verified, objects::parse_json},
    server::AppState,
};

/// fastDeploy routes that take a JSON body. FastAPI decodes it before authenticating
/// (contract 1.2); Slipway verifies the token first (an unauthenticated body is never
/// read), then, as FastAPI, a body that is not JSON is 422 before the token's type and
/// permissions are checked.
const JSON_BEFORE_SCOPE: &[(&str, &str)] = &[
    ("POST", "/service-token"),
    ("POST", "/deployments/"),
    ("POST", "/steps/"),
];

/// The verified caller of a route that needs a token: the token as sent (a fastDeploy
/// token already exchanged) and its claims.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token: String,
    pub claims: Claims,
}

/// The request body of a [`JSON_BEFORE_SCOPE`] route, decoded (`None` when blank).
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

/// A handler asked for what the interceptor did not provide: a route wired without its
/// entry. Never the caller's fault, so 500, and loud in the log.
fn unguarded() -> ApiError {
    tracing::error!("handler reached without the interceptor's check: the route lacks a scope-table entry");
    ApiError::Detail(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error".into())
}

/// The entry for a request at `template` (the router's matched path). `Ok(None)` when
/// the path has entries but none for this method: the route's own fallback answers 405.
fn entry(method: &Method, template: &str) -> Result<Option<&'static Route>, ApiError> {
    let method = if method == Method::HEAD { "GET" } else { method.as_str() };
    let mut found = false;
    for route in routes_at(template) {
        if route.method == method {
            return Ok(Some(route));
        }
        found = true;
    }
    if found {
        return Ok(None);
    }
    tracing::error!(path = template, "route served without a scope-table entry");
    Err(ApiError::Detail(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Internal Server Error".into(),
    ))
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
    let Some(route) = entry(request.method(), template.as_str())? else {
        return Ok(request);
    };
    let (mut parts, body) = request.into_parts();
    // The token first: without a valid one, the body is never read.
    let caller = if route.credential == Credential::Header && route.access.needs_token() {
        Some(verified(&parts, state).await?)
    } else {
        None
    };
    let body = if JSON_BEFORE_SCOPE.contains(&(route.method, route.path)) {
        let bytes = crate::body_limit::read_all(body).await?;
        parts.extensions.insert(JsonBody(parse_json(&bytes)?));
        Body::empty()
    } else {
        body
    };
    if let Some((token, claims)) = caller {
        if let Err(refusal) = route.access.check(&claims) {
            return Err(refuse(route, &claims, &refusal));
        }
        parts.extensions.insert(Caller { token, claims });
    }
    Ok(Request::from_parts(parts, body))
}

/// The answer to a valid token the entry does not admit.
fn refuse(route: &Route, claims: &Claims, refusal: &Refusal) -> ApiError {
    crate::metrics::count_refusal(refusal.reason());
    tracing::info!(jti = %claims.jti, %refusal, path = route.path, "token refused: scope");
    if route.path.starts_with("/v1/") {
        ApiError::Detail(StatusCode::FORBIDDEN, refusal.to_string())
    } else {
        ApiError::invalid_credentials()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_by_template_and_method() {
        let get = entry(&Method::GET, "/services/").unwrap().unwrap();
        assert_eq!((get.method, get.path), ("GET", "/services/"));
        assert_eq!(entry(&Method::HEAD, "/services/").unwrap().unwrap().method, "GET");
        // A known path, another method: the route's fallback answers 405.
        assert!(entry(&Method::PATCH, "/services/").unwrap().is_none());
        // An unknown template fails closed.
        assert!(entry(&Method::GET, "/nowhere/{x}").is_err());
    }

    #[test]
    fn json_before_scope_routes_exist() {
        for (method, path) in JSON_BEFORE_SCOPE {
            assert!(
                routes_at(path).any(|r| r.method == *method),
                "{method} {path} is not in the scope table"
            );
        }
    }
}

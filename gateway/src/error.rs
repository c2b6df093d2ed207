//! HTTP errors in fastDeploy's shape: `{"detail": …}` bodies, `WWW-Authenticate:
//! Bearer` on 401, and pydantic-style 422 bodies for validation errors.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use common::{error::ErrorCode, scope_table::Refusal};
use serde_json::{Value, json};

#[derive(Debug)]
pub enum ApiError {
    /// A status with `{"detail": "<message>"}`.
    Detail(StatusCode, String),
    /// 422 with a list of validation errors.
    Validation(Vec<Value>),
}

impl ApiError {
    pub fn not_authenticated() -> Self {
        ApiError::Detail(StatusCode::UNAUTHORIZED, "Not authenticated".into())
    }

    pub fn invalid_credentials() -> Self {
        ApiError::Detail(StatusCode::UNAUTHORIZED, "Could not validate credentials".into())
    }

    pub fn not_found() -> Self {
        ApiError::Detail(StatusCode::NOT_FOUND, "Not Found".into())
    }

    pub fn method_not_allowed() -> Self {
        ApiError::Detail(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed".into())
    }

    /// The one place a refusal (`common::scope_table::Refusal`, the type the backends
    /// map to gRPC) becomes HTTP. No usable token is 401 on every route (`Not
    /// authenticated` without one, `Could not validate credentials` for a bad one); a
    /// stale revocation feed 503; a valid token the entry does not admit 401 on
    /// fastDeploy's routes (its contract, 3.3) and 403 with the reason on `/v1`.
    pub fn refused(route: Option<&crate::routes::Route>, refusal: &Refusal) -> Self {
        let v1 = route.is_some_and(|r| r.path.starts_with("/v1/"));
        match refusal {
            Refusal::MissingToken => ApiError::not_authenticated(),
            Refusal::Invalid | Refusal::Expired | Refusal::Revoked => ApiError::invalid_credentials(),
            Refusal::RevocationsUnavailable => {
                ApiError::Detail(StatusCode::SERVICE_UNAVAILABLE, "auth service unavailable".into())
            }
            Refusal::Internal | Refusal::WrongType { .. } | Refusal::Missing(_) if v1 => {
                ApiError::Detail(StatusCode::FORBIDDEN, refusal.to_string())
            }
            Refusal::Internal | Refusal::WrongType { .. } | Refusal::Missing(_) => ApiError::invalid_credentials(),
        }
    }

    /// The answer for a status a backend returned. Messages of client errors are passed
    /// on (backends keep them safe); server-side failures get a fixed text.
    pub fn from_backend(backend: &str, status: &tonic::Status) -> Self {
        let code = if broke_off(status) {
            ErrorCode::Unavailable
        } else {
            ErrorCode::from_grpc(status.code())
        };
        let detail = match code {
            // A full or read-only disk says so; other reasons (a backend that is down)
            // do not pass on the transport's words.
            ErrorCode::Unavailable if common::error::is_storage_refusal(status.message()) => {
                format!("{backend} service unavailable: {}", status.message())
            }
            ErrorCode::Unavailable => format!("{backend} service unavailable"),
            ErrorCode::Internal => {
                tracing::error!(backend, code = ?status.code(), message = status.message(), "backend failed");
                "Internal Server Error".to_owned()
            }
            _ => status.message().to_owned(),
        };
        ApiError::Detail(code.http(), detail)
    }
}

/// Whether a call broke off in the transport (the backend's connection died during
/// the call, as when the backend is killed): tonic reports that as UNKNOWN
/// "transport error", but for the caller the backend is unavailable.
fn broke_off(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if error.is::<tonic::transport::Error>() {
            return status.code() == tonic::Code::Unknown;
        }
        source = error.source();
    }
    false
}

/// An error answered with a `Retry-After` header (whole seconds) when it has a retry
/// hint: a refused login (too many failures: 429; too many logins at once: 503).
#[derive(Debug)]
pub struct Retryable {
    pub error: ApiError,
    pub retry_after: Option<u64>,
}

impl From<ApiError> for Retryable {
    fn from(error: ApiError) -> Self {
        Retryable {
            error,
            retry_after: None,
        }
    }
}

impl IntoResponse for Retryable {
    fn into_response(self) -> Response {
        let mut response = self.error.into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// One pydantic v2 style validation error entry.
pub fn validation_error(kind: &str, loc: &[&str], msg: &str, input: Value) -> Value {
    json!({ "type": kind, "loc": loc, "msg": msg, "input": input })
}

/// FastAPI's entry for a required field that is absent.
pub fn missing(loc: &[&str], input: Value) -> Value {
    validation_error("missing", loc, "Field required", input)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Detail(status, detail) => {
                let mut response = (status, Json(json!({ "detail": detail }))).into_response();
                if status == StatusCode::UNAUTHORIZED {
                    response
                        .headers_mut()
                        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                }
                response
            }
            ApiError::Validation(errors) => {
                (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({ "detail": errors }))).into_response()
            }
        }
    }
}

//! Slipway's own services API under `/v1`, in proto3 JSON: list, sync (with the
//! problem of every folder that did not sync), delete, and deployed services. A valid
//! token without the permission a route needs gets 403.

use axum::{
    Json, Router,
    extract::{FromRequestParts, Path, Query, State},
    http::{StatusCode, request::Parts},
    routing::{delete, get, post},
};
use common::{scope, token::Claims};
use proto::registry::v1 as pb;
use serde::Deserialize;

use crate::{
    error::ApiError,
    fastdeploy::auth::{verified, with_token},
    server::{AppState, method_not_allowed},
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/services", get(list).fallback(method_not_allowed))
        .route("/v1/services/sync", post(sync).fallback(method_not_allowed))
        .route("/v1/services/{id}", delete(remove).fallback(method_not_allowed))
        .route("/v1/deployed-services", get(deployed).fallback(method_not_allowed))
}

/// A verified token of any type.
pub struct Token {
    token: String,
    claims: Claims,
}

impl FromRequestParts<AppState> for Token {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let (token, claims) = verified(parts, state).await?;
        Ok(Token { token, claims })
    }
}

impl Token {
    /// The token, when it may do `permission`; 403 otherwise.
    fn allowed(&self, permission: &str) -> Result<&str, ApiError> {
        if scope::allows(&self.claims, permission) {
            Ok(&self.token)
        } else {
            Err(ApiError::Detail(
                StatusCode::FORBIDDEN,
                format!("this token may not {permission}"),
            ))
        }
    }
}

fn registry_error(status: tonic::Status) -> ApiError {
    ApiError::from_backend("registry", &status)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Page {
    #[serde(default)]
    page_size: u32,
    #[serde(default)]
    page_token: String,
}

async fn list(
    State(state): State<AppState>,
    token: Token,
    query: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<pb::ListServicesResponse>, ApiError> {
    let bearer = token.allowed(scope::SERVICES_READ)?;
    let Query(page) = query.map_err(|e| ApiError::Detail(StatusCode::BAD_REQUEST, e.body_text()))?;
    let request = pb::ListServicesRequest {
        page_size: page.page_size,
        page_token: page.page_token,
    };
    let response = state
        .backends
        .registry()
        .list_services(with_token(request, bearer)?)
        .await
        .map_err(registry_error)?;
    Ok(Json(response.into_inner()))
}

async fn sync(State(state): State<AppState>, token: Token) -> Result<Json<pb::SyncServicesResponse>, ApiError> {
    let bearer = token.allowed(scope::SERVICES_SYNC)?;
    let response = state
        .backends
        .registry()
        .sync_services(with_token(pb::SyncServicesRequest {}, bearer)?)
        .await
        .map_err(registry_error)?;
    Ok(Json(response.into_inner()))
}

async fn remove(
    State(state): State<AppState>,
    token: Token,
    Path(id): Path<String>,
) -> Result<Json<pb::DeleteServiceResponse>, ApiError> {
    let bearer = token.allowed(scope::SERVICES_DELETE)?;
    let id = id
        .parse::<i64>()
        .map_err(|_| ApiError::Detail(StatusCode::BAD_REQUEST, "the service id must be an integer".into()))?;
    let response = state
        .backends
        .registry()
        .delete_service(with_token(pb::DeleteServiceRequest { id }, bearer)?)
        .await
        .map_err(registry_error)?;
    Ok(Json(response.into_inner()))
}

async fn deployed(
    State(state): State<AppState>,
    token: Token,
) -> Result<Json<pb::ListDeployedServicesResponse>, ApiError> {
    let bearer = token.allowed(scope::DEPLOYED_SERVICES_READ)?;
    let response = state
        .backends
        .registry()
        .list_deployed_services(with_token(pb::ListDeployedServicesRequest {}, bearer)?)
        .await
        .map_err(registry_error)?;
    Ok(Json(response.into_inner()))
}

//! Slipway's own services API under `/v1`, in proto3 JSON: list, get (by id or by
//! name), folder names, sync (with the problem of every folder that did not sync),
//! delete, and deployed services. A valid token without the permission a route needs
//! gets 403. Watching services is in `v1_streams`.

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::StatusCode,
    routing::{get, post},
};
use proto::registry::v1::{self as pb, get_service_request::Key};
use serde::Deserialize;

use crate::{
    error::ApiError,
    fastdeploy::auth::with_token,
    interceptor::Caller,
    server::{AppState, method_not_allowed},
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/services", get(list).fallback(method_not_allowed))
        .route("/v1/services/sync", post(sync).fallback(method_not_allowed))
        .route(
            "/v1/services/{id}",
            get(get_by_id).delete(remove).fallback(method_not_allowed),
        )
        .route(
            "/v1/services/by-name/{name}",
            get(get_by_name).fallback(method_not_allowed),
        )
        .route("/v1/service-names", get(names).fallback(method_not_allowed))
        .route("/v1/deployed-services", get(deployed).fallback(method_not_allowed))
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
    token: Caller,
    query: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<pb::ListServicesResponse>, ApiError> {
    let Query(page) = query.map_err(|e| ApiError::Detail(StatusCode::BAD_REQUEST, e.body_text()))?;
    let request = pb::ListServicesRequest {
        page_size: page.page_size,
        page_token: page.page_token,
    };
    let response = state
        .backends
        .registry()
        .list_services(with_token(request, &token.token)?)
        .await
        .map_err(registry_error)?;
    Ok(Json(response.into_inner()))
}

fn service_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::Detail(StatusCode::BAD_REQUEST, "the service id must be an integer".into()))
}

/// GetService for a caller that may read services.
async fn get_service(state: &AppState, bearer: &str, key: Key) -> Result<Json<pb::Service>, ApiError> {
    let request = pb::GetServiceRequest { key: Some(key) };
    let response = state
        .backends
        .registry()
        .get_service(with_token(request, bearer)?)
        .await
        .map_err(registry_error)?;
    Ok(Json(response.into_inner()))
}

/// One synced service by its id; 404 when there is none.
async fn get_by_id(
    State(state): State<AppState>,
    token: Caller,
    Path(id): Path<String>,
) -> Result<Json<pb::Service>, ApiError> {
    get_service(&state, &token.token, Key::Id(service_id(&id)?)).await
}

/// One synced service by its name (its folder's name); 404 when there is none.
async fn get_by_name(
    State(state): State<AppState>,
    token: Caller,
    Path(name): Path<String>,
) -> Result<Json<pb::Service>, ApiError> {
    get_service(&state, &token.token, Key::Name(name)).await
}

/// Folder names in the services directory, synced or not.
async fn names(State(state): State<AppState>, token: Caller) -> Result<Json<pb::ListServiceNamesResponse>, ApiError> {
    let response = state
        .backends
        .registry()
        .list_service_names(with_token(pb::ListServiceNamesRequest {}, &token.token)?)
        .await
        .map_err(registry_error)?;
    Ok(Json(response.into_inner()))
}

async fn sync(State(state): State<AppState>, token: Caller) -> Result<Json<pb::SyncServicesResponse>, ApiError> {
    let response = state
        .backends
        .registry()
        .sync_services(with_token(pb::SyncServicesRequest {}, &token.token)?)
        .await
        .map_err(registry_error)?;
    Ok(Json(response.into_inner()))
}

async fn remove(
    State(state): State<AppState>,
    token: Caller,
    Path(id): Path<String>,
) -> Result<Json<pb::DeleteServiceResponse>, ApiError> {
    let id = service_id(&id)?;
    let response = state
        .backends
        .registry()
        .delete_service(with_token(pb::DeleteServiceRequest { id }, &token.token)?)
        .await
        .map_err(registry_error)?;
    Ok(Json(response.into_inner()))
}

async fn deployed(
    State(state): State<AppState>,
    token: Caller,
) -> Result<Json<pb::ListDeployedServicesResponse>, ApiError> {
    let response = state
        .backends
        .registry()
        .list_deployed_services(with_token(pb::ListDeployedServicesRequest {}, &token.token)?)
        .await
        .map_err(registry_error)?;
    Ok(Json(response.into_inner()))
}

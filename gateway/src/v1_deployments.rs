//! Slipway's deployment API under `/v1`, in proto3 JSON (the proto crate's pbjson
//! mapping, nothing written by hand per message). Any token type may call a route its
//! permissions allow; a valid token without the permission is 403, and the deploy
//! service decides which deployments a token may touch (its service, its deployment).

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, Query, State, rejection::QueryRejection},
    http::StatusCode,
    routing::{get, post},
};
use proto::deploy::v1::{
    CancelDeploymentRequest, Deployment, FinishDeploymentRequest, GetDeploymentRequest, ListDeploymentsRequest,
    ListDeploymentsResponse, ListStepsRequest, ListStepsResponse, ReportStepRequest, StartDeploymentRequest, Step,
};
use serde::{Deserialize, de::DeserializeOwned};

use crate::{
    error::ApiError,
    fastdeploy::auth::with_token,
    interceptor::Caller,
    server::{AppState, method_not_allowed},
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/deployments",
            get(list_deployments)
                .post(start_deployment)
                .fallback(method_not_allowed),
        )
        .route("/v1/deployments/{id}", get(get_deployment).fallback(method_not_allowed))
        .route(
            "/v1/deployments/{id}/steps",
            get(list_steps).fallback(method_not_allowed),
        )
        .route(
            "/v1/deployments/{id}/finish",
            post(finish_deployment).fallback(method_not_allowed),
        )
        .route(
            "/v1/deployments/{id}/cancel",
            post(cancel_deployment).fallback(method_not_allowed),
        )
        .route("/v1/steps", post(report_step).fallback(method_not_allowed))
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::Detail(StatusCode::BAD_REQUEST, message.into())
}

fn deploy_error(status: tonic::Status) -> ApiError {
    ApiError::from_backend("deploy", &status)
}

/// A proto3 JSON body; an empty body is the message's defaults.
fn body<T: DeserializeOwned + Default>(bytes: &Bytes) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes).map_err(|e| bad_request(format!("invalid JSON body: {e}")))
}

fn id(raw: &str) -> Result<i64, ApiError> {
    raw.parse()
        .map_err(|_| bad_request(format!("deployment id {raw:?} is not an integer")))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    service: Option<String>,
    page_size: Option<u32>,
    page_token: Option<String>,
    include_removed_services: Option<bool>,
}

async fn list_deployments(
    State(state): State<AppState>,
    token: Caller,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<ListDeploymentsResponse>, ApiError> {
    let Query(query) = query.map_err(|e| bad_request(e.body_text()))?;
    let request = ListDeploymentsRequest {
        service: query.service.unwrap_or_default(),
        page_size: query.page_size.unwrap_or_default(),
        page_token: query.page_token.unwrap_or_default(),
        include_removed_services: query.include_removed_services.unwrap_or_default(),
    };
    let response = state
        .backends
        .deploy()
        .list_deployments(with_token(request, &token.token)?)
        .await
        .map_err(deploy_error)?;
    Ok(Json(response.into_inner()))
}

/// Starts a deployment: of the token's service for a service token.
async fn start_deployment(
    State(state): State<AppState>,
    token: Caller,
    bytes: Bytes,
) -> Result<Json<Deployment>, ApiError> {
    let request: StartDeploymentRequest = body(&bytes)?;
    let response = state
        .backends
        .deploy()
        .start_deployment(with_token(request, &token.token)?)
        .await
        .map_err(deploy_error)?;
    Ok(Json(response.into_inner()))
}

async fn get_deployment(
    State(state): State<AppState>,
    token: Caller,
    Path(raw): Path<String>,
) -> Result<Json<Deployment>, ApiError> {
    let request = GetDeploymentRequest { id: id(&raw)? };
    let response = state
        .backends
        .deploy()
        .get_deployment(with_token(request, &token.token)?)
        .await
        .map_err(deploy_error)?;
    Ok(Json(response.into_inner()))
}

async fn list_steps(
    State(state): State<AppState>,
    token: Caller,
    Path(raw): Path<String>,
) -> Result<Json<ListStepsResponse>, ApiError> {
    let request = ListStepsRequest {
        deployment_id: id(&raw)?,
    };
    let response = state
        .backends
        .deploy()
        .list_steps(with_token(request, &token.token)?)
        .await
        .map_err(deploy_error)?;
    Ok(Json(response.into_inner()))
}

async fn finish_deployment(
    State(state): State<AppState>,
    token: Caller,
    Path(raw): Path<String>,
) -> Result<Json<Deployment>, ApiError> {
    let id = id(&raw)?;
    // A deployment token may finish its own deployment only.
    if token.claims.deployment.is_some_and(|own| own != id) {
        return Err(ApiError::Detail(
            StatusCode::FORBIDDEN,
            "this token may not finish another deployment".into(),
        ));
    }
    let response = state
        .backends
        .deploy()
        .finish_deployment(with_token(FinishDeploymentRequest { id }, &token.token)?)
        .await
        .map_err(deploy_error)?;
    Ok(Json(response.into_inner()))
}

async fn cancel_deployment(
    State(state): State<AppState>,
    token: Caller,
    Path(raw): Path<String>,
) -> Result<Json<Deployment>, ApiError> {
    let request = CancelDeploymentRequest { id: id(&raw)? };
    let response = state
        .backends
        .deploy()
        .cancel_deployment(with_token(request, &token.token)?)
        .await
        .map_err(deploy_error)?;
    Ok(Json(response.into_inner()))
}

/// A step result of the deployment token's own deployment.
async fn report_step(State(state): State<AppState>, token: Caller, bytes: Bytes) -> Result<Json<Step>, ApiError> {
    let request: ReportStepRequest = body(&bytes)?;
    if request.name.is_empty() {
        return Err(bad_request("a step needs a name"));
    }
    let response = state
        .backends
        .deploy()
        .report_step(with_token(request, &token.token)?)
        .await
        .map_err(deploy_error)?;
    Ok(Json(response.into_inner()))
}

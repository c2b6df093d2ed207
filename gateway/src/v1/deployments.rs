//! `/v1` for the deploy service. Any token type may call a route its permissions
//! allow; the deploy service decides which deployments a token may touch (its service,
//! its deployment).

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::StatusCode,
};
use proto::deploy::v1::{
    CancelDeploymentRequest, Deployment, DeploymentStatus, FinishDeploymentRequest, GetDeploymentRequest,
    ListDeploymentsRequest, ListDeploymentsResponse, ListStepsRequest, ListStepsResponse, ReportStepRequest,
    StartDeploymentRequest, Step,
};
use serde::{Deserialize, de::DeserializeOwned};

use super::{Deploy, Params, Reply, bad_request, forward};
use crate::{error::ApiError, interceptor::Caller, server::AppState};

/// A proto3 JSON body; an empty body is the message's defaults.
fn body<T: DeserializeOwned + Default>(bytes: &Bytes) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes).map_err(|e| bad_request(format!("invalid JSON body: {e}")))
}

pub fn id(raw: &str) -> Result<i64, ApiError> {
    raw.parse()
        .map_err(|_| bad_request(format!("deployment id {raw:?} is not an integer")))
}

/// `ListDeploymentsRequest` as query parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    service: Option<String>,
    /// queued, running, succeeded, failed or cancelled.
    status: Option<String>,
    origin: Option<String>,
    user: Option<String>,
    newest_first: Option<bool>,
    page_size: Option<u32>,
    page_token: Option<String>,
    include_removed_services: Option<bool>,
}

fn parse_status(name: &str) -> Result<DeploymentStatus, ApiError> {
    match name {
        "queued" => Ok(DeploymentStatus::Queued),
        "running" => Ok(DeploymentStatus::Running),
        "succeeded" => Ok(DeploymentStatus::Succeeded),
        "failed" => Ok(DeploymentStatus::Failed),
        "cancelled" => Ok(DeploymentStatus::Cancelled),
        other => Err(bad_request(format!(
            "unknown deployment status {other:?} (queued, running, succeeded, failed or cancelled)"
        ))),
    }
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Params(query): Params<ListQuery>,
) -> Reply<ListDeploymentsResponse> {
    let status = match query.status.as_deref() {
        None | Some("") => DeploymentStatus::Unspecified,
        Some(name) => parse_status(name)?,
    };
    let request = ListDeploymentsRequest {
        service: query.service.unwrap_or_default(),
        status: status as i32,
        origin: query.origin.unwrap_or_default(),
        user: query.user.unwrap_or_default(),
        newest_first: query.newest_first.unwrap_or_default(),
        page_size: query.page_size.unwrap_or_default(),
        page_token: query.page_token.unwrap_or_default(),
        include_removed_services: query.include_removed_services.unwrap_or_default(),
    };
    forward(&state, Some(&caller), request, async |mut c: Deploy, r| {
        c.list_deployments(r).await
    })
    .await
}

/// Starts a deployment: of the token's service for a service token.
pub async fn start(State(state): State<AppState>, caller: Caller, bytes: Bytes) -> Reply<Deployment> {
    let request: StartDeploymentRequest = body(&bytes)?;
    forward(&state, Some(&caller), request, async |mut c: Deploy, r| {
        c.start_deployment(r).await
    })
    .await
}

pub async fn get(State(state): State<AppState>, caller: Caller, Path(raw): Path<String>) -> Reply<Deployment> {
    let request = GetDeploymentRequest { id: id(&raw)? };
    forward(&state, Some(&caller), request, async |mut c: Deploy, r| {
        c.get_deployment(r).await
    })
    .await
}

pub async fn list_steps(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Reply<ListStepsResponse> {
    let request = ListStepsRequest {
        deployment_id: id(&raw)?,
    };
    forward(&state, Some(&caller), request, async |mut c: Deploy, r| {
        c.list_steps(r).await
    })
    .await
}

pub async fn finish(State(state): State<AppState>, caller: Caller, Path(raw): Path<String>) -> Reply<Deployment> {
    let id = id(&raw)?;
    // A deployment token may finish its own deployment only.
    if caller.claims.deployment.is_some_and(|own| own != id) {
        return Err(ApiError::Detail(
            StatusCode::FORBIDDEN,
            "this token may not finish another deployment".into(),
        ));
    }
    let request = FinishDeploymentRequest { id };
    forward(&state, Some(&caller), request, async |mut c: Deploy, r| {
        c.finish_deployment(r).await
    })
    .await
}

pub async fn cancel(State(state): State<AppState>, caller: Caller, Path(raw): Path<String>) -> Reply<Deployment> {
    let request = CancelDeploymentRequest { id: id(&raw)? };
    forward(&state, Some(&caller), request, async |mut c: Deploy, r| {
        c.cancel_deployment(r).await
    })
    .await
}

/// A step result of the deployment token's own deployment.
pub async fn report_step(State(state): State<AppState>, caller: Caller, bytes: Bytes) -> Reply<Step> {
    let request: ReportStepRequest = body(&bytes)?;
    if request.name.is_empty() {
        return Err(bad_request("a step needs a name"));
    }
    forward(&state, Some(&caller), request, async |mut c: Deploy, r| {
        c.report_step(r).await
    })
    .await
}

//! fastDeploy's deployment and step routes (contract 2.10–2.15): list, start, read
//! and finish deployments, report and list steps. The token is checked before any
//! backend call; a body that is not JSON is 422 before the token's type is checked, as
//! in FastAPI (a token that is not valid at all is refused before the body is read).

use std::net::SocketAddr;

use axum::{
    Json,
    extract::{ConnectInfo, FromRequestParts, Path, RawQuery, Request, State, rejection::PathRejection},
    http::{HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
};
use proto::deploy::v1::{
    FinishDeploymentRequest, GetDeploymentRequest, ListDeploymentsRequest, ListStepsRequest, ReportStepRequest,
    StartDeploymentRequest,
};
use serde_json::Value;

use super::{
    auth::with_token,
    objects::{self, Detail, JsonPage},
};
use crate::{
    error::{ApiError, missing, validation_error},
    interceptor::{Caller, JsonBody},
    server::AppState,
};

/// The pages `GET /deployments/` reads from the deploy service: the first small, so
/// the answer starts at once, then the deploy service's largest.
const FIRST_PAGE: u32 = 100;
const PAGE_SIZE: u32 = 1000;

/// A backend refusal on fastDeploy's routes: an invalid token is 401 as fastDeploy
/// answers it, a refused request 400 with the backend's (safe) reason.
fn deploy_error(status: &tonic::Status) -> ApiError {
    match status.code() {
        tonic::Code::Unauthenticated => ApiError::invalid_credentials(),
        tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition | tonic::Code::OutOfRange => {
            ApiError::Detail(StatusCode::BAD_REQUEST, status.message().to_owned())
        }
        _ => ApiError::from_backend("deploy", status),
    }
}

fn deployment_not_found() -> ApiError {
    ApiError::Detail(StatusCode::NOT_FOUND, "Deployment not found".into())
}

/// An integer path or query parameter, or FastAPI's `int_parsing` error.
fn int_param(value: &str, loc: &[&str]) -> Result<i64, ApiError> {
    value.trim().parse().map_err(|_| {
        ApiError::Validation(vec![validation_error(
            "int_parsing",
            loc,
            "Input should be a valid integer, unable to parse string as an integer",
            Value::String(value.to_owned()),
        )])
    })
}

/// `GET /deployments/` (user token): every deployment, without steps, by id, streamed
/// page by page (ListDeployments pages come in id order).
pub async fn list(State(state): State<AppState>, user: Caller) -> Result<Response, ApiError> {
    let token = user.token;
    let fetch = move |page_token: String| {
        let state = state.clone();
        let token = token.clone();
        async move {
            // A small first page answers the first byte soon; then the largest pages.
            let page_size = if page_token.is_empty() { FIRST_PAGE } else { PAGE_SIZE };
            let request = ListDeploymentsRequest {
                page_token,
                page_size,
                ..Default::default()
            };
            let page = state
                .backends
                .deploy()
                .list_deployments(with_token(request, &token)?)
                .await
                .map_err(|s| deploy_error(&s))?
                .into_inner();
            JsonPage::new(
                page.deployments.iter().map(objects::Deployment::new),
                page.next_page_token,
            )
        }
    };
    objects::json_array("deployments", fetch, None).await
}

/// `POST /deployments/` (service token): starts a deployment of the token's service
/// and answers at once with a **StartedDeployment**.
pub async fn start(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    let (mut parts, _) = request.into_parts();
    let JsonBody(body) = JsonBody::from_request_parts(&mut parts, &state).await?;
    let service = Caller::from_request_parts(&mut parts, &state).await?;
    let env = objects::start_env(body)?;
    let env = serde_json::from_value(Value::Object(env))
        .map_err(|_| ApiError::Detail(StatusCode::BAD_REQUEST, "env cannot be stored".into()))?;
    // The service is the token's own.
    let request = StartDeploymentRequest {
        env: Some(env),
        ..Default::default()
    };
    let deployment = state
        .backends
        .deploy()
        .start_deployment(with_token(request, &service.token)?)
        .await
        .map_err(|s| deploy_error(&s))?
        .into_inner();
    let details = format!("{}/deployments/{}", base_url(&parts), deployment.id);
    Ok(Json(objects::Deployment {
        details: Some(details),
        ..objects::Deployment::new(&deployment)
    })
    .into_response())
}

/// `scheme://host` of the request as its client addressed it. `X-Forwarded-Proto` is
/// believed only from a proxy on this machine (as uvicorn does by default).
fn base_url(parts: &Parts) -> String {
    let from_loopback = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .is_some_and(|ConnectInfo(peer)| peer.ip().is_loopback());
    let forwarded = parts
        .headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|v| v == "http" || v == "https");
    let scheme = match forwarded {
        Some(proto) if from_loopback => proto,
        _ => "http".to_owned(),
    };
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| parts.uri.authority().map(ToString::to_string))
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{scheme}://{host}")
}

/// fastDeploy's one 403, with its `WWW-Authenticate` header.
fn wrong_service_token() -> Response {
    let mut response = ApiError::Detail(StatusCode::FORBIDDEN, "Wrong service token".into()).into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// `GET /deployments/{deployment_id}` (service token of the deployment's service):
/// **DeploymentWithSteps**. Another service's deployment and a missing one are
/// answered alike (403), so a service token cannot probe which ids exist.
pub async fn get(
    State(state): State<AppState>,
    service: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = match id {
        Ok(Path(id)) => int_param(&id, &["path", "deployment_id"])?,
        Err(_) => return Err(ApiError::not_found()),
    };
    let request = GetDeploymentRequest { id };
    match state
        .backends
        .deploy()
        .get_deployment(with_token(request, &service.token)?)
        .await
    {
        Ok(deployment) => Ok(Json(objects::Deployment::with_steps(&deployment.into_inner())).into_response()),
        Err(status) if matches!(status.code(), tonic::Code::PermissionDenied | tonic::Code::NotFound) => {
            Ok(wrong_service_token())
        }
        Err(status) => Err(deploy_error(&status)),
    }
}

/// `PUT /deployments/finish/` (deployment token): finishes the token's deployment.
pub async fn finish(State(state): State<AppState>, deployment: Caller) -> Result<Json<Detail>, ApiError> {
    let id = deployment.claims.deployment.ok_or_else(ApiError::invalid_credentials)?;
    let request = FinishDeploymentRequest { id };
    match state
        .backends
        .deploy()
        .finish_deployment(with_token(request, &deployment.token)?)
        .await
    {
        Ok(_) => Ok(Json(Detail {
            detail: format!("Deployment {id} finished"),
        })),
        Err(status) if status.code() == tonic::Code::NotFound => Err(deployment_not_found()),
        Err(status) => Err(deploy_error(&status)),
    }
}

/// `POST /steps/` (deployment token): a step result of the token's deployment.
pub async fn report_step(
    State(state): State<AppState>,
    deployment: Caller,
    JsonBody(body): JsonBody,
) -> Result<Json<Detail>, ApiError> {
    let report = objects::step_report(body)?;
    let request = ReportStepRequest {
        name: report.name,
        state: report.state,
        started: Some(report.started),
        finished: Some(report.finished),
        message: report.message,
    };
    match state
        .backends
        .deploy()
        .report_step(with_token(request, &deployment.token)?)
        .await
    {
        Ok(_) => Ok(Json(Detail {
            detail: "step processed".into(),
        })),
        Err(status) if status.code() == tonic::Code::NotFound => Err(deployment_not_found()),
        Err(status) => Err(deploy_error(&status)),
    }
}

/// `GET /steps/?deployment_id=N` (user token): the steps of one deployment.
pub async fn list_steps(
    State(state): State<AppState>,
    user: Caller,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query.as_deref().unwrap_or_default()).unwrap_or_default();
    let loc = ["query", "deployment_id"];
    // FastAPI takes the last of repeated scalar parameters.
    let deployment_id = match pairs.iter().rev().find(|(k, _)| k == "deployment_id") {
        Some((_, value)) => int_param(value, &loc)?,
        None => {
            return Err(ApiError::Validation(vec![missing(&loc, Value::Null)]));
        }
    };
    let request = ListStepsRequest { deployment_id };
    match state
        .backends
        .deploy()
        .list_steps(with_token(request, &user.token)?)
        .await
    {
        Ok(steps) => {
            // One deployment's steps come in one answer: one page.
            let steps = steps.into_inner().steps;
            let fetch = move |_: String| {
                let page = JsonPage::new(steps.iter().map(objects::Step::new), String::new());
                std::future::ready(page)
            };
            objects::json_array("steps", fetch, None).await
        }
        Err(status) if status.code() == tonic::Code::NotFound => Err(deployment_not_found()),
        Err(status) => Err(deploy_error(&status)),
    }
}

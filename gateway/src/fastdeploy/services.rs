//! fastDeploy's services and deployed-services routes (contract 2.6-2.9, 2.16): user
//! tokens for services, config tokens for deployed services. Every refusal is 401, as
//! fastDeploy answers; the token is checked before the registry is called.

use axum::{
    Json,
    extract::{Path, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use proto::{registry::v1 as pb, wkt};
use serde_json::{Value, json};

use super::auth::with_token;
use crate::{
    error::{ApiError, validation_error},
    interceptor::Caller,
    server::AppState,
};

fn registry_error(status: tonic::Status) -> ApiError {
    match status.code() {
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => ApiError::invalid_credentials(),
        _ => ApiError::from_backend("registry", &status),
    }
}

/// A `Struct` as JSON, whole numbers as integers (protobuf numbers are doubles), so
/// `config.json` comes back as it was written.
pub(crate) fn struct_json(value: Option<&wkt::Struct>) -> Value {
    value.map_or_else(|| json!({}), proto::json::from_struct)
}

/// `GET /services/`: every synced service as `{id, name, data}`. The interceptor has
/// checked the token; the list then comes from the services cache when it may answer.
pub async fn list(State(state): State<AppState>, user: Caller) -> Result<Response, ApiError> {
    let body = state
        .services
        .get_or_fetch(&user.token, &user.claims, fetch_list(&state, &user.token))
        .await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// Every service from the registry (page after page), as the JSON `list` answers.
async fn fetch_list(state: &AppState, token: &str) -> Result<Bytes, ApiError> {
    let mut services = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = pb::ListServicesRequest {
            page_size: 0,
            page_token,
        };
        let page = state
            .backends
            .registry()
            .list_services(with_token(request, token)?)
            .await
            .map_err(registry_error)?
            .into_inner();
        services.extend(
            page.services
                .iter()
                .map(|s| json!({ "id": s.id, "name": s.name, "data": struct_json(s.data.as_ref()) })),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let body = serde_json::to_vec(&Value::Array(services)).map_err(|error| {
        tracing::error!(%error, "cannot encode the services list");
        ApiError::Detail(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error".into())
    })?;
    Ok(Bytes::from(body))
}

/// `GET /services/names/`: the service folders' names, synced or not.
pub async fn names(State(state): State<AppState>, user: Caller) -> Result<Json<Vec<String>>, ApiError> {
    let response = state
        .backends
        .registry()
        .list_service_names(with_token(pb::ListServiceNamesRequest {}, &user.token)?)
        .await
        .map_err(registry_error)?;
    Ok(Json(response.into_inner().names))
}

/// `POST /services/sync`: 200 even when some folders have problems (they are logged,
/// and listed by `POST /v1/services/sync`); the good ones are synced.
pub async fn sync(State(state): State<AppState>, user: Caller) -> Result<Json<Value>, ApiError> {
    let report = state
        .backends
        .registry()
        .sync_services(with_token(pb::SyncServicesRequest {}, &user.token)?)
        .await
        .map_err(registry_error)?
        .into_inner();
    for problem in &report.problems {
        tracing::warn!(service = %problem.service, reason = %problem.reason, "service folder not synced");
    }
    for warning in &report.warnings {
        tracing::warn!(service = %warning.service, reason = %warning.reason, "service synced, but it cannot deploy");
    }
    Ok(Json(json!({ "detail": "Services synced" })))
}

/// `DELETE /services/{service_id}`.
pub async fn delete(
    State(state): State<AppState>,
    user: Caller,
    Path(service_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let Ok(id) = service_id.parse::<i64>() else {
        return Err(ApiError::Validation(vec![validation_error(
            "int_parsing",
            &["path", "service_id"],
            "Input should be a valid integer, unable to parse string as an integer",
            Value::String(service_id),
        )]));
    };
    state
        .backends
        .registry()
        .delete_service(with_token(pb::DeleteServiceRequest { id }, &user.token)?)
        .await
        .map_err(registry_error)?;
    Ok(Json(json!({ "detail": format!("Service {id} deleted") })))
}

/// `GET /deployed-services/`: `{id, deployment_id, config}` of every deployed service
/// the config token may see.
pub async fn deployed(State(state): State<AppState>, config: Caller) -> Result<Json<Value>, ApiError> {
    let response = state
        .backends
        .registry()
        .list_deployed_services(with_token(pb::ListDeployedServicesRequest {}, &config.token)?)
        .await
        .map_err(registry_error)?
        .into_inner();
    let rows = response
        .deployed_services
        .iter()
        .map(|d| json!({ "id": d.id, "deployment_id": d.deployment_id, "config": struct_json(d.config.as_ref()) }))
        .collect();
    Ok(Json(Value::Array(rows)))
}

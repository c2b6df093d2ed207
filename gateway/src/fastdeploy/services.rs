//! fastDeploy's services and deployed-services routes (contract 2.6-2.9, 2.16): user
//! tokens for services, config tokens for deployed services. Every refusal is 401, as
//! fastDeploy answers; the token is checked before the registry is called.

use axum::{
    Json,
    extract::{Path, State},
    http::header,
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use proto::{registry::v1 as pb, wkt};
use serde_json::{Value, json};

use super::{
    auth::with_token,
    objects::{self, Detail, JsonPage},
};
use common::identity::Credential;

use crate::{
    backends::Backends,
    error::{ApiError, validation_error},
    interceptor::Caller,
    server::AppState,
    services_cache::Lookup,
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
/// checked the token; the list then comes from the services cache when it may answer,
/// else from the registry page by page, streamed (and kept by the cache when it may
/// keep it).
pub async fn list(State(state): State<AppState>, user: Caller) -> Result<Response, ApiError> {
    let ticket = match state.services.lookup() {
        Lookup::Hit(body) => return Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response()),
        Lookup::Miss(ticket) => ticket,
    };
    let token = user.token;
    let fetch = move |page_token: String| {
        let state = state.clone();
        let token = token.clone();
        async move {
            let request = pb::ListServicesRequest {
                page_size: 0,
                page_token,
            };
            let page = state
                .backends
                .registry()
                .list_services(with_token(request, &token)?)
                .await
                .map_err(registry_error)?
                .into_inner();
            JsonPage::new(page.services.iter().map(objects::Service::new), page.next_page_token)
        }
    };
    let keep = ticket.map(|ticket| {
        Box::new(move |body| {
            ticket.store(body);
        }) as Box<dyn FnOnce(Bytes) + Send>
    });
    objects::json_array("services", fetch, keep).await
}

/// Every service, read page by page with the gateway's own credential (for the
/// services cache and the WebSocket hub, on nobody's behalf).
pub(crate) async fn list_all(backends: &Backends, credential: &Credential) -> Result<Vec<pb::Service>, tonic::Status> {
    let mut services = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = credential.request(pb::ListServicesRequest {
            page_size: 0,
            page_token: page_token.clone(),
        });
        let page = backends.registry().list_services(request).await?.into_inner();
        services.extend(page.services);
        if page.next_page_token.is_empty() || page.next_page_token == page_token {
            return Ok(services);
        }
        page_token = page.next_page_token;
    }
}

/// `GET /services/`'s body for `services`: the bytes `list` answers with.
pub(crate) fn list_body(services: &[pb::Service]) -> Result<Bytes, ApiError> {
    let items = JsonPage::new(services.iter().map(objects::Service::new), String::new())?.into_items();
    let mut body = Vec::with_capacity(items.len() + 2);
    body.push(b'[');
    body.extend_from_slice(&items);
    body.push(b']');
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
pub async fn sync(State(state): State<AppState>, user: Caller) -> Result<Json<Detail>, ApiError> {
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
    Ok(Json(Detail {
        detail: "Services synced".into(),
    }))
}

/// `DELETE /services/{service_id}`.
pub async fn delete(
    State(state): State<AppState>,
    user: Caller,
    Path(service_id): Path<String>,
) -> Result<Json<Detail>, ApiError> {
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
    Ok(Json(Detail {
        detail: format!("Service {id} deleted"),
    }))
}

/// `GET /deployed-services/`: `{id, deployment_id, config}` of every deployed service
/// the config token may see.
pub async fn deployed(
    State(state): State<AppState>,
    config: Caller,
) -> Result<Json<Vec<objects::DeployedService>>, ApiError> {
    let response = state
        .backends
        .registry()
        .list_deployed_services(with_token(pb::ListDeployedServicesRequest {}, &config.token)?)
        .await
        .map_err(registry_error)?
        .into_inner();
    Ok(Json(
        response
            .deployed_services
            .iter()
            .map(objects::DeployedService::new)
            .collect(),
    ))
}

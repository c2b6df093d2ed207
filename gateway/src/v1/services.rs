//! `/v1` for the registry: list, get (by id or by name), folder names, sync (with the
//! problem of every folder that did not sync), delete, and deployed services. Watching
//! services is in `streams`.

use axum::extract::{Path, State};
use proto::registry::v1::{self as pb, get_service_request::Key};
use serde::Deserialize;

use super::{Params, Registry, Reply, bad_request, forward};
use crate::{error::ApiError, interceptor::Caller, server::AppState};

/// A page of a list (`?page_size=&page_token=`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Page {
    #[serde(default)]
    page_size: u32,
    #[serde(default)]
    page_token: String,
}

fn service_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse()
        .map_err(|_| bad_request("the service id must be an integer"))
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Params(page): Params<Page>,
) -> Reply<pb::ListServicesResponse> {
    let request = pb::ListServicesRequest {
        page_size: page.page_size,
        page_token: page.page_token,
    };
    forward(&state, Some(&caller), request, async |mut c: Registry, r| {
        c.list_services(r).await
    })
    .await
}

/// GetService by either key; 404 when there is no such service.
async fn get_service(state: &AppState, caller: &Caller, key: Key) -> Reply<pb::Service> {
    let request = pb::GetServiceRequest { key: Some(key) };
    forward(state, Some(caller), request, async |mut c: Registry, r| {
        c.get_service(r).await
    })
    .await
}

/// One synced service by its id.
pub async fn get_by_id(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> Reply<pb::Service> {
    get_service(&state, &caller, Key::Id(service_id(&id)?)).await
}

/// One synced service by its name (its folder's name).
pub async fn get_by_name(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Reply<pb::Service> {
    get_service(&state, &caller, Key::Name(name)).await
}

/// Folder names in the services directory, synced or not.
pub async fn names(State(state): State<AppState>, caller: Caller) -> Reply<pb::ListServiceNamesResponse> {
    let request = pb::ListServiceNamesRequest {};
    forward(&state, Some(&caller), request, async |mut c: Registry, r| {
        c.list_service_names(r).await
    })
    .await
}

pub async fn sync(State(state): State<AppState>, caller: Caller) -> Reply<pb::SyncServicesResponse> {
    let request = pb::SyncServicesRequest {};
    forward(&state, Some(&caller), request, async |mut c: Registry, r| {
        c.sync_services(r).await
    })
    .await
}

pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Reply<pb::DeleteServiceResponse> {
    let request = pb::DeleteServiceRequest { id: service_id(&id)? };
    forward(&state, Some(&caller), request, async |mut c: Registry, r| {
        c.delete_service(r).await
    })
    .await
}

pub async fn deployed(State(state): State<AppState>, caller: Caller) -> Reply<pb::ListDeployedServicesResponse> {
    let request = pb::ListDeployedServicesRequest {};
    forward(&state, Some(&caller), request, async |mut c: Registry, r| {
        c.list_deployed_services(r).await
    })
    .await
}

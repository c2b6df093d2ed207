//! The `RegistryService` gRPC API. Who may call each RPC (a token with the right
//! permission, or the deploy service's credential where the scope table admits it) is
//! checked before the handler runs, by the authorization layer (`common::authz`);
//! handlers read the caller it admitted.

use std::sync::Arc;

use common::{
    authz::Caller,
    paging::{self, ServicesCursor},
};
use proto::registry::v1::{self as pb, registry_service_server::RegistryService};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::{
    catalog::Catalog,
    convert,
    error::RegistryError,
    events,
    storage::Store,
    sync::{SyncReport, sync},
};

pub struct RegistryApi {
    store: Store,
    catalog: Catalog,
    /// One sync at a time, so two syncs never race to add the same service.
    sync_lock: Arc<Mutex<()>>,
    /// Ends watch streams when the service stops, so shutdown never waits on them.
    shutdown: CancellationToken,
}

impl RegistryApi {
    pub fn new(store: Store, catalog: Catalog, shutdown: CancellationToken) -> RegistryApi {
        RegistryApi {
            store,
            catalog,
            sync_lock: Arc::new(Mutex::new(())),
            shutdown,
        }
    }

    /// Syncs the services table with the services directory.
    pub async fn sync(&self) -> Result<SyncReport, RegistryError> {
        let _one_at_a_time = self.sync_lock.lock().await;
        sync(&self.store, &self.catalog).await
    }
}

type Stream<T> = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl RegistryService for RegistryApi {
    /// Allowed with SERVICES_READ, and to the deploy service without a token (it hides
    /// the deployments of services that are gone).
    async fn list_services(
        &self,
        request: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListServicesResponse>, Status> {
        let pb::ListServicesRequest { page_size, page_token } = request.into_inner();
        let after = paging::decode::<ServicesCursor>(&page_token)?.map_or(0, |ServicesCursor(id)| id);
        let size = paging::SERVICES.of(page_size);
        let rows = self
            .store
            .list_services_page(after, Some(u64::from(size) + 1))
            .await
            .map_err(RegistryError::from)?;
        let (rows, next_page_token) = paging::split_page(rows, size, |s| ServicesCursor(s.id));
        let services: Vec<pb::Service> = rows.iter().map(convert::service).collect();
        Ok(Response::new(pb::ListServicesResponse {
            services,
            next_page_token,
        }))
    }

    async fn list_service_names(
        &self,
        _request: Request<pb::ListServiceNamesRequest>,
    ) -> Result<Response<pb::ListServiceNamesResponse>, Status> {
        let catalog = self.catalog.clone();
        let names = tokio::task::spawn_blocking(move || catalog.names())
            .await
            .map_err(RegistryError::from)?
            .map_err(RegistryError::from)?;
        Ok(Response::new(pb::ListServiceNamesResponse { names }))
    }

    /// Allowed with SERVICES_READ, and to the deploy service without a token (it looks
    /// a service up when a deployment starts).
    async fn get_service(&self, request: Request<pb::GetServiceRequest>) -> Result<Response<pb::Service>, Status> {
        let row = match request.into_inner().key {
            Some(pb::get_service_request::Key::Id(id)) => self.store.get_service(id).await,
            Some(pb::get_service_request::Key::Name(name)) => self.store.find_service(&name).await,
            None => return Err(RegistryError::InvalidArgument("give the service's id or name".into()).into()),
        }
        .map_err(RegistryError::from)?
        .ok_or(RegistryError::ServiceNotFound)?;
        Ok(Response::new(convert::service(&row)))
    }

    async fn sync_services(
        &self,
        request: Request<pb::SyncServicesRequest>,
    ) -> Result<Response<pb::SyncServicesResponse>, Status> {
        let claims = Caller::claims(&request)?;
        tracing::info!(by = %claims.sub, "sync requested");
        Ok(Response::new(self.sync().await?.into()))
    }

    async fn delete_service(
        &self,
        request: Request<pb::DeleteServiceRequest>,
    ) -> Result<Response<pb::DeleteServiceResponse>, Status> {
        let by = Caller::claims(&request)?.sub.clone();
        let id = request.into_inner().id;
        let row = self
            .store
            .remove_service(id)
            .await
            .map_err(RegistryError::from)?
            .ok_or(RegistryError::ServiceNotFound)?;
        tracing::info!(id, service = %row.name, by = %by, "service deleted");
        Ok(Response::new(pb::DeleteServiceResponse {}))
    }

    /// Only the deploy service, by its credential; any token, even a user's, is refused.
    async fn publish_deployed_service(
        &self,
        request: Request<pb::PublishDeployedServiceRequest>,
    ) -> Result<Response<pb::DeployedService>, Status> {
        let pb::PublishDeployedServiceRequest {
            deployment_id,
            service,
            config,
        } = request.into_inner();
        if deployment_id <= 0 {
            return Err(RegistryError::InvalidArgument("deployment_id must be positive".into()).into());
        }
        self.store
            .find_service(&service)
            .await
            .map_err(RegistryError::from)?
            .ok_or(RegistryError::ServiceNotFound)?;
        let config = config
            .as_ref()
            .map(convert::from_struct)
            .unwrap_or_else(|| serde_json::json!({}));
        let row = self
            .store
            .publish_deployed(deployment_id, &service, config)
            .await
            .map_err(RegistryError::from)?;
        tracing::info!(service = %row.service, deployment_id, "deployed service published");
        Ok(Response::new(convert::deployed(&row)))
    }

    /// With DEPLOYED_SERVICES_READ; a token naming `services` sees only those.
    async fn list_deployed_services(
        &self,
        request: Request<pb::ListDeployedServicesRequest>,
    ) -> Result<Response<pb::ListDeployedServicesResponse>, Status> {
        let services = Caller::claims(&request)?.services.clone();
        let rows = self
            .store
            .list_deployed(services.as_deref())
            .await
            .map_err(RegistryError::from)?;
        Ok(Response::new(pb::ListDeployedServicesResponse {
            deployed_services: rows.iter().map(convert::deployed).collect(),
        }))
    }

    type WatchServicesStream = Stream<pb::ServiceEvent>;

    async fn watch_services(
        &self,
        request: Request<pb::WatchServicesRequest>,
    ) -> Result<Response<Self::WatchServicesStream>, Status> {
        let after = request.into_inner().after_sequence;
        // The layer ends the stream when the token that opened it is no longer good.
        let events = events::watch(self.store.clone(), after, self.shutdown.clone());
        Ok(Response::new(Box::pin(events)))
    }
}

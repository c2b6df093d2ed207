//! The registry service's gRPC server: health, reflection and the `RegistryService` API.
//! The service API itself lands with the services-and-deployments issue; until then
//! every registry RPC answers UNIMPLEMENTED.

use anyhow::Context;
use proto::registry::v1::{
    self as pb,
    registry_service_server::{RegistryService, RegistryServiceServer},
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::{Config, storage::Store};

/// Opens storage and serves gRPC on `listener` until `shutdown` is cancelled.
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let url = config.database_url();
    let store = Store::open(&url)
        .await
        .with_context(|| format!("opening {}", common::db::redacted(&url)))?;
    let api = RegistryApi { _store: store };
    let api = RegistryServiceServer::new(api);
    let grpc_name = <RegistryServiceServer<RegistryApi> as tonic::server::NamedService>::NAME;
    common::server::serve_grpc(
        "registry-service",
        grpc_name,
        tonic::service::Routes::new(api),
        listener,
        shutdown,
    )
    .await
}

pub struct RegistryApi {
    _store: Store,
}

fn not_yet() -> Status {
    Status::unimplemented("the registry API is not implemented yet")
}

type Stream<T> = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl RegistryService for RegistryApi {
    async fn list_services(
        &self,
        _: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListServicesResponse>, Status> {
        Err(not_yet())
    }
    async fn list_service_names(
        &self,
        _: Request<pb::ListServiceNamesRequest>,
    ) -> Result<Response<pb::ListServiceNamesResponse>, Status> {
        Err(not_yet())
    }
    async fn get_service(&self, _: Request<pb::GetServiceRequest>) -> Result<Response<pb::Service>, Status> {
        Err(not_yet())
    }
    async fn sync_services(
        &self,
        _: Request<pb::SyncServicesRequest>,
    ) -> Result<Response<pb::SyncServicesResponse>, Status> {
        Err(not_yet())
    }
    async fn delete_service(
        &self,
        _: Request<pb::DeleteServiceRequest>,
    ) -> Result<Response<pb::DeleteServiceResponse>, Status> {
        Err(not_yet())
    }
    async fn publish_deployed_service(
        &self,
        _: Request<pb::PublishDeployedServiceRequest>,
    ) -> Result<Response<pb::DeployedService>, Status> {
        Err(not_yet())
    }
    async fn list_deployed_services(
        &self,
        _: Request<pb::ListDeployedServicesRequest>,
    ) -> Result<Response<pb::ListDeployedServicesResponse>, Status> {
        Err(not_yet())
    }
    type WatchServicesStream = Stream<pb::ServiceEvent>;
    async fn watch_services(
        &self,
        _: Request<pb::WatchServicesRequest>,
    ) -> Result<Response<Self::WatchServicesStream>, Status> {
        Err(not_yet())
    }
}

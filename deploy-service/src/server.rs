//! The deploy service's gRPC server: health, reflection and the `DeployService` API.
//! The deployment API itself lands with the services-and-deployments issue; until then
//! every deploy RPC answers UNIMPLEMENTED.

use anyhow::Context;
use proto::deploy::v1::{
    self as pb,
    deploy_service_server::{DeployService, DeployServiceServer},
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
    let api = DeployApi { _store: store };
    let api = DeployServiceServer::new(api);
    let grpc_name = <DeployServiceServer<DeployApi> as tonic::server::NamedService>::NAME;
    common::server::serve_grpc(
        "deploy-service",
        grpc_name,
        tonic::service::Routes::new(api),
        listener,
        shutdown,
    )
    .await
}

pub struct DeployApi {
    _store: Store,
}

fn not_yet() -> Status {
    Status::unimplemented("the deployment API is not implemented yet")
}

type Stream<T> = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl DeployService for DeployApi {
    async fn start_deployment(
        &self,
        _: Request<pb::StartDeploymentRequest>,
    ) -> Result<Response<pb::Deployment>, Status> {
        Err(not_yet())
    }
    async fn list_deployments(
        &self,
        _: Request<pb::ListDeploymentsRequest>,
    ) -> Result<Response<pb::ListDeploymentsResponse>, Status> {
        Err(not_yet())
    }
    async fn get_deployment(&self, _: Request<pb::GetDeploymentRequest>) -> Result<Response<pb::Deployment>, Status> {
        Err(not_yet())
    }
    async fn report_step(&self, _: Request<pb::ReportStepRequest>) -> Result<Response<pb::Step>, Status> {
        Err(not_yet())
    }
    async fn list_steps(&self, _: Request<pb::ListStepsRequest>) -> Result<Response<pb::ListStepsResponse>, Status> {
        Err(not_yet())
    }
    async fn finish_deployment(
        &self,
        _: Request<pb::FinishDeploymentRequest>,
    ) -> Result<Response<pb::Deployment>, Status> {
        Err(not_yet())
    }
    async fn cancel_deployment(
        &self,
        _: Request<pb::CancelDeploymentRequest>,
    ) -> Result<Response<pb::Deployment>, Status> {
        Err(not_yet())
    }
    type WatchEventsStream = Stream<pb::Event>;
    async fn watch_events(
        &self,
        _: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        Err(not_yet())
    }
}

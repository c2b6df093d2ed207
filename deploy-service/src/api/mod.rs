//! The `DeployService` gRPC API. The authorization layer (`common::authz`) has checked
//! the caller's token against the scope table before a handler runs; `access` then
//! decides what this kind of caller may see. Starting and listing are in
//! `start_and_list`; reports, finishes and cancels in `runs`; streams in `watch` and
//! `log`.

mod access;
mod batcher;
mod live_services;
mod log;
mod runs;
mod start_and_list;
mod watch;

use std::{path::PathBuf, sync::Arc};

use common::{authz, error::ErrorCode};
use proto::deploy::v1::{self as pb, deploy_service_server::DeployService};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use self::{access::Caller, batcher::Batcher, live_services::LiveServices};
use crate::{
    backends::Backends,
    convert,
    logs::Logs,
    model::DeploymentId,
    queue::Queue,
    storage::{EventFilter, Store, deployments},
};

pub struct DeployApi {
    inner: Arc<Shared>,
}

struct Shared {
    store: Store,
    backends: Backends,
    queue: Queue,
    reports: Batcher,
    logs: Logs,
    /// Snapshots of the registry's services for listings in progress.
    live_services: LiveServices,
    services_dir: PathBuf,
    default_timeout_secs: u64,
    shutdown: CancellationToken,
}

pub struct ApiParts {
    pub store: Store,
    pub backends: Backends,
    pub logs: Logs,
    pub queue: Queue,
    pub services_dir: PathBuf,
    pub default_timeout_secs: u64,
    pub shutdown: CancellationToken,
}

/// A storage failure: logged in full, reported without detail; UNAVAILABLE when the
/// database is out of reach or the disk full or read-only.
pub fn internal(error: impl std::error::Error + 'static) -> Status {
    if let Some(status) = common::db::outage_status(&error) {
        return status;
    }
    tracing::error!(%error, "storage error");
    ErrorCode::Internal.status("internal error")
}

impl DeployApi {
    pub fn new(parts: ApiParts) -> DeployApi {
        DeployApi {
            inner: Arc::new(Shared {
                reports: Batcher::start(parts.store.clone()),
                live_services: LiveServices::default(),
                store: parts.store,
                backends: parts.backends,
                logs: parts.logs,
                queue: parts.queue,
                services_dir: parts.services_dir,
                default_timeout_secs: parts.default_timeout_secs,
                shutdown: parts.shutdown,
            }),
        }
    }
}

/// The caller of `request`, from the token the authorization layer admitted.
fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    Caller::from_claims(authz::Caller::claims(request)?)
}

impl Shared {
    /// The registry's answer, or UNAVAILABLE.
    fn registry_down(error: crate::backends::BackendError) -> Status {
        tracing::warn!(%error, "registry lookup failed");
        ErrorCode::Unavailable.status("the registry is unavailable")
    }

    /// `found`, unless its service was removed (folder gone and synced, or deleted):
    /// such deployments are gone for every reader but the run's own deployment token,
    /// as fastDeploy's cascade deletes them (contract 2.9, 4.3).
    async fn unless_service_removed(
        &self,
        caller: &Caller,
        found: Option<deployments::Model>,
    ) -> Result<Option<deployments::Model>, Status> {
        let Some(row) = found else { return Ok(None) };
        if matches!(caller, Caller::Deployment { .. }) {
            return Ok(Some(row));
        }
        let exists = self
            .backends
            .service_exists(row.service_id)
            .await
            .map_err(Shared::registry_down)?;
        Ok(exists.then_some(row))
    }

    /// A deployment this caller may read, with removed services' deployments treated
    /// as missing.
    async fn readable(&self, caller: &Caller, id: DeploymentId) -> Result<deployments::Model, Status> {
        let found = self.store.get_deployment(id).await.map_err(internal)?;
        let found = self.unless_service_removed(caller, found).await?;
        caller.readable(id, found)
    }

    /// A deployment with its visible steps.
    async fn full(&self, row: &deployments::Model) -> Result<pb::Deployment, Status> {
        let steps = self.store.visible_steps(row.id).await.map_err(internal)?;
        Ok(convert::deployment(row, &steps))
    }

    /// `caller` is `None` for the gateway's own stream.
    async fn watch(
        &self,
        caller: Option<Caller>,
        request: pb::WatchEventsRequest,
    ) -> Result<watch::EventStream, Status> {
        let service = (!request.service.is_empty()).then_some(request.service);
        let deployment_id = (request.deployment_id != 0).then_some(DeploymentId(request.deployment_id));
        let filter = match caller {
            None | Some(Caller::User { .. }) => EventFilter { service, deployment_id },
            Some(Caller::Service { service: own, .. }) => {
                if service.as_ref().is_some_and(|s| *s != own) {
                    return Err(access::wrong_service_token());
                }
                if let Some(id) = deployment_id {
                    let found = self.store.get_deployment(id).await.map_err(internal)?;
                    Caller::Service {
                        service: own.clone(),
                        origin: String::new(),
                        user: String::new(),
                    }
                    .readable(id, found)?;
                }
                EventFilter {
                    service: Some(own),
                    deployment_id,
                }
            }
            Some(Caller::Deployment { id }) => {
                if deployment_id.is_some_and(|d| d != id) {
                    return Err(
                        ErrorCode::PermissionDenied.status("a deployment token may only watch its own deployment")
                    );
                }
                EventFilter {
                    service,
                    deployment_id: Some(id),
                }
            }
        };
        Ok(watch::watch(
            self.store.clone(),
            filter,
            request.after_sequence,
            self.shutdown.clone(),
        ))
    }
}

#[tonic::async_trait]
impl DeployService for DeployApi {
    async fn start_deployment(
        &self,
        request: Request<pb::StartDeploymentRequest>,
    ) -> Result<Response<pb::Deployment>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(self.inner.start(caller, request.into_inner()).await?))
    }

    async fn list_deployments(
        &self,
        request: Request<pb::ListDeploymentsRequest>,
    ) -> Result<Response<pb::ListDeploymentsResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(self.inner.list(caller, request.into_inner()).await?))
    }

    async fn get_deployment(
        &self,
        request: Request<pb::GetDeploymentRequest>,
    ) -> Result<Response<pb::Deployment>, Status> {
        let caller = caller(&request)?;
        let row = self
            .inner
            .readable(&caller, DeploymentId(request.into_inner().id))
            .await?;
        Ok(Response::new(self.inner.full(&row).await?))
    }

    async fn report_step(&self, request: Request<pb::ReportStepRequest>) -> Result<Response<pb::Step>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(self.inner.report(caller, request.into_inner()).await?))
    }

    async fn list_steps(
        &self,
        request: Request<pb::ListStepsRequest>,
    ) -> Result<Response<pb::ListStepsResponse>, Status> {
        let caller = caller(&request)?;
        let row = self
            .inner
            .readable(&caller, DeploymentId(request.into_inner().deployment_id))
            .await?;
        let steps = self.inner.store.visible_steps(row.id).await.map_err(internal)?;
        Ok(Response::new(pb::ListStepsResponse {
            steps: steps.iter().map(convert::step).collect(),
        }))
    }

    async fn finish_deployment(
        &self,
        request: Request<pb::FinishDeploymentRequest>,
    ) -> Result<Response<pb::Deployment>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(self.inner.finish(caller, request.into_inner()).await?))
    }

    async fn cancel_deployment(
        &self,
        request: Request<pb::CancelDeploymentRequest>,
    ) -> Result<Response<pb::Deployment>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(
            self.inner.cancel(caller, DeploymentId(request.into_inner().id)).await?,
        ))
    }

    /// Ends when the caller's token is revoked or expires (the authorization layer
    /// ends it).
    type WatchEventsStream = watch::EventStream;
    type WatchDeploymentLogStream = log::LogStream;

    async fn watch_events(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        // The gateway, by its credential, reads every event as a user may (its WebSocket
        // hub filters each socket by that socket's own token).
        let caller = match authz::Caller::of(&request)?.service() {
            Some(common::identity::GATEWAY) => None,
            _ => Some(caller(&request)?),
        };
        Ok(Response::new(self.inner.watch(caller, request.into_inner()).await?))
    }

    async fn get_deployment_log(
        &self,
        request: Request<pb::GetDeploymentLogRequest>,
    ) -> Result<Response<pb::GetDeploymentLogResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let row = self
            .inner
            .readable(&caller, DeploymentId(request.deployment_id))
            .await?;
        let page = log::page(&self.inner.store, &self.inner.queue, &row, &request).await?;
        Ok(Response::new(page))
    }

    /// Ends when the run has ended and every line was sent, or when the caller's
    /// token is revoked or expires (the authorization layer ends it).
    async fn watch_deployment_log(
        &self,
        request: Request<pb::WatchDeploymentLogRequest>,
    ) -> Result<Response<Self::WatchDeploymentLogStream>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let row = self
            .inner
            .readable(&caller, DeploymentId(request.deployment_id))
            .await?;
        Ok(Response::new(log::watch(
            self.inner.store.clone(),
            &self.inner.logs,
            self.inner.queue.clone(),
            row,
            request.after_line,
            self.inner.shutdown.clone(),
        )))
    }
}

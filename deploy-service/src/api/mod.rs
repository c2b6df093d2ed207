//! The `DeployService` gRPC API. The authorization layer (`common::authz`) has checked
//! the caller's token against the scope table before a handler runs; `access` then
//! decides what this kind of caller may see.

mod access;
mod batcher;
mod live_services;
mod log;
mod watch;

use std::{path::PathBuf, sync::Arc};

use common::{authz, error::ErrorCode, paging};
use proto::deploy::v1::{self as pb, deploy_service_server::DeployService};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use self::{
    access::{Caller, not_found},
    batcher::{Batcher, Refusal},
    live_services::{DeploymentsCursor, LiveServices},
};
use crate::model::DeploymentId;
use crate::{
    backends::Backends,
    convert,
    logs::Logs,
    model::{Outcome, Report, ServiceId, Status as DeploymentStatus},
    plan,
    queue::Queue,
    storage::{DeploymentFilter, EventFilter, NewDeployment, ReportRefused, Store, deployments},
};

/// Longest `origin` or `user` a listing may filter by.
const MAX_FILTER_LEN: usize = 1024;

/// The filters and order of a `ListDeployments` request, checked.
fn list_filter(request: &pb::ListDeploymentsRequest) -> Result<DeploymentFilter, Status> {
    let status = match pb::DeploymentStatus::try_from(request.status) {
        Ok(status) => convert::from_status(status),
        Err(_) => {
            return Err(ErrorCode::InvalidArgument.status(format!("unknown deployment status {}", request.status)));
        }
    };
    let text = |name: &str, value: &str| match value.len() {
        0 => Ok(None),
        n if n > MAX_FILTER_LEN => {
            Err(ErrorCode::InvalidArgument.status(format!("{name} is longer than {MAX_FILTER_LEN} bytes")))
        }
        _ => Ok(Some(value.to_owned())),
    };
    Ok(DeploymentFilter {
        service: (!request.service.is_empty()).then(|| request.service.clone()),
        status,
        origin: text("origin", &request.origin)?,
        user: text("user", &request.user)?,
        newest_first: request.newest_first,
    })
}

/// The fingerprint of a request's filters and order, as its page tokens carry it.
fn fingerprint(request: &pb::ListDeploymentsRequest) -> i64 {
    let status = match request.status {
        0 => String::new(),
        n => n.to_string(),
    };
    let order = if request.newest_first { "newest first" } else { "" };
    paging::fingerprint(&[&request.service, &status, &request.origin, &request.user, order])
}

/// Largest context (`{"env": …}` as JSON) a deployment may carry.
const MAX_CONTEXT_BYTES: usize = 64 * 1024;

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

fn refused(id: DeploymentId, refusal: ReportRefused) -> Status {
    match refusal {
        ReportRefused::NotFound => not_found(id),
        ReportRefused::NotStarted => ErrorCode::Conflict.status(format!("deployment {id} has not started yet")),
        ReportRefused::Finished => ErrorCode::Conflict.status(format!("deployment {id} is finished")),
        ReportRefused::Db(error) => internal(error),
    }
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

    async fn start(&self, caller: Caller, request: pb::StartDeploymentRequest) -> Result<pb::Deployment, Status> {
        let (name, origin, user, service_token) = match caller {
            Caller::Service { service, origin, user } => {
                if !request.service.is_empty() && request.service != service {
                    return Err(ErrorCode::PermissionDenied
                        .status(format!("this token may only start deployments of {service}")));
                }
                (service, origin, user, true)
            }
            Caller::User { name, origin } => {
                if request.service.is_empty() {
                    return Err(ErrorCode::InvalidArgument.status("name the service to deploy"));
                }
                (request.service, origin, name, false)
            }
            Caller::Deployment { .. } => {
                return Err(ErrorCode::PermissionDenied.status("a deployment token may not start deployments"));
            }
        };
        let env = request
            .env
            .as_ref()
            .map(convert::from_struct)
            .unwrap_or_else(|| json!({}));
        let context = json!({ "env": env });
        if context.to_string().len() > MAX_CONTEXT_BYTES {
            return Err(ErrorCode::InvalidArgument.status(format!("env is larger than {MAX_CONTEXT_BYTES} bytes")));
        }
        let service = match self.backends.service(&name).await {
            Ok(Some(service)) => service,
            // fastDeploy checks the service as part of the token: 401 for a service token.
            Ok(None) if service_token => return Err(ErrorCode::Unauthenticated.status("invalid token")),
            Ok(None) => return Err(ErrorCode::NotFound.status(format!("service {name} not found"))),
            Err(error) => {
                tracing::warn!(%error, "registry lookup failed");
                return Err(ErrorCode::Unavailable.status("the registry is unavailable"));
            }
        };
        let invalid = |e: plan::PlanError| ErrorCode::InvalidArgument.status(e.to_string());
        let last = self.store.last_succeeded_steps(service.id).await.map_err(internal)?;
        let steps = plan::steps(&last, &service.data).map_err(invalid)?;
        let timeout_secs = plan::timeout_secs(&service.data, self.default_timeout_secs).map_err(invalid)?;
        let script = plan::deploy_script(&self.services_dir, &name, &service.data).map_err(invalid)?;
        let (deployment, steps) = self
            .queue
            .accept(NewDeployment {
                service_id: service.id,
                service: service.name,
                origin,
                user,
                context,
                deploy_script: script.to_string_lossy().into_owned(),
                timeout_secs,
                steps,
            })
            .await
            .map_err(internal)?;
        tracing::info!(id = %deployment.id, service = %deployment.service, status = %deployment.status, "deployment accepted");
        let visible: Vec<_> = steps.into_iter().filter(|step| !step.removed).collect();
        Ok(convert::deployment(&deployment, &visible))
    }

    async fn list(
        &self,
        caller: Caller,
        request: pb::ListDeploymentsRequest,
    ) -> Result<pb::ListDeploymentsResponse, Status> {
        let size = paging::DEPLOYMENTS.of(request.page_size);
        let include_removed = request.include_removed_services;
        let mut filter = list_filter(&request)?;
        if let Caller::Service { service, .. } = &caller {
            if filter.service.as_ref().is_some_and(|w| w != service) {
                return Err(access::wrong_service_token());
            }
            filter.service = Some(service.clone());
        }
        let cursor = paging::decode::<DeploymentsCursor>(&request.page_token)?;
        let filters = fingerprint(&request);
        if cursor.is_some_and(|c| c.filters != filters) {
            return Err(ErrorCode::InvalidArgument
                .status("page_token was given by a list with other filters or order: ask again without it"));
        }
        let after = cursor.map(|c| DeploymentId(c.after));
        let rows = match &caller {
            Caller::User { .. } | Caller::Service { .. } => {
                self.store.list_deployments(&filter, after, u64::from(size) + 1).await
            }
            Caller::Deployment { id } => self.store.get_deployment(*id).await.map(|d| {
                d.into_iter()
                    .filter(|d| filter.after(d.id, after) && filter.matches(d))
                    .collect()
            }),
        }
        .map_err(internal)?;
        let mut rows = rows;
        let more = rows.len() > size as usize;
        rows.truncate(size as usize);
        let mut deployments: Vec<pb::Deployment> = rows.iter().map(|d| convert::deployment(d, &[])).collect();
        // Deployments of removed services are left out (a page may come out short),
        // or marked when asked for. The listing's snapshot of live services goes on
        // in its page token.
        let mut snapshot = 0;
        if !deployments.is_empty() && !matches!(caller, Caller::Deployment { .. }) {
            let (taken, live) = self
                .live_services
                .for_page(
                    &self.backends,
                    cursor.map(|c| c.snapshot),
                    deployments.iter().map(|d| ServiceId(d.service_id)),
                )
                .await
                .map_err(Shared::registry_down)?;
            snapshot = taken;
            for d in &mut deployments {
                d.service_removed = !live.contains(&ServiceId(d.service_id));
            }
            if !include_removed {
                deployments.retain(|d| !d.service_removed);
            }
        }
        let next_page_token = match rows.last() {
            Some(last) if more => paging::encode(&DeploymentsCursor {
                after: last.id.0,
                snapshot,
                filters,
            }),
            _ => String::new(),
        };
        Ok(pb::ListDeploymentsResponse {
            deployments,
            next_page_token,
        })
    }

    async fn report(&self, caller: Caller, request: pb::ReportStepRequest) -> Result<pb::Step, Status> {
        let Caller::Deployment { id } = caller else {
            return Err(ErrorCode::PermissionDenied.status("only a deployment token reports steps"));
        };
        let started = request.started.as_ref().and_then(convert::from_timestamp);
        let report = Report::new(&request.name, &request.state, &request.message, started)
            .map_err(|e| ErrorCode::InvalidArgument.status(e.to_string()))?;
        self.reports
            .report(id, report)
            .await
            .map(|step| convert::step(&step))
            .map_err(|refusal| match refusal {
                Refusal::NotFound => not_found(id),
                Refusal::NotStarted => ErrorCode::Conflict.status(format!("deployment {id} has not started yet")),
                Refusal::Finished => ErrorCode::Conflict.status(format!("deployment {id} is finished")),
                Refusal::Unavailable => ErrorCode::Unavailable.status("the database is unavailable; try again shortly"),
                Refusal::Storage(message) => ErrorCode::Unavailable.status(message),
                Refusal::Internal => ErrorCode::Internal.status("internal error"),
            })
    }

    async fn finish(&self, caller: Caller, request: pb::FinishDeploymentRequest) -> Result<pb::Deployment, Status> {
        let id = match caller {
            Caller::Deployment { id } if request.id == 0 || request.id == id.0 => id,
            Caller::Deployment { .. } => {
                return Err(ErrorCode::PermissionDenied.status("a deployment token may only finish its own deployment"));
            }
            Caller::User { .. } if request.id > 0 => DeploymentId(request.id),
            Caller::User { .. } => return Err(ErrorCode::InvalidArgument.status("name the deployment to finish")),
            Caller::Service { .. } => {
                return Err(ErrorCode::PermissionDenied.status("a service token may not finish deployments"));
            }
        };
        let mut row = self.store.request_finish(id).await.map_err(|e| match e {
            ReportRefused::NotStarted => {
                ErrorCode::Conflict.status(format!("deployment {id} has not started; cancel it instead"))
            }
            other => refused(id, other),
        })?;
        // Finished at once, as fastDeploy does (contract 2.13): succeeded unless a step
        // failed, its unfinished steps removed, all before the answer. The runner still
        // waits for the script (and stops it at the time limit); its exit no longer
        // changes the outcome.
        if row.status == DeploymentStatus::Running {
            let ended = self.store.end_deployment(id, &Outcome::Exited, None, false).await;
            row = ended.map_err(internal)?.unwrap_or(row);
            tracing::info!(%id, status = %row.status, script_running = self.queue.runs_here(id), "deployment finished");
        }
        self.full(&row).await
    }

    async fn cancel(&self, caller: Caller, id: DeploymentId) -> Result<pb::Deployment, Status> {
        let Caller::User { name, .. } = caller else {
            return Err(ErrorCode::PermissionDenied.status("only a user may cancel deployments"));
        };
        let row = self
            .store
            .get_deployment(id)
            .await
            .map_err(internal)?
            .ok_or_else(|| not_found(id))?;
        let already = || ErrorCode::Conflict.status(format!("deployment {id} is already finished"));
        // A finished deployment whose script still runs (finished by the script
        // itself) may still have its script stopped; its outcome stays.
        if row.finished.is_some() && !self.queue.runs_here(id) {
            return Err(already());
        }
        let ended = match self.queue.cancel(id, &name).await.map_err(internal)? {
            Some(ended) => ended,
            None => {
                let reason = Outcome::Cancelled(format!("cancelled by {name}"));
                let current = self
                    .store
                    .get_deployment(id)
                    .await
                    .map_err(internal)?
                    .ok_or_else(|| not_found(id))?;
                if current.finished.is_some() {
                    return Err(already());
                }
                self.store
                    .end_deployment(id, &reason, None, false)
                    .await
                    .map_err(internal)?
                    .unwrap_or(current)
            }
        };
        tracing::info!(%id, by = %name, "deployment cancelled");
        self.full(&ended).await
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
        watch::watch(
            self.store.clone(),
            filter,
            request.after_sequence,
            self.shutdown.clone(),
        )
        .await
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

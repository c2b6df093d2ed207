//! What reaches a run while it runs, on whichever replica: `ReportStep` (batched),
//! `FinishDeployment` and `CancelDeployment`. All are applied in the database; a
//! cancel of a run on another replica is passed to it there (`Queue::cancel`).

use common::error::ErrorCode;
use proto::deploy::v1 as pb;
use tonic::Status;

use super::{
    Shared,
    access::{Caller, not_found},
    batcher::Refusal,
    internal,
};
use crate::{
    convert,
    model::{DeploymentId, Outcome, Report, Status as DeploymentStatus},
    storage::ReportRefused,
};

fn refused(id: DeploymentId, refusal: ReportRefused) -> Status {
    match refusal {
        ReportRefused::NotFound => not_found(id),
        ReportRefused::NotStarted => ErrorCode::Conflict.status(format!("deployment {id} has not started yet")),
        ReportRefused::Finished | ReportRefused::Lost => {
            ErrorCode::Conflict.status(format!("deployment {id} is finished"))
        }
        ReportRefused::Db(error) => internal(error),
    }
}

impl Shared {
    pub(super) async fn report(&self, caller: Caller, request: pb::ReportStepRequest) -> Result<pb::Step, Status> {
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

    pub(super) async fn finish(
        &self,
        caller: Caller,
        request: pb::FinishDeploymentRequest,
    ) -> Result<pb::Deployment, Status> {
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
            tracing::info!(%id, status = %row.status, "deployment finished");
        }
        self.full(&row).await
    }

    pub(super) async fn cancel(&self, caller: Caller, id: DeploymentId) -> Result<pb::Deployment, Status> {
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
        if row.finished.is_some() && !self.queue.script_running(id).await.map_err(internal)? {
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
}

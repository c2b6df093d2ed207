//! The runner: runs one deployment's deploy script from start to end (contract
//! 4.6-4.9, safely). It mints the run's deployment token, writes the config file,
//! starts the script, applies the step reports the script prints, enforces the time
//! limit, stops the script on cancel or shutdown, and then ends the deployment,
//! publishes its deployed service, scrubs the config file and revokes the token.
//! Every other line the script prints goes, redacted, to the run's log (`crate::logs`),
//! which is complete before the deployment ends.
//!
//! Its writes for the run name the run's `Claim`: once another replica has ended the
//! run (this replica's lease expired), they are refused, the script is stopped and
//! nothing more is written.

mod collected;
mod ended;
mod execute;
mod output;
#[cfg(test)]
mod output_props;
mod process;
mod secret_file;

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use output::MAX_LINE_BYTES;
pub use process::{ScriptEnv, stop_orphan};
pub use secret_file::{prepare_dir, run_file_ids, scrub_dir};

use self::{collected::Collected, ended::Ended};
use crate::{
    backends::Backends,
    logs::Logs,
    model::{DeploymentId, Outcome, Status},
    storage::{Claim, Fenced, Store, deployments},
};

/// How long a deployment token outlives the run's time limit.
const TOKEN_MARGIN_SECS: i64 = 300;
/// How long a stopped script gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// How long output is still waited for after the script exited and nothing more
/// arrives (something it started in the background may hold the pipe open).
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(5);
/// Most reports stored in one transaction.
const BATCH: usize = 256;
/// How long a run waits for a database that cannot be reached to store its script's
/// step reports before it ends the run.
const STORE_PATIENCE: Duration = Duration::from_secs(30);

/// Where and how scripts run.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    pub services_dir: PathBuf,
    pub project_root: PathBuf,
    /// The private directory for config files.
    pub runs_dir: PathBuf,
    /// The gateway's URL, for `steps_url` and `deployment_finish_url`.
    pub public_url: String,
    pub env: ScriptEnv,
    pub ssh_auth_sock: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Runner {
    store: Store,
    backends: Backends,
    logs: Logs,
    config: RunnerConfig,
}

/// What a run is told while it runs, and the claim its writes name.
pub struct Run {
    pub claim: Claim,
    /// The name of a user who cancels it.
    pub cancel: mpsc::Receiver<String>,
    /// Cancelled when the run turns out lost (another replica ended it).
    pub lost: CancellationToken,
    /// Cancelled when the service stops.
    pub shutdown: CancellationToken,
    /// Set once the script has ended: the run is only being ended from then on (its
    /// row may go at any moment, which is no loss).
    pub settled: Arc<AtomicBool>,
}

impl Runner {
    pub fn new(store: Store, backends: Backends, logs: Logs, config: RunnerConfig) -> Runner {
        Runner {
            store,
            backends,
            logs,
            config,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn backends(&self) -> &Backends {
        &self.backends
    }

    /// Runs a deployment the queue has just claimed, to its end.
    pub async fn run(&self, deployment: deployments::Model, mut run: Run) -> deployments::Model {
        let id = deployment.id;
        let mut token_id = None;
        let mut collected = Collected::default();
        let mut log = self.logs.run_log(id);
        let ended = self
            .execute(&deployment, &mut run, &mut token_id, &mut collected, &mut log)
            .await;
        run.settled.store(true, Ordering::SeqCst);
        // Every line stored before the deployment ends: a reader that sees it ended
        // has the whole output.
        log.close().await;
        if ended.lost || run.lost.is_cancelled() {
            // The replica that ended the run revoked its token.
            tracing::warn!(%id, "the run was ended by another replica; the deploy script was stopped");
            return deployment;
        }
        let ended_row = match self.finished_early(id).await {
            Some(row) => self.after_finish(row, ended, &collected, &run.claim).await,
            None => {
                let outcome = self.publish(&deployment, ended.outcome, &collected).await;
                let row = self.end(id, &run.claim, &outcome, ended.exit_code).await;
                tracing::info!(%id, service = %deployment.service, outcome = ?outcome, "deployment ended");
                row
            }
        };
        if let Some(token_id) = token_id {
            self.revoke(&token_id).await;
        }
        ended_row.unwrap_or(deployment)
    }

    /// The deployment, if it was finished (`FinishDeployment`, on any replica) while
    /// its script ran.
    async fn finished_early(&self, id: DeploymentId) -> Option<deployments::Model> {
        match self.store.get_deployment(id).await {
            Ok(row) => row.filter(|row| row.finished.is_some()),
            Err(error) => {
                tracing::error!(%id, %error, "cannot read the deployment after its run");
                None
            }
        }
    }

    /// The script of a deployment finished while it ran has ended: the outcome
    /// recorded at finish stands. The deployed service is published only when the
    /// deployment succeeded and the script then exited 0.
    async fn after_finish(
        &self,
        row: deployments::Model,
        ended: Ended,
        collected: &Collected,
        claim: &Claim,
    ) -> Option<deployments::Model> {
        let id = row.id;
        if ended.outcome != Outcome::Exited {
            tracing::warn!(
                %id,
                status = %row.status,
                script = ?ended.outcome,
                "the deploy script ended badly after its deployment was finished; the outcome is kept"
            );
        } else {
            tracing::info!(%id, status = %row.status, "the deploy script of a finished deployment exited");
        }
        let succeeded = row.status == Status::Succeeded;
        if let (true, Outcome::Exited, Some(config)) = (succeeded, &ended.outcome, &collected.deployed_service)
            && let Err(error) = self.backends.publish(id, &row.service, config).await
        {
            tracing::error!(%id, %error, "deployed service of a finished deployment not published");
        }
        self.end(id, claim, &ended.outcome, ended.exit_code).await.or(Some(row))
    }

    /// Publishes the deployed service of a run that is about to succeed; a failed
    /// publish fails the deployment.
    async fn publish(&self, deployment: &deployments::Model, outcome: Outcome, collected: &Collected) -> Outcome {
        let (Outcome::Exited, Some(config)) = (&outcome, &collected.deployed_service) else {
            return outcome;
        };
        match self.store.failed_step(deployment.id).await {
            Ok(None) => {}
            Ok(Some(_)) => return outcome,
            Err(error) => tracing::error!(id = %deployment.id, %error, "cannot check the steps before publishing"),
        }
        match self.backends.publish(deployment.id, &deployment.service, config).await {
            Ok(()) => outcome,
            Err(error) => Outcome::Failed(format!(
                "the deploy script succeeded but its deployed service was not published: {error}"
            )),
        }
    }

    /// Ends the deployment (unless finished already) and the run, freeing its slot;
    /// retries while the database is unreachable, gives up when the run was lost.
    pub async fn end(
        &self,
        id: DeploymentId,
        claim: &Claim,
        outcome: &Outcome,
        exit_code: Option<i64>,
    ) -> Option<deployments::Model> {
        let mut wait = Duration::from_millis(200);
        for attempt in 0..6 {
            match self.store.end_run(id, claim, outcome, exit_code).await {
                Ok(row) => return row,
                Err(Fenced::Lost) => {
                    tracing::warn!(%id, "the run was ended by another replica meanwhile; nothing written");
                    return None;
                }
                Err(error) => {
                    tracing::error!(%id, attempt, %error, "deployment not ended; retrying");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
            }
        }
        tracing::error!(
            %id,
            "deployment left running; its lease is no longer renewed, so a replica ends it shortly"
        );
        None
    }

    /// Revokes a run's deployment token, retrying a few times.
    pub async fn revoke(&self, token_id: &str) {
        for attempt in 0..3 {
            match self.backends.revoke_token(token_id).await {
                Ok(()) => return,
                Err(error) => {
                    tracing::warn!(token_id, attempt, %error, "deployment token not revoked; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        tracing::error!(token_id, "deployment token not revoked; it expires on its own");
    }
}

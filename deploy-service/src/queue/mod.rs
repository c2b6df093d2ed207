//! The queue: deployments wait in the database (`run_queue`, status `queued`) and are
//! started in order of acceptance, at most `max_running` at once and
//! `max_running_per_service` per service, over every replica that shares the
//! database: the database enforces both limits (`storage::claims`). A deployment of
//! another service may pass one whose service is at its limit. Each replica claims
//! runs when it accepts a deployment, when one of its runs ends, and every second;
//! runs it claims run here, under a lease it renews (`leases`). Because the queue is
//! the table, a restart loses nothing: at start, this replica's runs a previous
//! process left behind are ended (their scripts stopped if still there), then the
//! queue resumes (`recovery`).

mod leases;
mod recovery;
mod replica;

use std::{
    collections::HashMap,
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use sea_orm::DbErr;
use tokio::sync::{Mutex, Notify, mpsc, watch};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use crate::storage::Limits;
pub use replica::replica_id;

use crate::{
    model::{DeploymentId, Outcome},
    runner::{Run, Runner},
    storage::{Claim, NewDeployment, deployments, run_queue, steps},
};

/// How long a cancel waits for the script to be stopped and the deployment ended.
const CANCEL_WAIT: Duration = Duration::from_secs(20);
/// How often a replica looks for queued deployments it may start (others' runs end
/// without telling it).
const CLAIM_POLL: Duration = Duration::from_secs(1);
/// Most runs one claim takes (one transaction, one commit): enough that a burst is
/// claimed quickly, few enough that one replica does not take every free slot while
/// the others wait.
pub const CLAIM_BATCH: usize = 16;

/// A run in progress in this process.
struct RunHandle {
    fence: i64,
    cancel: mpsc::Sender<String>,
    /// A cancel made on another replica was passed on.
    cancel_passed: bool,
    lost: CancellationToken,
    /// The script has ended (see `Run::settled`).
    settled: Arc<AtomicBool>,
    done: watch::Receiver<bool>,
}

#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

struct Inner {
    runner: Runner,
    limits: Limits,
    /// Names this replica in the runs it claims.
    replica: String,
    runs: std::sync::Mutex<HashMap<DeploymentId, RunHandle>>,
    /// Held while claiming, so this process's claims do not queue up on the database.
    scheduling: Mutex<()>,
    wake: Notify,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Queue {
    pub fn new(runner: Runner, limits: Limits, replica: String, shutdown: CancellationToken) -> Queue {
        Queue {
            inner: Arc::new(Inner {
                runner,
                limits,
                replica,
                runs: std::sync::Mutex::new(HashMap::new()),
                scheduling: Mutex::new(()),
                wake: Notify::new(),
                shutdown,
                tasks: TaskTracker::new(),
            }),
        }
    }

    pub fn replica(&self) -> &str {
        &self.inner.replica
    }

    /// Starts the scheduling loop and the heartbeat (after recovery).
    fn start_loops(&self) {
        let queue = self.clone();
        self.inner.tasks.spawn(async move { queue.schedule_loop().await });
        let queue = self.clone();
        self.inner.tasks.spawn(async move { queue.lease_loop().await });
        self.inner.wake.notify_one();
    }

    async fn schedule_loop(&self) {
        let mut poll = tokio::time::interval(CLAIM_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = self.inner.shutdown.cancelled() => return,
                () = self.inner.wake.notified() => {}
                _ = poll.tick() => {}
            }
            if let Err(error) = self.schedule().await {
                tracing::error!(%error, "scheduling failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                self.inner.wake.notify_one();
            }
        }
    }

    /// Starts queued deployments while the limits allow.
    pub async fn schedule(&self) -> Result<(), DbErr> {
        let _deciding = self.inner.scheduling.lock().await;
        self.start_queued().await
    }

    /// Claims and starts queued deployments while the limits allow (the caller holds
    /// the scheduling lock).
    async fn start_queued(&self) -> Result<(), DbErr> {
        let store = self.inner.runner.store();
        while !self.inner.shutdown.is_cancelled() {
            let claimed = store
                .claim_batch(&self.inner.replica, self.inner.limits, CLAIM_BATCH)
                .await?;
            if claimed.is_empty() {
                break;
            }
            for (deployment, claim) in claimed {
                self.spawn_run(deployment, claim);
            }
        }
        Ok(())
    }

    /// Accepts a new deployment: the queued ones that may start go first; then the new
    /// one starts at once if the limits still allow and none of its service waits
    /// (stored running, so that it is announced once, already running), else it is
    /// queued. The deployment and its steps as accepted (queued, or running with its
    /// first step running), taken before its script starts: what the caller is
    /// answered, whatever the script reports a moment later.
    pub async fn accept(&self, new: NewDeployment) -> Result<(deployments::Model, Vec<steps::Model>), DbErr> {
        let _deciding = self.inner.scheduling.lock().await;
        let store = self.inner.runner.store();
        if self.inner.shutdown.is_cancelled() {
            return store.create_deployment(new).await;
        }
        self.start_queued().await?;
        let (deployment, steps, claim) = store.accept(new, &self.inner.replica, self.inner.limits).await?;
        if let Some(claim) = claim {
            self.spawn_run(deployment.clone(), claim);
        }
        Ok((deployment, steps))
    }

    fn spawn_run(&self, deployment: deployments::Model, claim: Claim) {
        let id = deployment.id;
        let (cancel_tx, cancel_rx) = mpsc::channel(4);
        let (done_tx, done_rx) = watch::channel(false);
        let lost = CancellationToken::new();
        let settled = Arc::new(AtomicBool::new(false));
        if let Ok(mut runs) = self.inner.runs.lock() {
            runs.insert(
                id,
                RunHandle {
                    fence: claim.fence,
                    cancel: cancel_tx,
                    cancel_passed: false,
                    lost: lost.clone(),
                    settled: settled.clone(),
                    done: done_rx,
                },
            );
        }
        let queue = self.clone();
        self.inner.tasks.spawn(async move {
            let runner = queue.inner.runner.clone();
            let run = Run {
                claim: claim.clone(),
                cancel: cancel_rx,
                lost,
                shutdown: queue.inner.shutdown.clone(),
                settled,
            };
            // The run in its own task, so that a panic in it still ends the deployment.
            let task = tokio::spawn(async move { runner.run(deployment, run).await });
            if let Err(error) = task.await {
                tracing::error!(%id, %error, "run task failed");
                let reason = Outcome::Failed("the deploy service's runner failed during the run".to_owned());
                queue.inner.runner.end(id, &claim, &reason, None).await;
            }
            if let Ok(mut runs) = queue.inner.runs.lock() {
                runs.remove(&id);
            }
            let _ = done_tx.send(true);
            queue.inner.wake.notify_one();
        });
    }

    /// Cancels a queued or running deployment on behalf of `by` and returns it ended;
    /// None when it was neither queued nor running. A run of another replica is
    /// asked to stop there (its owner sees the request at its next heartbeat).
    pub async fn cancel(&self, id: DeploymentId, by: &str) -> Result<Option<deployments::Model>, DbErr> {
        let store = self.inner.runner.store();
        let reason = Outcome::Cancelled(format!("cancelled by {by} before it started"));
        if let Some(ended) = store.end_deployment(id, &reason, None, true).await? {
            return Ok(Some(ended));
        }
        let local = self
            .inner
            .runs
            .lock()
            .ok()
            .and_then(|runs| runs.get(&id).map(|run| (run.cancel.clone(), run.done.clone())));
        if let Some((cancel, mut done)) = local {
            let _ = cancel.try_send(by.to_owned());
            if tokio::time::timeout(CANCEL_WAIT, done.wait_for(|done| *done))
                .await
                .is_err()
            {
                tracing::warn!(%id, "cancel still in progress");
            }
            return store.get_deployment(id).await;
        }
        if store.request_cancel(id, by).await?.is_none() {
            return Ok(None);
        }
        // Until the owner has stopped the script and ended the run (or, if the owner
        // is gone, a sweep has).
        let deadline = tokio::time::Instant::now() + CANCEL_WAIT;
        while store.run_row(id).await?.is_some() {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(%id, "cancel still in progress on the replica that runs it");
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        store.get_deployment(id).await
    }

    /// Whether the deployment's script may still be running, here or on another
    /// replica (a finished deployment's script may still run: finished by the script
    /// itself).
    pub async fn script_running(&self, id: DeploymentId) -> Result<bool, DbErr> {
        if self.inner.runs.lock().is_ok_and(|runs| runs.contains_key(&id)) {
            return Ok(true);
        }
        let row = self.inner.runner.store().run_row(id).await?;
        Ok(row.is_some_and(|row| row.state == run_queue::RUNNING))
    }

    /// Waits for the runs (stopped by the shutdown token) to end, at most `limit`.
    pub async fn drain(&self, limit: Duration) {
        self.inner.tasks.close();
        if tokio::time::timeout(limit, self.inner.tasks.wait()).await.is_err() {
            tracing::warn!("runs still ending at shutdown");
        }
    }
}

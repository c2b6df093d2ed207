//! The queue: deployments wait in the database (status `queued`) and are started in
//! order of acceptance, at most `max_running` at once and `max_running_per_service`
//! per service. A deployment of another service may pass one whose service is at
//! its limit. Because the queue is the table, a restart loses nothing: at start,
//! runs a previous process left behind are ended (their scripts stopped if still
//! there), then the queue resumes.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use sea_orm::DbErr;
use tokio::sync::{Mutex, Notify, mpsc, watch};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::model::DeploymentId;
use crate::{
    model::{Outcome, Status},
    runner::{self, Runner},
    storage::{NewDeployment, deployments, steps},
};

/// More deployments than can ever be running at once.
const ALL: u64 = 1_000_000;
/// How long a cancel waits for the script to be stopped and the deployment ended.
const CANCEL_WAIT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_running: u32,
    pub max_running_per_service: u32,
}

/// A run in progress in this process.
#[derive(Clone)]
struct RunHandle {
    service: String,
    /// Set until the run's script has ended (its deployment may be finished before).
    script_running: Arc<AtomicBool>,
    cancel: mpsc::Sender<String>,
    done: watch::Receiver<bool>,
}

#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

struct Inner {
    runner: Runner,
    limits: Limits,
    /// Names this process in the rows of the runs it starts.
    runner_id: String,
    runs: std::sync::Mutex<HashMap<DeploymentId, RunHandle>>,
    /// Held while deciding what to start, so two decisions never overlap.
    scheduling: Mutex<()>,
    wake: Notify,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Queue {
    pub fn new(runner: Runner, limits: Limits, shutdown: CancellationToken) -> Queue {
        Queue {
            inner: Arc::new(Inner {
                runner,
                limits,
                runner_id: uuid::Uuid::new_v4().to_string(),
                runs: std::sync::Mutex::new(HashMap::new()),
                scheduling: Mutex::new(()),
                wake: Notify::new(),
                shutdown,
                tasks: TaskTracker::new(),
            }),
        }
    }

    /// Ends the runs a previous deploy-service process left behind and removes the
    /// config files it left; then starts the scheduling loop.
    pub async fn recover(&self, runs_dir: &std::path::Path) -> Result<(), DbErr> {
        match runner::scrub_dir(runs_dir) {
            Ok(0) => {}
            Ok(n) => tracing::warn!(files = n, "config files of interrupted runs removed"),
            Err(error) => tracing::error!(%error, "cannot clean the config file directory"),
        }
        let runner = &self.inner.runner;
        for deployment in runner.store().deployments_in(Status::Running, ALL).await? {
            let pid = deployment.pid.and_then(|p| i32::try_from(p).ok());
            let stopped = match pid {
                Some(pid) => runner::stop_orphan(pid, deployment.process_start, Duration::from_secs(3)).await,
                None => false,
            };
            let reason = match (pid, stopped) {
                (_, true) => "the deploy service restarted during the run; the deploy script was stopped",
                (Some(_), false) => "the deploy service stopped during the run; the deploy script is gone",
                (None, false) => "the deploy service stopped before the deploy script started",
            };
            tracing::warn!(id = %deployment.id, service = %deployment.service, reason, "interrupted run ended");
            runner.end(deployment.id, &Outcome::Failed(reason.into()), None).await;
            if let Some(token_id) = deployment.token_id {
                // The auth service may still be starting: revoke in the background.
                let runner = runner.clone();
                self.inner.tasks.spawn(async move { runner.revoke(&token_id).await });
            }
        }
        let queue = self.clone();
        self.inner.tasks.spawn(async move { queue.schedule_loop().await });
        self.inner.wake.notify_one();
        Ok(())
    }

    async fn schedule_loop(&self) {
        loop {
            tokio::select! {
                () = self.inner.shutdown.cancelled() => return,
                () = self.inner.wake.notified() => {}
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
        if self.inner.shutdown.is_cancelled() {
            return Ok(());
        }
        let _deciding = self.inner.scheduling.lock().await;
        self.start_queued().await?;
        Ok(())
    }

    /// Accepts a new deployment: the queued ones that may start go first; then the new
    /// one starts at once if the limits still allow (stored running, so that it is
    /// announced once, already running), else it is queued.
    /// The deployment and its steps as accepted (queued, or running with its first
    /// step running), taken before its script starts: what the caller is answered,
    /// whatever the script reports a moment later.
    pub async fn accept(&self, new: NewDeployment) -> Result<(deployments::Model, Vec<steps::Model>), DbErr> {
        let _deciding = self.inner.scheduling.lock().await;
        let store = self.inner.runner.store();
        if self.inner.shutdown.is_cancelled() {
            return store.create_deployment(new).await;
        }
        let running = self.start_queued().await?;
        let total: u32 = running.values().sum();
        let of_service = running.get(&new.service).copied().unwrap_or(0);
        if total >= self.inner.limits.max_running || of_service >= self.inner.limits.max_running_per_service {
            return store.create_deployment(new).await;
        }
        let (deployment, steps) = store.create_running(new, &self.inner.runner_id).await?;
        self.spawn_run(deployment.clone());
        Ok((deployment, steps))
    }

    /// Starts queued deployments while the limits allow (the caller holds the
    /// scheduling lock). Returns how many run per service now. A run counts until its
    /// script has ended, even when its deployment was finished before (by
    /// `FinishDeployment`).
    async fn start_queued(&self) -> Result<HashMap<String, u32>, DbErr> {
        let store = self.inner.runner.store();
        let running = store.deployments_in(Status::Running, ALL).await?;
        let mut per_service: HashMap<String, u32> = HashMap::new();
        let mut total = 0;
        let mut count = |service: &str| {
            *per_service.entry(service.to_owned()).or_default() += 1;
            total += 1;
        };
        let here: Vec<(DeploymentId, String)> = match self.inner.runs.lock() {
            Ok(runs) => runs
                .iter()
                .filter(|(_, run)| run.script_running.load(Ordering::SeqCst))
                .map(|(id, run)| (*id, run.service.clone()))
                .collect(),
            Err(_) => Vec::new(),
        };
        for (_, service) in &here {
            count(service);
        }
        for d in running.iter().filter(|d| !here.iter().any(|(id, _)| *id == d.id)) {
            count(&d.service);
        }
        let max = self.inner.limits.max_running as usize;
        if total >= max {
            return Ok(per_service);
        }
        for queued in store.deployments_in(Status::Queued, 10_000).await? {
            if total >= max {
                break;
            }
            let count = per_service.entry(queued.service.clone()).or_default();
            if *count >= self.inner.limits.max_running_per_service {
                continue;
            }
            if let Some(started) = store.start_run(queued.id, &self.inner.runner_id).await? {
                *count += 1;
                total += 1;
                self.spawn_run(started);
            }
        }
        Ok(per_service)
    }

    fn spawn_run(&self, deployment: deployments::Model) {
        let id = deployment.id;
        let (cancel_tx, cancel_rx) = mpsc::channel(4);
        let (done_tx, done_rx) = watch::channel(false);
        let script_running = Arc::new(AtomicBool::new(true));
        if let Ok(mut runs) = self.inner.runs.lock() {
            runs.insert(
                id,
                RunHandle {
                    service: deployment.service.clone(),
                    script_running: script_running.clone(),
                    cancel: cancel_tx,
                    done: done_rx,
                },
            );
        }
        let queue = self.clone();
        self.inner.tasks.spawn(async move {
            let runner = queue.inner.runner.clone();
            let shutdown = queue.inner.shutdown.clone();
            // The run in its own task, so that a panic in it still ends the deployment.
            let run = tokio::spawn(async move { runner.run(deployment, cancel_rx, shutdown, &script_running).await });
            if let Err(error) = run.await {
                tracing::error!(%id, %error, "run task failed");
                let reason = "the deploy service's runner failed during the run".to_owned();
                queue.inner.runner.end(id, &Outcome::Failed(reason), None).await;
            }
            if let Ok(mut runs) = queue.inner.runs.lock() {
                runs.remove(&id);
            }
            let _ = done_tx.send(true);
            queue.inner.wake.notify_one();
        });
    }

    /// Cancels a queued or running deployment on behalf of `by` and returns it ended;
    /// None when it was neither queued nor running here.
    pub async fn cancel(&self, id: DeploymentId, by: &str) -> Result<Option<deployments::Model>, DbErr> {
        let handle = {
            let _deciding = self.inner.scheduling.lock().await;
            let reason = Outcome::Cancelled(format!("cancelled by {by} before it started"));
            let store = self.inner.runner.store();
            if let Some(ended) = store.end_deployment(id, &reason, None, true).await? {
                return Ok(Some(ended));
            }
            self.inner.runs.lock().ok().and_then(|runs| runs.get(&id).cloned())
        };
        let Some(mut handle) = handle else { return Ok(None) };
        let _ = handle.cancel.try_send(by.to_owned());
        if tokio::time::timeout(CANCEL_WAIT, handle.done.wait_for(|done| *done))
            .await
            .is_err()
        {
            tracing::warn!(%id, "cancel still in progress");
        }
        self.inner.runner.store().get_deployment(id).await
    }

    /// Whether this process runs the deployment.
    pub fn runs_here(&self, id: DeploymentId) -> bool {
        self.inner.runs.lock().is_ok_and(|runs| runs.contains_key(&id))
    }

    /// Waits for the runs (stopped by the shutdown token) to end, at most `limit`.
    pub async fn drain(&self, limit: Duration) {
        self.inner.tasks.close();
        if tokio::time::timeout(limit, self.inner.tasks.wait()).await.is_err() {
            tracing::warn!("runs still ending at shutdown");
        }
    }
}

//! Deployments claimed per second by several deploy-service replicas sharing one
//! PostgreSQL queue (issue 15, item 10), measured at the storage level: `replicas`
//! `Store`s, each with its own connection pool and writer lock as separate processes
//! have, claim from a queue filled beforehand, with the limits in force. Either the
//! runs are left running (the claims alone: every deployment of its own service and
//! the global limit above the load, so nothing waits for a run to end), or each run
//! is ended as soon as it is claimed, as a runner whose script exits at once would
//! (the queue's turn-over: a service's next deployment is claimed only after its
//! previous run ended). No script, no gRPC.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use deploy_service::{
    model::{Outcome, ServiceId},
    storage::{Limits, NewDeployment, Store},
};
use serde_json::json;

/// What happens to a claimed run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runs {
    /// Left running: only claims are measured.
    KeepRunning,
    /// Ended at once (exit 0), in a task of its own as the runner does.
    EndAtOnce,
}

/// What one measurement did.
#[derive(Debug)]
pub struct ClaimRate {
    pub claimed: usize,
    /// Claim transactions that started at least one run.
    pub batches: usize,
    pub elapsed: Duration,
}

impl ClaimRate {
    pub fn per_second(&self) -> f64 {
        self.claimed as f64 / self.elapsed.as_secs_f64().max(1e-6)
    }
}

/// Queues `deployments` over `services` in the database at `url`, then lets
/// `replicas` stores claim them all (at most `batch` per transaction), doing `runs`
/// with each run; the time is from the first claim to the last claim (or end).
#[allow(clippy::too_many_arguments)]
pub async fn measure(
    url: &str,
    replicas: usize,
    deployments: usize,
    services: usize,
    batch: usize,
    limits: Limits,
    runs: Runs,
) -> anyhow::Result<ClaimRate> {
    let seed = Store::open(url).await?;
    for i in 0..deployments {
        let service = format!("svc-{:03}", i % services.max(1));
        seed.create_deployment(NewDeployment {
            service_id: ServiceId(1),
            deploy_script: format!("{service}/deploy.sh"),
            service,
            origin: "bench".into(),
            user: "bench".into(),
            context: json!({"env": {}}),
            timeout_secs: 60,
            steps: vec!["build".into()],
        })
        .await?;
    }
    let mut stores = Vec::with_capacity(replicas);
    for _ in 0..replicas {
        stores.push(Store::open(url).await?);
    }
    let claimed = Arc::new(AtomicUsize::new(0));
    let ended = Arc::new(AtomicUsize::new(0));
    let batches = Arc::new(AtomicUsize::new(0));
    let done = match runs {
        Runs::KeepRunning => claimed.clone(),
        Runs::EndAtOnce => ended.clone(),
    };
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (r, store) in stores.into_iter().enumerate() {
        let (claimed, ended, batches, done) = (claimed.clone(), ended.clone(), batches.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let owner = format!("bench-replica-{r}");
            let mut ending = tokio::task::JoinSet::new();
            while done.load(Ordering::SeqCst) < deployments {
                let got = store.claim_batch(&owner, limits, batch).await?;
                if got.is_empty() {
                    // Nothing may start until runs end (here or on another replica).
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                batches.fetch_add(1, Ordering::SeqCst);
                claimed.fetch_add(got.len(), Ordering::SeqCst);
                if runs == Runs::KeepRunning {
                    continue;
                }
                for (deployment, claim) in got {
                    let (store, ended) = (store.clone(), ended.clone());
                    ending.spawn(async move {
                        store
                            .end_run(deployment.id, &claim, &Outcome::Exited, Some(0))
                            .await
                            .map_err(|e| anyhow::anyhow!("ending run {}: {e}", deployment.id))?;
                        ended.fetch_add(1, Ordering::SeqCst);
                        anyhow::Ok(())
                    });
                }
                while let Some(result) = ending.try_join_next() {
                    result??;
                }
            }
            while let Some(result) = ending.join_next().await {
                result??;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(ClaimRate {
        claimed: claimed.load(Ordering::SeqCst),
        batches: batches.load(Ordering::SeqCst),
        elapsed: started.elapsed(),
    })
}

//! Leases: every `HEARTBEAT` this replica renews the leases of the runs it runs (one
//! UPDATE), passes on cancels asked for on other replicas, and stops runs it turns
//! out to have lost; then it sweeps: running rows of any replica whose lease expired
//! (their replica died, or lost the database for longer than a lease) are ended
//! failed ("the runner was lost"), their tokens revoked and their slots freed. Runs
//! are never started again automatically.

use std::{collections::HashSet, sync::atomic::Ordering};

use super::Queue;
use crate::{
    model::DeploymentId,
    storage::{HEARTBEAT, RUNNER_LOST},
};

impl Queue {
    pub(super) async fn lease_loop(&self) {
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = self.inner.shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.heartbeat().await;
            self.sweep().await;
        }
    }

    /// Renews this replica's leases; passes on cancels; stops the runs it lost.
    async fn heartbeat(&self) {
        let local: Vec<(DeploymentId, i64, bool)> = match self.inner.runs.lock() {
            Ok(runs) => runs
                .iter()
                .map(|(id, run)| (*id, run.fence, run.settled.load(Ordering::SeqCst)))
                .collect(),
            Err(_) => return,
        };
        if local.is_empty() {
            return;
        }
        let ids: Vec<DeploymentId> = local.iter().map(|(id, _, _)| *id).collect();
        let store = self.inner.runner.store();
        let renewed = match store.renew(&self.inner.replica, &ids).await {
            Ok(rows) => rows,
            Err(error) => {
                tracing::warn!(%error, runs = ids.len(), "leases not renewed");
                return;
            }
        };
        let held: HashSet<(DeploymentId, i64)> = renewed.iter().map(|r| (r.deployment_id, r.fence)).collect();
        for row in renewed.iter().filter(|r| r.cancel_by.is_some()) {
            let Ok(mut runs) = self.inner.runs.lock() else { return };
            if let (Some(run), Some(by)) = (runs.get_mut(&row.deployment_id), &row.cancel_by)
                && !run.cancel_passed
            {
                run.cancel_passed = run.cancel.try_send(by.clone()).is_ok();
            }
        }
        // Not renewed: lost, or ended meanwhile by its own runner (a run whose script
        // has ended is being ended: its row may go at any moment).
        for (id, fence, _) in local
            .into_iter()
            .filter(|(id, fence, settled)| !settled && !held.contains(&(*id, *fence)))
        {
            let lost = match store.run_row(id).await {
                Ok(row) => !row.is_some_and(|r| r.fence == fence && r.owner.as_deref() == Some(self.replica())),
                Err(error) => {
                    tracing::warn!(%id, %error, "cannot check a run that was not renewed");
                    false
                }
            };
            if lost
                && let Ok(runs) = self.inner.runs.lock()
                && let Some(run) = runs.get(&id)
                && !run.settled.load(Ordering::SeqCst)
            {
                tracing::warn!(%id, "the run was ended by another replica; stopping its script");
                run.lost.cancel();
            }
        }
    }

    /// Ends the runs whose lease expired (other replicas' runs, and this replica's
    /// own that it no longer runs).
    async fn sweep(&self) {
        let store = self.inner.runner.store();
        let expired = match store.expired_runs().await {
            Ok(rows) => rows,
            Err(error) => {
                tracing::warn!(%error, "expired leases not read");
                return;
            }
        };
        let mut freed = false;
        for row in expired {
            let here = self
                .inner
                .runs
                .lock()
                .is_ok_and(|runs| runs.contains_key(&row.deployment_id));
            if here {
                continue;
            }
            match store.end_orphaned(&row, RUNNER_LOST, true).await {
                Ok(Some(deployment)) => {
                    freed = true;
                    tracing::warn!(
                        id = %deployment.id,
                        service = %deployment.service,
                        owner = row.owner.as_deref().unwrap_or(""),
                        "run of a lost replica ended"
                    );
                    if let Some(token_id) = deployment.token_id {
                        let runner = self.inner.runner.clone();
                        self.inner.tasks.spawn(async move { runner.revoke(&token_id).await });
                    }
                }
                Ok(None) => {}
                Err(error) => tracing::warn!(id = %row.deployment_id, %error, "expired run not ended"),
            }
        }
        if freed {
            self.inner.wake.notify_one();
        }
    }
}

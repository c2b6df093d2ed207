//! Retention: finished deployments (with their steps, events and output) are kept
//! `keep_days` days, and at least the newest `keep_per_service` of each service, and
//! always each service's last successful deployment (the step plan of the next run
//! reads its steps). The events of the old deployments it keeps are compacted to
//! the last event of the deployment and of each step. A background task prunes the
//! rest every `interval`, a small
//! batch per transaction with a pause between batches, so requests and runs never
//! wait long behind it. A failed pass is logged and tried again at the next interval.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::{
    model::{DeploymentId, now},
    storage::Store,
};

/// Pause between two batches of a pass.
const PAUSE: Duration = Duration::from_millis(20);

#[derive(Debug, Clone, Copy)]
pub struct RetentionPolicy {
    /// Days a finished deployment is kept (0: for ever, no pruning).
    pub keep_days: u32,
    /// The newest this many deployments of each service are kept, however old.
    pub keep_per_service: u32,
    /// Deployments removed per transaction.
    pub batch: u32,
    pub interval: Duration,
}

/// What one pass removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub deployments: u64,
    /// Events of kept old deployments removed by compaction.
    pub events_compacted: u64,
    pub batches: u32,
}

/// Runs passes until `shutdown`; nothing when the policy keeps everything.
pub fn start(store: Store, policy: RetentionPolicy, shutdown: CancellationToken) {
    if policy.keep_days == 0 {
        tracing::info!("retention off: deployments are kept for ever");
        return;
    }
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(policy.interval) => {}
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                pass = prune_once(&store, policy) => match pass {
                    Ok(pass) if pass.deployments > 0 || pass.events_compacted > 0 => {
                        tracing::info!(
                            deployments = pass.deployments,
                            events_compacted = pass.events_compacted,
                            batches = pass.batches,
                            "retention pass"
                        );
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "retention pass failed; tried again later"),
                },
            }
        }
    });
}

/// One pass over the deployments, oldest first.
pub async fn prune_once(store: &Store, policy: RetentionPolicy) -> Result<Pass, sea_orm::DbErr> {
    let cutoff = now() - chrono::Duration::days(i64::from(policy.keep_days));
    let mut pass = Pass::default();
    let mut after = DeploymentId(0);
    loop {
        let ids = store
            .prunable(after, cutoff, policy.keep_per_service, policy.batch.max(1))
            .await?;
        let Some(last) = ids.last() else { break };
        after = *last;
        pass.deployments += store.prune(&ids).await?;
        pass.batches += 1;
        tokio::time::sleep(PAUSE).await;
    }
    // The old deployments the policy keeps: their events compacted to the last of
    // the deployment and of each step.
    let mut after = DeploymentId(0);
    loop {
        let ids = store.compactable(after, cutoff, policy.batch.max(1)).await?;
        let Some(last) = ids.last() else { return Ok(pass) };
        after = *last;
        pass.events_compacted += store.compact_events(&ids).await?;
        pass.batches += 1;
        tokio::time::sleep(PAUSE).await;
    }
}

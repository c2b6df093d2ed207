//! Recovery at start: this replica's runs that a previous process (same replica id,
//! same data dir) left running are ended, their scripts stopped if still there and
//! their tokens revoked; scripts of runs that other replicas ended meanwhile (the
//! previous process's lease expired) are stopped too, found by the config files left
//! in the runs directory. Other replicas' runs are left alone: their owners renew
//! them, or a sweep ends them.

use std::{collections::HashSet, path::Path, time::Duration};

use sea_orm::DbErr;

use super::Queue;
use crate::runner;

/// How long an orphaned script gets between SIGTERM and SIGKILL.
const ORPHAN_GRACE: Duration = Duration::from_secs(3);

impl Queue {
    /// Ends the runs a previous process of this replica left behind, stops their
    /// scripts and removes the config files it left; then starts the scheduling
    /// loop and the heartbeat.
    pub async fn recover(&self, runs_dir: &Path) -> Result<(), DbErr> {
        let left = runner::run_file_ids(runs_dir).unwrap_or_else(|error| {
            tracing::error!(%error, "cannot read the config file directory");
            Vec::new()
        });
        let runner = &self.inner.runner;
        let store = runner.store();
        let mut handled = HashSet::new();
        for row in store.own_runs(&self.inner.replica).await? {
            handled.insert(row.deployment_id);
            let deployment = store.get_deployment(row.deployment_id).await?;
            let process = deployment
                .as_ref()
                .and_then(|d| Some((i32::try_from(d.pid?).ok()?, d.process_start)));
            let stopped = match process {
                Some((pid, start)) => runner::stop_orphan(pid, start, ORPHAN_GRACE).await,
                None => false,
            };
            let reason = match (process, stopped) {
                (_, true) => "the deploy service restarted during the run; the deploy script was stopped",
                (Some(_), false) => "the deploy service stopped during the run; the deploy script is gone",
                (None, false) => "the deploy service stopped before the deploy script started",
            };
            if let Some(ended) = store.end_orphaned(&row, reason, false).await? {
                tracing::warn!(id = %ended.id, service = %ended.service, reason, "interrupted run ended");
                if let Some(token_id) = ended.token_id {
                    // The auth service may still be starting: revoke in the background.
                    let runner = runner.clone();
                    self.inner.tasks.spawn(async move { runner.revoke(&token_id).await });
                }
            }
        }
        // Runs of this replica that another one ended while this one was gone: their
        // scripts may still run here.
        for id in left.into_iter().filter(|id| !handled.contains(id)) {
            let Some(deployment) = store.get_deployment(id).await? else {
                continue;
            };
            let Some(pid) = deployment.pid.and_then(|p| i32::try_from(p).ok()) else {
                continue;
            };
            if runner::stop_orphan(pid, deployment.process_start, ORPHAN_GRACE).await {
                tracing::warn!(%id, service = %deployment.service, pid, "orphaned deploy script of a run ended elsewhere stopped");
            }
        }
        match runner::scrub_dir(runs_dir) {
            Ok(0) => {}
            Ok(n) => tracing::warn!(files = n, "config files of interrupted runs removed"),
            Err(error) => tracing::error!(%error, "cannot clean the config file directory"),
        }
        self.start_loops();
        Ok(())
    }
}

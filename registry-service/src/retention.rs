//! Retention of service events: watchers resume from a recent sequence, so the
//! `service_events` table keeps [`KEEP`] of them and at most [`KEEP_ROWS`]; a
//! background task prunes the rest every [`INTERVAL`] (any replica may: deleting
//! rows already gone deletes nothing).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::storage::Store;

/// How long a service event is kept.
pub const KEEP: chrono::Duration = chrono::Duration::days(1);
/// How many service events are kept at most.
pub const KEEP_ROWS: u64 = 10_000;
/// Time between two passes.
pub const INTERVAL: Duration = Duration::from_secs(600);

/// Prunes every [`INTERVAL`] until `shutdown`.
pub fn start(store: Store, shutdown: CancellationToken) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(INTERVAL) => {}
            }
            match store.prune_service_events(KEEP, KEEP_ROWS).await {
                Ok(0) => {}
                Ok(removed) => tracing::info!(removed, "old service events pruned"),
                Err(error) => tracing::warn!(%error, "pruning service events failed; tried again later"),
            }
        }
    });
}

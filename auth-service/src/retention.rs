//! Retention of the token registry, in the background: every `interval`, token
//! records expired more than `keep_days` ago are removed, and revocations of tokens
//! that have expired (they left the revocation set already), a small batch per
//! statement with a pause between, so requests never wait long behind it.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::storage::{Store, StoreError};

const BATCH: u64 = 500;
const PAUSE: Duration = Duration::from_millis(20);

#[derive(Debug, Clone, Copy)]
pub struct TokenRetention {
    /// Days a token record is kept after it expired (0: for ever).
    pub keep_days: u32,
    pub interval: Duration,
}

/// What one pass removed: (token records, revocations).
pub async fn prune_once(store: &Store, policy: TokenRetention) -> Result<(u64, u64), StoreError> {
    let now = chrono::Utc::now();
    let mut tokens = 0;
    if policy.keep_days > 0 {
        let before = now - chrono::Duration::days(i64::from(policy.keep_days));
        loop {
            let gone = store.prune_tokens(before, BATCH).await?;
            tokens += gone;
            if gone < BATCH {
                break;
            }
            tokio::time::sleep(PAUSE).await;
        }
    }
    let leeway = chrono::Duration::seconds(common::token::LEEWAY_SECS as i64);
    let mut revocations = 0;
    loop {
        let gone = store.prune_revocations(now - leeway, BATCH).await?;
        revocations += gone;
        if gone < BATCH {
            break;
        }
        tokio::time::sleep(PAUSE).await;
    }
    Ok((tokens, revocations))
}

/// Runs passes until `shutdown`.
pub fn start(store: Store, policy: TokenRetention, shutdown: CancellationToken) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(policy.interval) => {}
            }
            match prune_once(&store, policy).await {
                Ok((0, 0)) => {}
                Ok((tokens, revocations)) => tracing::info!(tokens, revocations, "token retention pass"),
                Err(error) => tracing::warn!(%error, "token retention pass failed; tried again later"),
            }
        }
    });
}

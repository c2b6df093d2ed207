//! The revocation set in memory: every revoked token id whose token may still verify,
//! so checking a token costs no database query.
//!
//! The set follows the `revocations` log by sequence number (see `storage::registry`:
//! revocations commit in the order of their numbers, so a reader that has seen N has
//! seen every committed revocation below N). It is read in full at start, read again
//! right after this replica's own revocations commit (so they count on the very next
//! call), and whenever `follow` learns of revocations made by another replica. Each
//! advance is announced to the revocation feeds of this replica ([`RevokedSet::subscribe`]).
//! If the log cannot be read for [`MAX_STALE`], the set is not trusted: each check
//! reads the log again first, and fails (the caller refuses) while the database
//! cannot be read.

use std::{
    collections::HashMap,
    sync::RwLock,
    time::{Duration, Instant},
};

use common::token::LEEWAY_SECS;

use crate::storage::{Store, StoreError};

/// How long the set is trusted after the log was last read.
pub const MAX_STALE: Duration = Duration::from_secs(5);
/// How often ids whose tokens are past `exp` + leeway are dropped.
const PRUNE_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct RevokedSet {
    store: Store,
    state: RwLock<State>,
    /// One reader of the log at a time.
    reading: tokio::sync::Mutex<()>,
    /// The highest sequence number applied, for the feeds to wake on.
    changes: tokio::sync::watch::Sender<i64>,
}

#[derive(Debug, Default)]
struct State {
    /// Revoked id → its token's `exp` (seconds).
    ids: HashMap<String, i64>,
    /// The highest sequence number applied.
    sequence: i64,
    /// When the log was last read successfully (`None`: not trusted).
    read_at: Option<Instant>,
    pruned_at: Option<Instant>,
}

impl RevokedSet {
    /// The set as the log has it now.
    pub async fn load(store: Store) -> Result<Self, StoreError> {
        let set = RevokedSet {
            store,
            state: RwLock::new(State::default()),
            reading: tokio::sync::Mutex::new(()),
            changes: tokio::sync::watch::Sender::new(0),
        };
        set.catch_up().await?;
        Ok(set)
    }

    /// Whether `jti` is revoked: from memory while the set is fresh, else after
    /// reading the log again.
    pub async fn is_revoked(&self, jti: &str) -> Result<bool, StoreError> {
        if let Some(revoked) = self.lookup(jti) {
            return Ok(revoked);
        }
        self.catch_up().await?;
        Ok(self.lookup(jti).unwrap_or(false))
    }

    /// The answer from memory, or `None` when the set is stale.
    fn lookup(&self, jti: &str) -> Option<bool> {
        let state = read(&self.state);
        let fresh = state.read_at.is_some_and(|t| t.elapsed() <= MAX_STALE);
        fresh.then(|| state.ids.contains_key(jti))
    }

    /// Reads the revocations committed since the last one seen and applies them.
    pub async fn catch_up(&self) -> Result<(), StoreError> {
        let _reading = self.reading.lock().await;
        let after = read(&self.state).sequence;
        let rows = self.store.revocations_after(after).await?;
        let mut state = write(&self.state);
        for row in rows {
            state.ids.insert(row.token_id, row.expires_at.timestamp());
            state.sequence = state.sequence.max(row.seq);
        }
        let now = Instant::now();
        if state.pruned_at.is_none_or(|t| now.duration_since(t) >= PRUNE_INTERVAL) {
            let horizon = chrono::Utc::now().timestamp() - LEEWAY_SECS as i64;
            state.ids.retain(|_, exp| *exp >= horizon);
            state.pruned_at = Some(now);
        }
        state.read_at = Some(now);
        let sequence = state.sequence;
        drop(state);
        self.changes.send_if_modified(|seen| {
            let advanced = sequence > *seen;
            *seen = sequence.max(*seen);
            advanced
        });
        Ok(())
    }

    /// The highest sequence number applied, changing as the log is read.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<i64> {
        self.changes.subscribe()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// After this replica revoked tokens (committed): reads them in at once, so the
    /// next call already refuses them. Should the log not be readable, the set is
    /// marked stale, so checks read the log (or fail) until it is.
    pub async fn after_revoking(&self) {
        if let Err(error) = self.catch_up().await {
            tracing::error!(%error, "cannot read the revocations just made; checks go to the database");
            write(&self.state).read_at = None;
        }
    }

    /// How many revoked ids are held (for tests and logs).
    pub fn len(&self) -> usize {
        read(&self.state).ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn read(lock: &RwLock<State>) -> std::sync::RwLockReadGuard<'_, State> {
    lock.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write(lock: &RwLock<State>) -> std::sync::RwLockWriteGuard<'_, State> {
    lock.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&common::db::sqlite_url(dir.path(), "auth.db"))
            .await
            .unwrap();
        (dir, store)
    }

    fn token(id: &str, exp_in: i64) -> crate::storage::tokens::Model {
        let now = chrono::Utc::now();
        crate::storage::tokens::Model {
            id: id.into(),
            token_type: "user".into(),
            name: "t".into(),
            subject: "user:a".into(),
            service: None,
            origin: None,
            permissions: None,
            created_by: "a".into(),
            created_at: now,
            expires_at: now + chrono::Duration::seconds(exp_in),
            revoked_at: None,
            parent_id: None,
            deployment_id: None,
        }
    }

    #[tokio::test]
    async fn follows_the_log_from_another_store_handle() {
        let (_dir, store) = store().await;
        store.record_token(token("old", 600)).await.unwrap();
        store.revoke_tokens(&["old".into()]).await.unwrap();
        let set = RevokedSet::load(store.clone()).await.unwrap();
        assert!(set.is_revoked("old").await.unwrap(), "loaded at start");
        assert!(!set.is_revoked("new").await.unwrap());

        // Revoked behind the set's back (as another replica would): seen after a read.
        store.record_token(token("new", 600)).await.unwrap();
        store.revoke_tokens(&["new".into()]).await.unwrap();
        assert!(!set.is_revoked("new").await.unwrap(), "not yet read");
        set.catch_up().await.unwrap();
        assert!(set.is_revoked("new").await.unwrap());
        assert_eq!(set.len(), 2);
    }

    #[tokio::test]
    async fn a_stale_set_reads_the_log_before_answering() {
        let (_dir, store) = store().await;
        let set = RevokedSet::load(store.clone()).await.unwrap();
        store.record_token(token("t", 600)).await.unwrap();
        store.revoke_tokens(&["t".into()]).await.unwrap();
        write(&set.state).read_at = Instant::now().checked_sub(MAX_STALE + Duration::from_secs(1));
        assert!(set.is_revoked("t").await.unwrap());
    }
}

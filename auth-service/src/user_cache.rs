//! Who exists and is enabled, in memory, so an authenticated call costs no database
//! query for its user. Entries (a user, or the fact there is none) are dropped when
//! this replica creates, disables, enables or deletes the user or changes their
//! password, and are kept at most [`TTL`] (another replica's changes count here within
//! that long; its revocations, which come with every disable, delete and password
//! change, sooner: see `revoked`). Checks that close a race with a concurrent disable
//! (a token recorded, then its owner checked) read the database, not this.
//!
//! A read that started before an invalidation never stores what it read: each
//! invalidation bumps a generation, and a result is kept only when the generation is
//! the one seen before the database was read.

use std::{
    collections::HashMap,
    sync::{
        RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use sea_orm::prelude::DateTimeUtc;

use crate::storage::users;

/// How long an entry is trusted.
pub const TTL: Duration = Duration::from_secs(1);
/// Most users held; past it, expired entries go, and if none has, all of them.
pub const MAX_ENTRIES: usize = 10_000;

/// A user as the cache holds it: no password hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: i64,
    pub name: String,
    pub disabled_at: Option<DateTimeUtc>,
    pub disabled_by: Option<String>,
    pub created_at: DateTimeUtc,
}

impl Account {
    pub fn is_enabled(&self) -> bool {
        self.disabled_at.is_none()
    }
}

impl From<&users::Model> for Account {
    fn from(user: &users::Model) -> Self {
        Account {
            id: user.id,
            name: user.name.clone(),
            disabled_at: user.disabled_at,
            disabled_by: user.disabled_by.clone(),
            created_at: user.created_at,
        }
    }
}

#[derive(Debug)]
struct Entry {
    account: Option<Account>,
    at: Instant,
}

#[derive(Debug, Default)]
pub struct UserCache {
    entries: RwLock<HashMap<String, Entry>>,
    generation: AtomicU64,
}

impl UserCache {
    /// `Some(answer)` when `name` is cached (`answer` is `None` for no such user).
    pub fn get(&self, name: &str) -> Option<Option<Account>> {
        let entries = self.entries.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        entries
            .get(name)
            .filter(|e| e.at.elapsed() < TTL)
            .map(|e| e.account.clone())
    }

    /// The generation to pass to [`UserCache::put`], read before the database is.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Keeps what the database said of `name`, unless the user changed since
    /// `generation` was read.
    pub fn put(&self, name: &str, account: Option<Account>, generation: u64) {
        let mut entries = self.entries.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(name) {
            entries.retain(|_, e| e.at.elapsed() < TTL);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(
            name.to_owned(),
            Entry {
                account,
                at: Instant::now(),
            },
        );
    }

    /// Forgets `name`: the user changed.
    pub fn invalidate(&self, name: &str) {
        let mut entries = self.entries.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Account {
        Account {
            id: 1,
            name: "alice".into(),
            disabled_at: None,
            disabled_by: None,
            created_at: DateTimeUtc::default(),
        }
    }

    #[test]
    fn hits_misses_and_invalidation() {
        let cache = UserCache::default();
        assert_eq!(cache.get("alice"), None);
        let seen = cache.generation();
        cache.put("alice", Some(alice()), seen);
        cache.put("ghost", None, seen);
        assert_eq!(cache.get("alice"), Some(Some(alice())));
        assert_eq!(cache.get("ghost"), Some(None), "a missing user is cached too");
        cache.invalidate("alice");
        assert_eq!(cache.get("alice"), None);
        // A read begun before the invalidation is not kept.
        cache.put("alice", Some(alice()), seen);
        assert_eq!(cache.get("alice"), None);
    }

    #[test]
    fn stays_bounded() {
        let cache = UserCache::default();
        for i in 0..MAX_ENTRIES + 10 {
            cache.put(&format!("u{i}"), None, cache.generation());
        }
        assert!(cache.entries.read().unwrap().len() <= MAX_ENTRIES);
    }
}

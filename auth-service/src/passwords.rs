//! Password hashing: argon2id for new hashes; fastDeploy's bcrypt hashes are accepted
//! and reported for rehashing. Hashing runs on threads of its own at a lower CPU
//! priority ([`crate::hash_threads`]), as many as the hasher has slots (by default half
//! the machine's cores, at least one), so a burst of logins never starves other
//! requests; password checks beyond those slots wait in a bounded queue,
//! and when it is full are refused at once ([`PasswordError::Busy`]).
//!
//! Every refusal costs the same, so a login's time does not tell an unknown user, a
//! wrong password and a user still on a fastDeploy (bcrypt) hash apart: an unknown
//! user is checked against a dummy argon2id hash, and a refused check also does the
//! work of the other kind of hash against a dummy (an argon2id refusal one bcrypt
//! check at the cost of the legacy hashes still stored, a bcrypt refusal one argon2id
//! check). While no legacy hash is left, a refusal costs one argon2id check.

use std::sync::{
    Arc, RwLock,
    atomic::{AtomicUsize, Ordering},
};

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;

use crate::hash_threads::HashThreads;

/// The dummy bcrypt hash is made at most at this cost (each step doubles the work; a
/// stored hash above it would take seconds to check anyway).
const MAX_DUMMY_BCRYPT_COST: u32 = 16;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("hasher closed")]
    Closed,
    /// Every hashing slot is busy and the queue is full: retry a moment later.
    #[error("too many password checks waiting")]
    Busy,
}

/// The outcome of checking a password.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Wrong password or unknown user.
    Refused,
    /// Right password; `rehash` says the stored hash is a legacy one to replace.
    Accepted { rehash: bool },
}

/// A bcrypt hash of a password nobody has, at `cost`.
#[derive(Clone)]
struct DummyBcrypt {
    cost: u32,
    hash: Arc<str>,
}

#[derive(Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
    threads: Arc<HashThreads>,
    /// Password checks waiting for a slot, and how many may.
    waiting: Arc<AtomicUsize>,
    max_waiting: usize,
    dummy_hash: Arc<str>,
    /// Present while legacy hashes are stored (see the module comment).
    dummy_bcrypt: Arc<RwLock<Option<DummyBcrypt>>>,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasher")
            .field("permits", &self.permits.available_permits())
            .field("waiting", &self.waiting.load(Ordering::Relaxed))
            .field("legacy_cost", &self.legacy_cost())
            .finish()
    }
}

impl Hasher {
    /// At most `parallel` hashes run at once (leave a core for everything else).
    pub async fn new(parallel: usize) -> Result<Self, PasswordError> {
        let permits = Arc::new(Semaphore::new(parallel.max(1)));
        let threads = Arc::new(HashThreads::start(parallel).map_err(|e| PasswordError::Hash(e.to_string()))?);
        let dummy = threads.run(|| hash_blocking("slipway-dummy-password")).await??;
        Ok(Hasher {
            permits,
            threads,
            waiting: Arc::new(AtomicUsize::new(0)),
            max_waiting: usize::MAX,
            dummy_hash: dummy.into(),
            dummy_bcrypt: Arc::new(RwLock::new(None)),
        })
    }

    /// Hashing slots for half the machine's cores, at least one.
    pub async fn for_this_machine() -> Result<Self, PasswordError> {
        Self::new(default_slots()).await
    }

    /// At most `max_waiting` password checks wait for a slot; more are refused
    /// ([`PasswordError::Busy`]). Unbounded unless set.
    pub fn with_queue(mut self, max_waiting: usize) -> Self {
        self.max_waiting = max_waiting;
        self
    }

    /// A hashing slot for a password check: at once when one is free, else after
    /// waiting in the queue, or `Busy` when the queue is full.
    async fn check_slot(&self) -> Result<tokio::sync::SemaphorePermit<'_>, PasswordError> {
        if let Ok(permit) = self.permits.try_acquire() {
            return Ok(permit);
        }
        let waiting = Waiting::enter(&self.waiting);
        if waiting.ahead >= self.max_waiting {
            return Err(PasswordError::Busy);
        }
        self.permits.acquire().await.map_err(|_| PasswordError::Closed)
    }

    /// The bcrypt cost refusals pay for, or `None` while no legacy hash is stored.
    pub fn legacy_cost(&self) -> Option<u32> {
        read(&self.dummy_bcrypt).map(|d| d.cost)
    }

    /// Tells the hasher the highest bcrypt cost among the stored legacy hashes (`None`:
    /// none left), so refusals keep costing what a legacy user's refusal costs.
    pub async fn set_legacy_cost(&self, cost: Option<u32>) -> Result<(), PasswordError> {
        let cost = cost.map(|c| c.clamp(4, MAX_DUMMY_BCRYPT_COST));
        if self.legacy_cost() == cost {
            return Ok(());
        }
        let dummy = match cost {
            None => None,
            Some(cost) => {
                let hash = self
                    .threads
                    .run(move || bcrypt::hash("slipway-dummy-password", cost))
                    .await?
                    .map_err(|e| PasswordError::Hash(e.to_string()))?;
                Some(DummyBcrypt {
                    cost,
                    hash: hash.into(),
                })
            }
        };
        match self.dummy_bcrypt.write() {
            Ok(mut guard) => *guard = dummy,
            Err(poisoned) => *poisoned.into_inner() = dummy,
        }
        Ok(())
    }

    pub async fn hash(&self, password: &SecretString) -> Result<String, PasswordError> {
        let _permit = self.permits.acquire().await.map_err(|_| PasswordError::Closed)?;
        let password = password.clone();
        self.threads
            .run(move || hash_blocking(password.expose_secret()))
            .await?
    }

    /// Checks `password` against `stored`, or refuses it when there is no usable
    /// account (`stored` is `None`: unknown or disabled user) after the same work as
    /// any other refusal.
    pub async fn verify(&self, password: &SecretString, stored: Option<&str>) -> Result<Verdict, PasswordError> {
        let _permit = self.check_slot().await?;
        let password = password.clone();
        let known = stored.is_some();
        let stored: Arc<str> = stored.map(Arc::from).unwrap_or_else(|| self.dummy_hash.clone());
        let dummy_argon2 = self.dummy_hash.clone();
        let dummy_bcrypt = read(&self.dummy_bcrypt).map(|d| d.hash);
        let verdict = self
            .threads
            .run(move || {
                let verdict = verify_blocking(password.expose_secret(), &stored);
                if known && verdict != Verdict::Refused {
                    return verdict;
                }
                // A refusal: the other kind of hash's work too, against a dummy.
                let other = if is_bcrypt(&stored) {
                    Some(dummy_argon2)
                } else {
                    dummy_bcrypt
                };
                if let Some(other) = other {
                    std::hint::black_box(verify_blocking(password.expose_secret(), &other));
                }
                Verdict::Refused
            })
            .await?;
        Ok(verdict)
    }
}

/// Half the machine's cores, at least one: the default number of hashing slots.
pub fn default_slots() -> usize {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    (cores / 2).max(1)
}

/// One password check in the queue, counted out again however it leaves.
struct Waiting<'a> {
    count: &'a AtomicUsize,
    /// How many were waiting before this one.
    ahead: usize,
}

impl<'a> Waiting<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        let ahead = count.fetch_add(1, Ordering::AcqRel);
        Waiting { count, ahead }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

fn read(lock: &RwLock<Option<DummyBcrypt>>) -> Option<DummyBcrypt> {
    match lock.read() {
        Ok(guard) => guard.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

fn hash_blocking(password: &str) -> Result<String, PasswordError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

fn verify_blocking(password: &str, stored: &str) -> Verdict {
    if is_bcrypt(stored) {
        return match bcrypt::verify(password, stored) {
            Ok(true) => Verdict::Accepted { rehash: true },
            _ => Verdict::Refused,
        };
    }
    let Ok(parsed) = PasswordHash::new(stored) else {
        return Verdict::Refused;
    };
    match Argon2::default().verify_password(password.as_bytes(), &parsed) {
        Ok(()) => Verdict::Accepted { rehash: false },
        Err(_) => Verdict::Refused,
    }
}

fn is_bcrypt(stored: &str) -> bool {
    ["$2a$", "$2b$", "$2y$"].iter().any(|p| stored.starts_with(p))
}

/// The cost of a bcrypt hash (`$2b$12$…` is 12), or `None` for anything else.
pub fn bcrypt_cost(stored: &str) -> Option<u32> {
    if !is_bcrypt(stored) {
        return None;
    }
    let cost: u32 = stored.get(4..6)?.parse().ok()?;
    (4..=31).contains(&cost).then_some(cost)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_owned())
    }

    #[tokio::test]
    async fn argon2id_round_trip_and_refusals() {
        let hasher = Hasher::new(1).await.unwrap();
        let hash = hasher.hash(&secret("hunter2")).await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert_eq!(
            hasher.verify(&secret("hunter2"), Some(&hash)).await.unwrap(),
            Verdict::Accepted { rehash: false }
        );
        assert_eq!(
            hasher.verify(&secret("hunter3"), Some(&hash)).await.unwrap(),
            Verdict::Refused
        );
        assert_eq!(hasher.verify(&secret("hunter2"), None).await.unwrap(), Verdict::Refused);
        assert_eq!(
            hasher.verify(&secret("x"), Some("not a hash")).await.unwrap(),
            Verdict::Refused
        );
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_and_frees_up() {
        let hasher = Hasher::new(1).await.unwrap().with_queue(1);
        let hash = hasher.hash(&secret("hunter2")).await.unwrap();
        // The only slot taken, one check waiting: the next is refused.
        let slot = hasher.permits.clone().acquire_owned().await.unwrap();
        let waiting = {
            let (hasher, hash) = (hasher.clone(), hash.clone());
            tokio::spawn(async move { hasher.verify(&secret("hunter2"), Some(&hash)).await })
        };
        while hasher.waiting.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(
            hasher.verify(&secret("hunter2"), Some(&hash)).await,
            Err(PasswordError::Busy)
        ));
        drop(slot);
        assert_eq!(waiting.await.unwrap().unwrap(), Verdict::Accepted { rehash: false });
        assert_eq!(hasher.waiting.load(Ordering::Acquire), 0);
        assert_eq!(
            hasher.verify(&secret("hunter2"), Some(&hash)).await.unwrap(),
            Verdict::Accepted { rehash: false }
        );
    }

    #[tokio::test]
    async fn fastdeploy_bcrypt_hashes_are_accepted_and_marked_for_rehash() {
        let hasher = Hasher::new(1).await.unwrap();
        let legacy = bcrypt::hash("s3cret", 4).unwrap();
        assert_eq!(
            hasher.verify(&secret("s3cret"), Some(&legacy)).await.unwrap(),
            Verdict::Accepted { rehash: true }
        );
        assert_eq!(
            hasher.verify(&secret("wrong"), Some(&legacy)).await.unwrap(),
            Verdict::Refused
        );
        assert_eq!(bcrypt_cost(&legacy), Some(4));
        assert_eq!(bcrypt_cost("$argon2id$v=19$m=19456,t=2,p=1$x$y"), None);
        assert_eq!(bcrypt_cost("$2b$xx$abc"), None);
    }

    #[tokio::test]
    async fn refusals_stay_refusals_with_a_legacy_dummy() {
        let hasher = Hasher::new(1).await.unwrap();
        assert_eq!(hasher.legacy_cost(), None);
        hasher.set_legacy_cost(Some(4)).await.unwrap();
        assert_eq!(hasher.legacy_cost(), Some(4));
        let argon = hasher.hash(&secret("hunter2")).await.unwrap();
        let legacy = bcrypt::hash("s3cret", 4).unwrap();
        // The dummies' own password is never accepted, for any path.
        for stored in [None, Some(argon.as_str()), Some(legacy.as_str())] {
            assert_eq!(
                hasher.verify(&secret("slipway-dummy-password"), stored).await.unwrap(),
                Verdict::Refused,
                "{stored:?}"
            );
        }
        assert_eq!(
            hasher.verify(&secret("hunter2"), Some(&argon)).await.unwrap(),
            Verdict::Accepted { rehash: false }
        );
        assert_eq!(
            hasher.verify(&secret("s3cret"), Some(&legacy)).await.unwrap(),
            Verdict::Accepted { rehash: true }
        );
        hasher.set_legacy_cost(None).await.unwrap();
        assert_eq!(hasher.legacy_cost(), None);
    }
}

//! Failed-login limits per user name and per client address, to slow brute force.
//!
//! Failures are counted per name (known or not, so a refusal tells nothing about who
//! exists) and per address, and forgotten once `window` passes without one. From the
//! `threshold`-th failure on, each failure bars further attempts for that name or
//! address for a backoff that doubles with every failure past the threshold (from
//! `backoff` up to `backoff_max`); a barred attempt is refused before any password
//! work, with the time left. Past the threshold, attempts are also taken one at a
//! time, so a burst of parallel guesses cannot slip in between a failure and its bar.
//! A successful login clears its name's failures (not its address's: one good
//! account must not reset an address's guessing).
//!
//! At most `max_tracked` names and addresses each are held; when full, idle entries
//! go first, then the one whose last failure is oldest.

use std::{
    collections::HashMap,
    hash::Hash,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Failures of one user name before its logins are barred for a while.
    pub user_failures: u32,
    /// Failures from one address before its logins are barred for a while.
    pub address_failures: u32,
    /// How long failures are remembered after the last one.
    pub window: Duration,
    /// The first bar; each further failure doubles it.
    pub backoff: Duration,
    /// The longest bar.
    pub backoff_max: Duration,
    /// Most names, and most addresses, tracked at once.
    pub max_tracked: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            user_failures: 5,
            address_failures: 20,
            window: Duration::from_secs(900),
            backoff: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            max_tracked: 10_000,
        }
    }
}

/// A login refused before any password work: retry after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Barred {
    pub retry_after: Duration,
}

impl Barred {
    /// Whole seconds to put in `Retry-After` (at least one).
    pub fn retry_after_secs(&self) -> u64 {
        let secs = self.retry_after.as_secs();
        if self.retry_after.subsec_nanos() > 0 || secs == 0 {
            secs + 1
        } else {
            secs
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    barred_until: Option<Instant>,
    /// Attempts admitted and not yet finished.
    in_flight: u32,
}

#[derive(Debug)]
struct Tracker<K> {
    entries: HashMap<K, Failures>,
    threshold: u32,
}

impl<K: Hash + Eq + Clone> Tracker<K> {
    fn new(threshold: u32) -> Self {
        Tracker {
            entries: HashMap::new(),
            threshold,
        }
    }

    /// Whether an attempt may go on now, without counting it.
    fn check(&self, key: &K, now: Instant, limits: &Limits) -> Result<(), Barred> {
        let Some(f) = self.entries.get(key) else { return Ok(()) };
        if let Some(until) = f.barred_until
            && until > now
        {
            return Err(Barred {
                retry_after: until - now,
            });
        }
        if f.count >= self.threshold && f.in_flight > 0 && now.duration_since(f.last) < limits.window {
            // Past the threshold, one attempt at a time.
            return Err(Barred {
                retry_after: limits.backoff,
            });
        }
        Ok(())
    }

    fn admit(&mut self, key: &K, now: Instant, limits: &Limits) {
        if !self.entries.contains_key(key) {
            self.make_room(now, limits);
        }
        let f = self.entries.entry(key.clone()).or_insert(Failures {
            count: 0,
            last: now,
            barred_until: None,
            in_flight: 0,
        });
        if f.in_flight == 0 && now.duration_since(f.last) >= limits.window {
            f.count = 0;
            f.barred_until = None;
        }
        f.in_flight += 1;
    }

    fn finish(&mut self, key: &K, failed: bool, now: Instant, limits: &Limits) {
        let threshold = self.threshold;
        let Some(f) = self.entries.get_mut(key) else { return };
        f.in_flight = f.in_flight.saturating_sub(1);
        if failed {
            f.count = f.count.saturating_add(1);
            f.last = now;
            if f.count >= threshold {
                let doublings = (f.count - threshold).min(31);
                let bar = limits.backoff.saturating_mul(1u32 << doublings).min(limits.backoff_max);
                f.barred_until = Some(now + bar);
            }
        } else if f.count == 0 && f.in_flight == 0 {
            self.entries.remove(key);
        }
    }

    fn clear(&mut self, key: &K) {
        if let Some(f) = self.entries.get_mut(key) {
            f.count = 0;
            f.barred_until = None;
        }
    }

    /// Room for one more entry: idle ones go, then the one failed longest ago.
    fn make_room(&mut self, now: Instant, limits: &Limits) {
        if self.entries.len() < limits.max_tracked {
            return;
        }
        self.entries.retain(|_, f| {
            f.in_flight > 0
                || now.duration_since(f.last) < limits.window
                || f.barred_until.is_some_and(|until| until > now)
        });
        while self.entries.len() >= limits.max_tracked.max(1) {
            let oldest = self
                .entries
                .iter()
                .filter(|(_, f)| f.in_flight == 0)
                .min_by_key(|(_, f)| f.last)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(key) => {
                    self.entries.remove(&key);
                }
                None => break,
            }
        }
    }
}

#[derive(Debug)]
struct Trackers {
    users: Tracker<String>,
    addresses: Tracker<IpAddr>,
}

#[derive(Debug)]
pub struct LoginLimiter {
    limits: Limits,
    trackers: Mutex<Trackers>,
}

impl LoginLimiter {
    pub fn new(limits: Limits) -> Self {
        LoginLimiter {
            limits,
            trackers: Mutex::new(Trackers {
                users: Tracker::new(limits.user_failures.max(1)),
                addresses: Tracker::new(limits.address_failures.max(1)),
            }),
        }
    }

    fn trackers(&self) -> std::sync::MutexGuard<'_, Trackers> {
        self.trackers.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Admits a login attempt for `user` from `address`, or says how long to wait.
    /// The attempt counts as failed unless [`Attempt::succeeded`] is called (a
    /// dropped attempt, one whose caller went away, counts as neither).
    pub fn attempt(&self, user: &str, address: Option<IpAddr>) -> Result<Attempt<'_>, Barred> {
        self.admit(user, address, Instant::now(), None)
    }

    /// An attempt at `now` that also ends at `now` (for tests of the clock's effect).
    #[cfg(test)]
    fn attempt_at(&self, user: &str, address: Option<IpAddr>, now: Instant) -> Result<Attempt<'_>, Barred> {
        self.admit(user, address, now, Some(now))
    }

    fn admit(
        &self,
        user: &str,
        address: Option<IpAddr>,
        now: Instant,
        ends_at: Option<Instant>,
    ) -> Result<Attempt<'_>, Barred> {
        let mut trackers = self.trackers();
        let user = user.to_owned();
        let user_check = trackers.users.check(&user, now, &self.limits);
        let address_check = match &address {
            Some(address) => trackers.addresses.check(address, now, &self.limits),
            None => Ok(()),
        };
        match (user_check, address_check) {
            (Err(a), Err(b)) => {
                return Err(Barred {
                    retry_after: a.retry_after.max(b.retry_after),
                });
            }
            (Err(barred), _) | (_, Err(barred)) => return Err(barred),
            _ => {}
        }
        trackers.users.admit(&user, now, &self.limits);
        if let Some(address) = &address {
            trackers.addresses.admit(address, now, &self.limits);
        }
        Ok(Attempt {
            limiter: self,
            user,
            address,
            outcome: Outcome::Abandoned,
            ends_at,
        })
    }

    fn finish(&self, attempt: &Attempt<'_>, now: Instant) {
        let mut trackers = self.trackers();
        let failed = attempt.outcome == Outcome::Failed;
        if attempt.outcome == Outcome::Succeeded {
            trackers.users.clear(&attempt.user);
        }
        trackers.users.finish(&attempt.user, failed, now, &self.limits);
        if let Some(address) = &attempt.address {
            trackers.addresses.finish(address, failed, now, &self.limits);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Abandoned,
    Failed,
    Succeeded,
}

/// One admitted login attempt; its outcome is recorded when it is dropped.
#[derive(Debug)]
pub struct Attempt<'a> {
    limiter: &'a LoginLimiter,
    user: String,
    address: Option<IpAddr>,
    outcome: Outcome,
    /// When the attempt ends (`None`: when it is dropped).
    ends_at: Option<Instant>,
}

impl Attempt<'_> {
    /// The password was wrong (or the user unknown or disabled).
    pub fn failed(mut self) {
        self.outcome = Outcome::Failed;
    }

    /// The login succeeded: the name's failures are forgotten.
    pub fn succeeded(mut self) {
        self.outcome = Outcome::Succeeded;
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        self.limiter.finish(self, self.ends_at.unwrap_or_else(Instant::now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            user_failures: 3,
            address_failures: 5,
            window: Duration::from_secs(60),
            backoff: Duration::from_secs(1),
            backoff_max: Duration::from_secs(4),
            max_tracked: 100,
        }
    }

    const HERE: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));

    fn fail(limiter: &LoginLimiter, user: &str, address: Option<IpAddr>, now: Instant) {
        let attempt = limiter.attempt_at(user, address, now).expect("admitted");
        attempt.failed();
    }

    #[test]
    fn failures_past_the_threshold_bar_the_name_with_doubling_backoff() {
        let limiter = LoginLimiter::new(limits());
        let t0 = Instant::now();
        fail(&limiter, "alice", None, t0);
        fail(&limiter, "alice", None, t0);
        assert!(limiter.attempt_at("alice", None, t0).is_ok(), "under the threshold");
        fail(&limiter, "alice", None, t0);
        let barred = limiter.attempt_at("alice", None, t0).unwrap_err();
        assert_eq!(barred.retry_after, Duration::from_secs(1));
        assert_eq!(barred.retry_after_secs(), 1);
        assert!(
            limiter.attempt_at("bob", None, t0).is_ok(),
            "another name is not barred"
        );

        let t1 = t0 + Duration::from_millis(1500);
        fail(&limiter, "alice", None, t1);
        assert_eq!(
            limiter.attempt_at("alice", None, t1).unwrap_err().retry_after,
            Duration::from_secs(2)
        );
        let t2 = t1 + Duration::from_secs(3);
        fail(&limiter, "alice", None, t2);
        fail(&limiter, "alice", None, t2 + Duration::from_secs(5));
        assert_eq!(
            limiter
                .attempt_at("alice", None, t2 + Duration::from_secs(5))
                .unwrap_err()
                .retry_after,
            Duration::from_secs(4),
            "capped"
        );
        // After the window, a fresh start.
        let later = t2 + Duration::from_secs(5 + 61);
        fail(&limiter, "alice", None, later);
        assert!(limiter.attempt_at("alice", None, later).is_ok());
    }

    #[test]
    fn a_success_clears_the_name_but_not_the_address() {
        let limiter = LoginLimiter::new(limits());
        let t0 = Instant::now();
        for _ in 0..2 {
            fail(&limiter, "alice", HERE, t0);
        }
        limiter.attempt_at("alice", HERE, t0).unwrap().succeeded();
        for _ in 0..2 {
            fail(&limiter, "alice", HERE, t0);
        }
        assert!(limiter.attempt_at("alice", HERE, t0).is_ok(), "name cleared");
        fail(&limiter, "carol", HERE, t0);
        // Five failures from the address in all: every name from it is barred.
        let barred = limiter.attempt_at("dave", HERE, t0).unwrap_err();
        assert_eq!(barred.retry_after, Duration::from_secs(1));
        assert!(limiter.attempt_at("dave", None, t0).is_ok(), "elsewhere it goes on");
    }

    #[test]
    fn past_the_threshold_attempts_go_one_at_a_time_and_abandoned_ones_count_nothing() {
        let limiter = LoginLimiter::new(limits());
        let t0 = Instant::now();
        for _ in 0..3 {
            fail(&limiter, "alice", None, t0);
        }
        let t1 = t0 + Duration::from_secs(2);
        let first = limiter.attempt_at("alice", None, t1).unwrap();
        assert!(limiter.attempt_at("alice", None, t1).is_err(), "one at a time");
        drop(first);
        let again = limiter.attempt_at("alice", None, t1).unwrap();
        drop(again);
        // Below the threshold parallel attempts are fine.
        let a = limiter.attempt_at("bob", None, t1).unwrap();
        let b = limiter.attempt_at("bob", None, t1).unwrap();
        drop((a, b));
    }

    #[test]
    fn stays_bounded() {
        let limiter = LoginLimiter::new(Limits {
            max_tracked: 10,
            ..limits()
        });
        let t0 = Instant::now();
        for i in 0..50 {
            fail(&limiter, &format!("u{i}"), None, t0 + Duration::from_millis(i));
        }
        let trackers = limiter.trackers();
        assert!(trackers.users.entries.len() <= 10);
        assert!(trackers.users.entries.contains_key("u49"), "the newest stay");
    }
}

//! Caps on open revocation feeds: at most so many per caller and so many in all, so
//! that no caller can tie up the auth service with idle streams or lock verifiers
//! out. A slot is held by the stream it was taken for and given back when that stream
//! is dropped (the client went away, or the stream ended).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

/// The limits: per caller (internal services get their own, higher one) and in total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub per_token_subject: usize,
    pub per_service: usize,
    pub total: usize,
}

/// Who holds a stream: an internal service (by its credential) or a token's subject.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Holder {
    Service(String),
    Subject(String),
}

/// Why no slot was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Full {
    #[error("too many open revocation feeds for this caller")]
    Caller,
    #[error("too many open revocation feeds")]
    Total,
}

#[derive(Debug, Default)]
struct Open {
    by_holder: HashMap<Holder, usize>,
    total: usize,
}

#[derive(Debug, Clone)]
pub struct StreamCaps {
    limits: Limits,
    open: Arc<Mutex<Open>>,
}

/// One open stream's place under the caps; dropping it frees the place.
#[derive(Debug)]
pub struct Slot {
    holder: Holder,
    open: Arc<Mutex<Open>>,
}

impl StreamCaps {
    pub fn new(limits: Limits) -> Self {
        StreamCaps {
            limits,
            open: Arc::default(),
        }
    }

    /// A slot for `holder`, unless it or everyone together already hold the most allowed.
    pub fn acquire(&self, holder: Holder) -> Result<Slot, Full> {
        let limit = match holder {
            Holder::Service(_) => self.limits.per_service,
            Holder::Subject(_) => self.limits.per_token_subject,
        };
        // A poisoned lock only means another thread panicked while counting; the
        // counts themselves are still whole numbers, so go on with them.
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.total >= self.limits.total {
            return Err(Full::Total);
        }
        let held = open.by_holder.entry(holder.clone()).or_default();
        if *held >= limit {
            return Err(Full::Caller);
        }
        *held += 1;
        open.total += 1;
        Ok(Slot {
            holder,
            open: self.open.clone(),
        })
    }

    /// How many streams are open now.
    pub fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(held) = open.by_holder.get_mut(&self.holder) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                open.by_holder.remove(&self.holder);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_caller_and_in_total_and_dropping_frees_the_slot() {
        let caps = StreamCaps::new(Limits {
            per_token_subject: 2,
            per_service: 3,
            total: 4,
        });
        let alice = || Holder::Subject("alice".into());
        let a1 = caps.acquire(alice()).unwrap();
        let _a2 = caps.acquire(alice()).unwrap();
        assert_eq!(caps.acquire(alice()).unwrap_err(), Full::Caller);
        drop(a1);
        let _a3 = caps.acquire(alice()).unwrap();
        let gateway = || Holder::Service("gateway".into());
        let _g1 = caps.acquire(gateway()).unwrap();
        let _g2 = caps.acquire(gateway()).unwrap();
        assert_eq!(caps.open(), 4);
        assert_eq!(caps.acquire(gateway()).unwrap_err(), Full::Total);
        assert_eq!(caps.acquire(Holder::Subject("bob".into())).unwrap_err(), Full::Total);
    }
}

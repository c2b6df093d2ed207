//! Which services still exist, for `ListDeployments` (deployments of removed services
//! are left out), read once per listing rather than once per page.
//!
//! The first page of a listing asks the registry for every service id (several
//! `ListServices` pages with 10,000 services) and keeps the set as a *snapshot*, named
//! in the listing's page tokens. Later pages of the same listing reuse it while it is
//! fresh ([`FRESH_FOR`]), so a listing sees one view of the registry, as a reader
//! holding all pages at once would. A page holding a deployment whose service is not
//! in the snapshot (a service synced after it was taken, or one already removed) asks
//! the registry again and replaces the snapshot, so nothing is hidden that exists. A
//! new listing (no page token) always starts from the registry, so a service deleted
//! before it began is never shown.

use std::{
    collections::{HashSet, VecDeque},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use common::paging::{Cursor, canonical_u63};

use crate::{
    backends::{BackendError, Backends},
    model::ServiceId,
};

/// How long a snapshot serves the pages of its listing.
const FRESH_FOR: Duration = Duration::from_secs(10);
/// Snapshots kept at once (one per listing in progress); the oldest goes first.
const KEPT: usize = 16;

/// `ListDeployments`' page token: the last id of the page before, the snapshot of
/// live services its listing uses, and the fingerprint of the listing's filters and
/// order (`common::paging::fingerprint`; 0, and left out of the key, for none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeploymentsCursor {
    pub after: i64,
    pub snapshot: u64,
    pub filters: i64,
}

impl Cursor for DeploymentsCursor {
    const LIST: &'static str = "deployments";

    fn to_key(&self) -> String {
        match self.filters {
            0 => format!("{}.{}", self.after, self.snapshot),
            filters => format!("{}.{}.{filters}", self.after, self.snapshot),
        }
    }

    fn from_key(key: &str) -> Option<Self> {
        let mut parts = key.split('.');
        let after = canonical_u63(parts.next()?)?;
        let snapshot = u64::try_from(canonical_u63(parts.next()?)?).ok()?;
        let filters = match parts.next() {
            None => 0,
            // One cursor, one token: no filters is written without the part.
            Some(part) => canonical_u63(part).filter(|f| *f != 0)?,
        };
        if parts.next().is_some() {
            return None;
        }
        Some(DeploymentsCursor {
            after,
            snapshot,
            filters,
        })
    }
}

struct Snapshot {
    id: u64,
    taken: Instant,
    ids: Arc<HashSet<ServiceId>>,
}

#[derive(Default)]
pub struct LiveServices {
    snapshots: Mutex<VecDeque<Snapshot>>,
}

impl LiveServices {
    /// The live service ids for a page whose deployments belong to `services`: the
    /// listing's snapshot (`snapshot` from its page token) while it is fresh and knows
    /// every one of them, else a new one from the registry. Returns its id (for the
    /// next page token) and the set.
    pub async fn for_page(
        &self,
        backends: &Backends,
        snapshot: Option<u64>,
        services: impl Iterator<Item = ServiceId>,
    ) -> Result<(u64, Arc<HashSet<ServiceId>>), BackendError> {
        if let Some(wanted) = snapshot {
            let kept = {
                let snapshots = self.snapshots.lock().unwrap_or_else(PoisonError::into_inner);
                snapshots
                    .iter()
                    .find(|s| s.id == wanted && s.taken.elapsed() < FRESH_FOR)
                    .map(|s| s.ids.clone())
            };
            if let Some(ids) = kept {
                let mut services = services;
                if services.all(|id| ids.contains(&id)) {
                    return Ok((wanted, ids));
                }
            }
        }
        let ids = Arc::new(backends.service_ids().await?);
        let id = rand::random::<u64>() >> 1;
        let mut snapshots = self.snapshots.lock().unwrap_or_else(PoisonError::into_inner);
        snapshots.retain(|s| s.taken.elapsed() < FRESH_FOR);
        while snapshots.len() >= KEPT {
            snapshots.pop_front();
        }
        snapshots.push_back(Snapshot {
            id,
            taken: Instant::now(),
            ids: ids.clone(),
        });
        Ok((id, ids))
    }
}

#[cfg(test)]
mod tests {
    use common::paging::{InvalidPageToken, ServicesCursor, decode, encode};

    use super::*;

    /// Any key, as a deployments list's.
    struct Raw(&'static str);

    impl Cursor for Raw {
        const LIST: &'static str = "deployments";
        fn to_key(&self) -> String {
            self.0.to_owned()
        }
        fn from_key(_: &str) -> Option<Self> {
            None
        }
    }

    #[test]
    fn cursors_round_trip_and_odd_forms_are_refused() {
        let cursor = DeploymentsCursor {
            after: 1_000_000,
            snapshot: 42,
            filters: 0,
        };
        assert_eq!(decode::<DeploymentsCursor>(&encode(&cursor)), Ok(Some(cursor)));
        let zero = DeploymentsCursor {
            after: 0,
            snapshot: 0,
            filters: 0,
        };
        assert_eq!(decode::<DeploymentsCursor>(&encode(&zero)), Ok(Some(zero)));
        let filtered = DeploymentsCursor {
            after: 7,
            snapshot: 1,
            filters: i64::MAX,
        };
        assert_eq!(decode::<DeploymentsCursor>(&encode(&filtered)), Ok(Some(filtered)));
        for key in [
            "7",
            "7.",
            ".7",
            "07.1",
            "7.01",
            "-7.1",
            "7.-1",
            "+7.1",
            "7.1.0",
            "7.1.01",
            "7.1.-1",
            "7.1.1.1",
            "x.1",
            "99999999999999999999.1",
        ] {
            assert_eq!(
                decode::<DeploymentsCursor>(&encode(&Raw(key))),
                Err(InvalidPageToken),
                "{key}"
            );
        }
        assert_eq!(
            decode::<DeploymentsCursor>(&encode(&ServicesCursor(7))),
            Err(InvalidPageToken)
        );
    }
}

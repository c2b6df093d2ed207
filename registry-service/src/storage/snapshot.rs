//! The services table in memory, so reads (`ListServices`, `GetService`, a deployment
//! start's look-up) cost no database query.
//!
//! The snapshot is the whole table in id order, shared as one `Arc`. Every write the
//! store makes to the table drops it after its transaction commits and before the
//! write returns, so the change's event (sent after that) is never followed by a read
//! of the old rows. The next read loads the table again. A load that raced a write
//! (it began before the write committed) is used for its own read but not kept: a
//! generation counter, bumped by every drop, tells. The snapshot also expires after
//! [`MAX_AGE`], which bounds how long a write made by another process (another
//! registry on the same database) stays unseen.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use super::services;

/// How long a snapshot is used before the table is read again.
pub const MAX_AGE: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
pub struct Snapshot {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Bumped by every write; a load started under an older one is not kept.
    generation: u64,
    rows: Option<(Instant, Rows)>,
}

/// Every service, in id order.
pub type Rows = Arc<[services::Model]>;

impl Snapshot {
    /// The rows while they are fresh, else the generation a load must start under.
    pub fn get(&self) -> Result<Rows, u64> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match &state.rows {
            Some((taken, rows)) if taken.elapsed() < MAX_AGE => Ok(rows.clone()),
            _ => Err(state.generation),
        }
    }

    /// Keeps `rows`, loaded under `generation`, unless a write happened since.
    pub fn keep(&self, generation: u64, rows: Rows) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.generation == generation {
            state.rows = Some((Instant::now(), rows));
        }
    }

    /// Drops the rows: the table changed.
    pub fn invalidate(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.generation += 1;
        state.rows = None;
    }
}

/// The rows with an id above `after`, at most `limit` of them.
pub fn page(rows: &[services::Model], after: i64, limit: Option<u64>) -> &[services::Model] {
    let start = rows.partition_point(|row| row.id <= after);
    let rest = &rows[start..];
    match limit.and_then(|limit| usize::try_from(limit).ok()) {
        Some(limit) if limit < rest.len() => &rest[..limit],
        _ => rest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64) -> services::Model {
        services::Model {
            id,
            name: format!("s{id}"),
            data: serde_json::json!({}),
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn a_load_that_raced_a_write_is_not_kept() {
        let snapshot = Snapshot::default();
        let generation = snapshot.get().unwrap_err();
        snapshot.invalidate();
        snapshot.keep(generation, Arc::from(vec![row(1)]));
        let again = snapshot.get().unwrap_err();
        assert_ne!(again, generation);
        snapshot.keep(again, Arc::from(vec![row(1)]));
        assert_eq!(snapshot.get().unwrap().len(), 1);
        snapshot.invalidate();
        assert!(snapshot.get().is_err());
    }

    #[test]
    fn pages_follow_ids() {
        let rows: Vec<_> = [2, 5, 9, 12].into_iter().map(row).collect();
        let ids = |page: &[services::Model]| page.iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(ids(page(&rows, 0, None)), [2, 5, 9, 12]);
        assert_eq!(ids(page(&rows, 5, Some(2))), [9, 12]);
        assert_eq!(ids(page(&rows, 4, Some(1))), [5]);
        assert_eq!(ids(page(&rows, 12, Some(3))), Vec::<i64>::new());
        assert_eq!(ids(page(&rows, 0, Some(0))), Vec::<i64>::new());
    }
}

//! The `service_events` table as a feed (`common::feed`): each change to a service is
//! stored in the transaction that makes it (and, on PostgreSQL, `NOTIFY`s
//! [`CHANNEL`] with its sequence), and every replica on the database tails the table,
//! so a watcher on any replica sees every change once, in order, and can resume.
//! Retention keeps the table bounded ([`prune`]).

use std::sync::Arc;

use common::feed::{self, Feed, Source};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};
use serde_json::json;

use super::{Store, service_events, services, snapshot::Snapshot};

/// The PostgreSQL notification channel of service events.
pub const CHANNEL: &str = "slipway_service_events";

/// The service events table, read by the feed's tailer.
#[derive(Debug, Clone)]
pub struct ServiceEventsTable {
    db: DatabaseConnection,
    /// Dropped before a change (this replica's or another's) reaches watchers, so a
    /// watcher that reads the services after an event never sees the old rows.
    snapshot: Arc<Snapshot>,
}

pub type ServiceFeed = Feed<ServiceEventsTable>;

impl ServiceEventsTable {
    pub fn new(db: DatabaseConnection, snapshot: Arc<Snapshot>) -> ServiceEventsTable {
        ServiceEventsTable { db, snapshot }
    }
}

impl Source for ServiceEventsTable {
    type Row = service_events::Model;

    fn sequence(row: &service_events::Model) -> i64 {
        row.sequence
    }

    async fn rows_after(&self, after: i64, limit: u64) -> Result<Vec<service_events::Model>, DbErr> {
        service_events::Entity::find()
            .filter(service_events::Column::Sequence.gt(after))
            .order_by_asc(service_events::Column::Sequence)
            .limit(limit)
            .all(&self.db)
            .await
    }

    async fn last_sequence(&self) -> Result<i64, DbErr> {
        Ok(service_events::Entity::find()
            .order_by_desc(service_events::Column::Sequence)
            .one(&self.db)
            .await?
            .map_or(0, |e| e.sequence))
    }

    fn before_delivery(&self, _rows: &[service_events::Model]) {
        self.snapshot.invalidate();
    }
}

/// The payload of a service's event.
pub fn payload(row: &services::Model) -> serde_json::Value {
    json!({"id": row.id, "name": row.name, "data": row.data})
}

/// Stores one event per change (in order) in the writing transaction and announces
/// the last; returns the stored rows, for the feed once committed.
pub async fn record(
    txn: &impl ConnectionTrait,
    changes: &[(&services::Model, bool)],
) -> Result<Vec<service_events::Model>, DbErr> {
    if changes.is_empty() {
        return Ok(Vec::new());
    }
    let at = chrono::Utc::now();
    let rows = changes.iter().map(|(row, deleted)| service_events::ActiveModel {
        service: Set(row.name.clone()),
        deleted: Set(*deleted),
        payload: Set(payload(row)),
        created_at: Set(at),
        ..Default::default()
    });
    let mut stored = service_events::Entity::insert_many(rows)
        .exec_with_returning(txn)
        .await?;
    stored.sort_by_key(|e| e.sequence);
    if let Some(last) = stored.last() {
        feed::announce(txn, CHANNEL, last.sequence).await?;
    }
    Ok(stored)
}

impl Store {
    /// Every service event delivered from now on; `position` is where the feed stands.
    pub fn follow(&self) -> feed::Subscription<service_events::Model> {
        self.feed.subscribe()
    }

    /// The sequence this replica's feed has delivered through.
    pub fn feed_position(&self) -> i64 {
        self.feed.position()
    }

    /// Stored events after `after` and at most `upto`, in order, at most `limit`.
    pub async fn service_events_between(
        &self,
        after: i64,
        upto: i64,
        limit: u64,
    ) -> Result<Vec<service_events::Model>, DbErr> {
        service_events::Entity::find()
            .filter(service_events::Column::Sequence.gt(after))
            .filter(service_events::Column::Sequence.lte(upto))
            .order_by_asc(service_events::Column::Sequence)
            .limit(limit)
            .all(&self.db)
            .await
    }

    /// Removes service events older than `keep` and all but the newest `keep_rows`;
    /// how many were removed.
    pub async fn prune_service_events(&self, keep: chrono::Duration, keep_rows: u64) -> Result<u64, DbErr> {
        let cutoff = chrono::Utc::now() - keep;
        let mut removed = service_events::Entity::delete_many()
            .filter(service_events::Column::CreatedAt.lt(cutoff))
            .exec(&self.db)
            .await?
            .rows_affected;
        let newest = self.feed.source().last_sequence().await?;
        let floor = newest.saturating_sub(i64::try_from(keep_rows).unwrap_or(i64::MAX));
        if floor > 0 {
            removed += service_events::Entity::delete_many()
                .filter(service_events::Column::Sequence.lte(floor))
                .exec(&self.db)
                .await?
                .rows_affected;
        }
        Ok(removed)
    }
}

//! The `events` table as a feed (`common::feed`): every replica on the database
//! tails it, so a watcher on any replica sees every event once, in sequence order.
//! Writers hand their committed events to the feed and, on PostgreSQL, `NOTIFY`
//! [`CHANNEL`] with the last sequence inside the writing transaction.

use common::feed::{self, Feed, Source};
use sea_orm::{ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::{EventFilter, Store, events};

/// The PostgreSQL notification channel of deployment events.
pub const CHANNEL: &str = "slipway_deploy_events";

/// The events table, read by the feed's tailer.
#[derive(Debug, Clone)]
pub struct EventsTable {
    db: DatabaseConnection,
}

pub type EventFeed = Feed<EventsTable>;

impl EventsTable {
    pub fn new(db: DatabaseConnection) -> EventsTable {
        EventsTable { db }
    }
}

impl Source for EventsTable {
    type Row = events::Model;

    fn sequence(row: &events::Model) -> i64 {
        row.sequence
    }

    async fn rows_after(&self, after: i64, limit: u64) -> Result<Vec<events::Model>, DbErr> {
        events::Entity::find()
            .filter(events::Column::Sequence.gt(after))
            .order_by_asc(events::Column::Sequence)
            .limit(limit)
            .all(&self.db)
            .await
    }

    async fn last_sequence(&self) -> Result<i64, DbErr> {
        Ok(events::Entity::find()
            .order_by_desc(events::Column::Sequence)
            .one(&self.db)
            .await?
            .map_or(0, |e| e.sequence))
    }
}

impl Store {
    /// Every event the feed will deliver from now on; `position` is where it stands.
    pub fn follow(&self) -> feed::Subscription<events::Model> {
        self.feed.subscribe()
    }

    /// The sequence this replica's feed has delivered through.
    pub fn feed_position(&self) -> i64 {
        self.feed.position()
    }

    /// Stored events after `after` and at most `upto` (the feed's position: rows
    /// after it are not yet delivered, and may be behind a gap), in order.
    pub async fn events_between(
        &self,
        after: i64,
        upto: i64,
        filter: &EventFilter,
        limit: u64,
    ) -> Result<Vec<events::Model>, DbErr> {
        let limit = limit.min(i64::MAX as u64);
        let mut query = events::Entity::find()
            .filter(events::Column::Sequence.gt(after))
            .filter(events::Column::Sequence.lte(upto));
        if let Some(service) = &filter.service {
            query = query.filter(events::Column::Service.eq(service.clone()));
        }
        if let Some(id) = filter.deployment_id {
            query = query.filter(events::Column::DeploymentId.eq(id));
        }
        query
            .order_by_asc(events::Column::Sequence)
            .limit(limit)
            .all(&self.db)
            .await
    }
}

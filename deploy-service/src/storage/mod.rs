//! The deploy service's tables, behind one `Store` used the same way on SQLite and
//! PostgreSQL. Every write goes through one writer lock and records its events in
//! the same transaction; after the commit they reach watchers through the events
//! feed (`feed`), which also delivers the events other replicas on the database
//! commit, so a watcher that reads the table up to the feed's position and then
//! follows the feed sees every event once, in order.

pub mod deployment_logs;
pub mod deployments;
pub mod events;
mod feed;
pub mod log_lines;
mod logs;
mod migrations;
mod prune;
mod reads;
pub mod steps;
mod writes;

use std::{collections::HashMap, sync::Arc};

use sea_orm::{DatabaseConnection, DbErr};
use sea_orm_migration::MigratorTrait;
use tokio::sync::{Mutex, broadcast};

pub use feed::{CHANNEL as EVENTS_CHANNEL, EventFeed, EventsTable};

use crate::model::DeploymentId;

pub use logs::LogBatch;
pub use migrations::Migrator;
pub use reads::{DeploymentFilter, EventFilter};
pub use writes::{NewDeployment, ReportRefused};

#[derive(Debug, Clone)]
pub struct Store {
    db: DatabaseConnection,
    /// The writer lock, and what only its holder may read or change.
    writer: Arc<Mutex<Written>>,
    /// Delivers the events of every replica on the database, in sequence order.
    feed: EventFeed,
}

/// The visible steps of running deployments as last written, so that a batch of
/// reports does not read them back. Only the writer changes steps (one deploy
/// service per database), so the copy stays true; any failed write drops it.
#[derive(Debug, Default)]
struct Written {
    steps: HashMap<DeploymentId, Vec<steps::Model>>,
}

impl Store {
    /// Connects and brings the schema up to date.
    pub async fn open(url: &str) -> Result<Self, DbErr> {
        let db = common::db::connect(url).await?;
        Migrator::up(&db, None).await?;
        let feed = EventFeed::start(EventsTable::new(db.clone()), &db, EVENTS_CHANNEL).await?;
        Ok(Store {
            db,
            writer: Arc::new(Mutex::new(Written::default())),
            feed,
        })
    }

    /// Events delivered from now on (by any replica), in sequence order.
    pub fn subscribe(&self) -> broadcast::Receiver<events::Model> {
        self.feed.subscribe().receiver
    }

    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }
}

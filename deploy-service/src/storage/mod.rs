//! The deploy service's tables, behind one `Store` used the same way on SQLite and
//! PostgreSQL. Every write goes through one writer lock and records its events in
//! the same transaction; after the commit they reach watchers through the events
//! feed (`feed`), which also delivers the events other replicas on the database
//! commit, so a watcher that reads the table up to the feed's position and then
//! follows the feed sees every event once, in order.
//! Several replicas may share one PostgreSQL database: runs are claimed there
//! (`claims`), and changes to one deployment lock its row.

mod claims;
pub mod deployment_logs;
pub mod deployments;
pub mod events;
mod feed;
mod fenced;
pub mod log_lines;
mod logs;
mod migrations;
mod prune;
mod reads;
pub mod run_queue;
pub mod steps;
mod writes;

use std::sync::Arc;

use sea_orm::{DatabaseConnection, DbErr};
use sea_orm_migration::MigratorTrait;
use tokio::sync::{Mutex, broadcast};

pub use claims::{Claim, Fenced, HEARTBEAT, LEASE, Limits, RUNNER_LOST};
pub use feed::{CHANNEL as EVENTS_CHANNEL, EventFeed, EventsTable};

pub use logs::LogBatch;
pub use migrations::Migrator;
pub use reads::{DeploymentFilter, EventFilter};
pub use writes::{NewDeployment, ReportRefused};

#[derive(Debug, Clone)]
pub struct Store {
    db: DatabaseConnection,
    /// The writer lock: this process's writes take turns (SQLite has one writer;
    /// events go out in sequence order).
    writer: Arc<Mutex<()>>,
    /// Delivers the events of every replica on the database, in sequence order.
    feed: EventFeed,
}

impl Store {
    /// Connects and brings the schema up to date.
    pub async fn open(url: &str) -> Result<Self, DbErr> {
        let db = common::db::connect(url).await?;
        common::db::migrate_alone(&db, || Migrator::up(&db, None)).await?;
        let feed = EventFeed::start(EventsTable::new(db.clone()), &db, EVENTS_CHANNEL).await?;
        Ok(Store {
            db,
            writer: Arc::new(Mutex::new(())),
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

//! The deploy service's tables, behind one `Store` used the same way on SQLite and
//! PostgreSQL. Every write goes through one writer lock and records its events in
//! the same transaction; after the commit the events are broadcast in sequence
//! order, so a watcher that reads the table and then follows the broadcast sees
//! every event once. Several replicas may share one PostgreSQL database: runs are
//! claimed there (`claims`), and changes to one deployment lock its row.

mod claims;
pub mod deployment_logs;
pub mod deployments;
pub mod events;
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
pub use logs::LogBatch;
pub use migrations::Migrator;
pub use reads::{DeploymentFilter, EventFilter};
pub use writes::{NewDeployment, ReportRefused};

/// How many events a watcher may fall behind the broadcast before it catches up
/// from the table instead.
const BROADCAST_CAPACITY: usize = 1024;

#[derive(Debug, Clone)]
pub struct Store {
    db: DatabaseConnection,
    /// The writer lock: this process's writes take turns (SQLite has one writer;
    /// events go out in sequence order).
    writer: Arc<Mutex<()>>,
    events: broadcast::Sender<events::Model>,
}

impl Store {
    /// Connects and brings the schema up to date.
    pub async fn open(url: &str) -> Result<Self, DbErr> {
        let db = common::db::connect(url).await?;
        Migrator::up(&db, None).await?;
        let (events, _) = broadcast::channel(BROADCAST_CAPACITY);
        Ok(Store {
            db,
            writer: Arc::new(Mutex::new(())),
            events,
        })
    }

    /// Events committed from now on, in sequence order.
    pub fn subscribe(&self) -> broadcast::Receiver<events::Model> {
        self.events.subscribe()
    }

    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }
}

//! The deploy service's tables, behind one `Store` used the same way on SQLite and
//! PostgreSQL. Every write goes through one writer lock and records its events in
//! the same transaction; after the commit the events are broadcast in sequence
//! order, so a watcher that reads the table and then follows the broadcast sees
//! every event once.

pub mod deployment_logs;
pub mod deployments;
pub mod events;
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

use crate::model::DeploymentId;

pub use logs::LogBatch;
pub use migrations::Migrator;
pub use reads::EventFilter;
pub use writes::{NewDeployment, ReportRefused};

/// How many events a watcher may fall behind the broadcast before it catches up
/// from the table instead.
const BROADCAST_CAPACITY: usize = 1024;

#[derive(Debug, Clone)]
pub struct Store {
    db: DatabaseConnection,
    /// The writer lock, and what only its holder may read or change.
    writer: Arc<Mutex<Written>>,
    events: broadcast::Sender<events::Model>,
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
        let (events, _) = broadcast::channel(BROADCAST_CAPACITY);
        Ok(Store {
            db,
            writer: Arc::new(Mutex::new(Written::default())),
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

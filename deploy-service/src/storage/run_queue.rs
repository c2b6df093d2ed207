//! The `run_queue` table: live runs only (queued, or running with an owner, a lease,
//! a fence and slots). See `migrations/m0009_run_queue.rs` for why it looks so.

use sea_orm::entity::prelude::*;

use crate::model::DeploymentId;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "run_queue")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub deployment_id: DeploymentId,
    pub service: String,
    /// `queued` or `running`.
    pub state: String,
    /// The replica that runs it (NULL while queued, and for runs adopted from before
    /// this table).
    pub owner: Option<String>,
    /// When the owner's lease ends, in milliseconds since the epoch by the database's
    /// clock.
    pub lease_expires: i64,
    /// Raised by each claim and takeover; the owner's writes name it.
    pub fence: i64,
    /// The run's slot among its service's (0..max_running_per_service) and among all
    /// (0..max_running); NULL while queued.
    pub slot: Option<i32>,
    pub global_slot: Option<i32>,
    /// A user asked to cancel it on a replica that does not run it.
    pub cancel_by: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

pub const QUEUED: &str = "queued";
pub const RUNNING: &str = "running";

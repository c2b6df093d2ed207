//! The `deployments` table: one row per deployment, queued, running or ended.

use sea_orm::entity::prelude::*;

use crate::model::{DeploymentId, ServiceId, Status};

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "deployments")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: DeploymentId,
    pub service_id: ServiceId,
    pub service: String,
    pub origin: String,
    pub user: String,
    pub context: Json,
    /// queued, running, succeeded, failed or cancelled (stored as these names)
    pub status: Status,
    /// When the deployment was accepted (fastDeploy's `started`).
    pub started: Option<DateTimeUtc>,
    pub finished: Option<DateTimeUtc>,
    pub failure_reason: Option<String>,
    /// When the runner took it from the queue.
    pub run_started: Option<DateTimeUtc>,
    /// The deploy script relative to the services directory, fixed at acceptance.
    pub deploy_script: Option<String>,
    pub timeout_secs: Option<i64>,
    /// The deploy-service process that runs it.
    pub runner_id: Option<String>,
    /// The script's process (and process group) id, and its start time in clock ticks
    /// after boot, which tells it apart from a later process with the same id.
    pub pid: Option<i64>,
    pub process_start: Option<i64>,
    /// The `jti` of the deployment token minted for the run.
    pub token_id: Option<String>,
    /// The script (or a user) asked to finish the deployment (it is then ended at once).
    pub finish_requested: bool,
    /// The deployed-service config the script reported, published on success.
    pub deployed_config: Option<Json>,
    pub exit_code: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

//! The `deployments` table: one row per deployment, queued, running or ended.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "deployments")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub service_id: i64,
    pub service: String,
    pub origin: String,
    pub user: String,
    pub context: Json,
    /// queued, running, succeeded, failed or cancelled
    pub status: String,
    pub started: Option<DateTimeUtc>,
    pub finished: Option<DateTimeUtc>,
    pub failure_reason: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

//! The `events` table: every change to a deployment or step, with a global sequence.

use sea_orm::entity::prelude::*;

use crate::model::DeploymentId;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "events")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub sequence: i64,
    pub deployment_id: DeploymentId,
    pub service: String,
    /// "deployment" or "step"
    pub kind: String,
    pub deleted: bool,
    /// The deployment (without steps) or step as it was, in proto3 JSON.
    pub payload: Json,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

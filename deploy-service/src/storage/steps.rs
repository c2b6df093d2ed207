//! The `steps` table: the steps of each deployment, ordered by `sequence`.

use sea_orm::entity::prelude::*;

use crate::model::DeploymentId;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "steps")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub deployment_id: DeploymentId,
    /// Order within the deployment, from 1.
    pub sequence: i64,
    pub name: String,
    /// pending, running, success or failure
    pub state: String,
    pub started: Option<DateTimeUtc>,
    pub finished: Option<DateTimeUtc>,
    pub message: String,
    /// Left unfinished when its deployment ended: no longer shown, still planned next time.
    pub removed: bool,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

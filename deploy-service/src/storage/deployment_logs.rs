//! The `deployment_logs` table: one row per run that printed (or ended): how far its
//! log goes, how many lines were dropped to keep it within bounds, and whether it is
//! complete (the run ended and every line is stored).

use sea_orm::entity::prelude::*;

use crate::model::DeploymentId;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "deployment_logs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub deployment_id: DeploymentId,
    /// The number of the last line stored (0: none).
    pub last_line: i64,
    pub dropped_lines: i64,
    pub complete: bool,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

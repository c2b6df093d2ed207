//! The `log_lines` table: the kept output lines of each run, numbered per deployment.

use sea_orm::entity::prelude::*;

use crate::model::DeploymentId;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "log_lines")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub deployment_id: DeploymentId,
    /// 1, 2, 3, … per deployment; a marker line takes the number of the last line
    /// dropped before it.
    #[sea_orm(primary_key, auto_increment = false)]
    pub line: i64,
    /// 1 stdout, 2 stderr, 3 a marker written by Slipway (`LogStream` of the proto).
    pub stream: i16,
    pub time: DateTimeUtc,
    pub text: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

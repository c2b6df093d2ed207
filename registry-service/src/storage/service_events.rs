//! The `service_events` table: every change to a service, with a global sequence.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "service_events")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub sequence: i64,
    /// The service's name.
    pub service: String,
    pub deleted: bool,
    /// The service as it was (deleted: as it was last), `{"id", "name", "data"}`.
    pub payload: Json,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

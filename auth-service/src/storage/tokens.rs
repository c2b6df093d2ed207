//! The `tokens` table: every token the auth service issued, so tokens can be listed
//! and revoked by id (with every token derived from them).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "tokens")]
pub struct Model {
    /// The token's `jti`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub token_type: String,
    pub name: String,
    pub subject: String,
    pub service: Option<String>,
    pub origin: Option<String>,
    pub permissions: Option<Json>,
    pub created_by: String,
    pub created_at: DateTimeUtc,
    pub expires_at: DateTimeUtc,
    pub revoked_at: Option<DateTimeUtc>,
    pub parent_id: Option<String>,
    pub deployment_id: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

//! The `users` table: one row per person, with an argon2id (or legacy bcrypt) hash.

use sea_orm::entity::prelude::*;

#[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(unique)]
    pub name: String,
    pub password_hash: String,
    pub created_at: DateTimeUtc,
    pub password_changed_at: DateTimeUtc,
    /// When the user was disabled: no login, no token (see `Accounts::disable`).
    pub disabled_at: Option<DateTimeUtc>,
    /// Who disabled the user.
    pub disabled_by: Option<String>,
}

impl Model {
    pub fn is_enabled(&self) -> bool {
        self.disabled_at.is_none()
    }
}

// Hand-written so a hash never reaches a log.
impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("disabled_at", &self.disabled_at)
            .finish_non_exhaustive()
    }
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

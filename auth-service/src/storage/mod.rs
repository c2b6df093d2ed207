//! The auth service's tables, behind one `Store` used the same way on SQLite and
//! PostgreSQL.

mod migrations;
mod prune;
mod registry;
pub mod revocations;
pub mod signing;
pub mod signing_keys;
pub mod tokens;
pub mod users;

use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};
use sea_orm_migration::MigratorTrait;

pub use migrations::Migrator;
pub use registry::{REVOCATIONS_CHANNEL, TokenFilter};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error")]
    Db(#[from] DbErr),
    #[error("user {0:?} already exists")]
    UserExists(String),
    #[error("token {0:?} not found")]
    UnknownToken(String),
}

#[derive(Debug, Clone)]
pub struct Store {
    db: DatabaseConnection,
}

impl Store {
    /// Connects and brings the schema up to date.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let db = common::db::connect(url).await?;
        common::db::migrate_alone(&db, || Migrator::up(&db, None)).await?;
        Ok(Store { db })
    }

    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    pub async fn find_user(&self, name: &str) -> Result<Option<users::Model>, StoreError> {
        Ok(users::Entity::find()
            .filter(users::Column::Name.eq(name))
            .one(&self.db)
            .await?)
    }

    /// Users after the name `after` (all when `None`), in name order, at most `limit`.
    pub async fn list_users(&self, after: Option<&str>, limit: u64) -> Result<Vec<users::Model>, StoreError> {
        let mut query = users::Entity::find();
        if let Some(after) = after {
            query = query.filter(users::Column::Name.gt(after));
        }
        Ok(query
            .order_by_asc(users::Column::Name)
            .limit(limit.min(i64::MAX as u64))
            .all(&self.db)
            .await?)
    }

    pub async fn create_user(&self, name: &str, password_hash: &str) -> Result<users::Model, StoreError> {
        if self.find_user(name).await?.is_some() {
            return Err(StoreError::UserExists(name.to_owned()));
        }
        let now = chrono::Utc::now();
        let user = users::ActiveModel {
            name: Set(name.to_owned()),
            password_hash: Set(password_hash.to_owned()),
            created_at: Set(now),
            password_changed_at: Set(now),
            ..Default::default()
        };
        match user.insert(&self.db).await {
            Ok(model) => Ok(model),
            // A concurrent insert of the same name loses on the unique index.
            Err(err) if self.find_user(name).await?.is_some() => {
                tracing::debug!(error = %err, "user insert lost a race");
                Err(StoreError::UserExists(name.to_owned()))
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Replaces a password hash. `changed` says whether the password itself changed
    /// (a legacy rehash keeps the same password).
    pub async fn set_password_hash(&self, id: i64, password_hash: &str, changed: bool) -> Result<(), StoreError> {
        let mut user = users::ActiveModel {
            id: Set(id),
            password_hash: Set(password_hash.to_owned()),
            ..Default::default()
        };
        if changed {
            user.password_changed_at = Set(chrono::Utc::now());
        }
        user.update(&self.db).await?;
        Ok(())
    }

    /// Disables (`by` given) or enables (`None`) a user. Returns the updated user, or
    /// `None` when there is no such user.
    pub async fn set_user_disabled(&self, name: &str, by: Option<&str>) -> Result<Option<users::Model>, StoreError> {
        let Some(user) = self.find_user(name).await? else {
            return Ok(None);
        };
        let mut row: users::ActiveModel = user.into();
        row.disabled_at = Set(by.map(|_| chrono::Utc::now()));
        row.disabled_by = Set(by.map(str::to_owned));
        Ok(Some(row.update(&self.db).await?))
    }

    /// Removes a user's row; returns whether there was one. Its tokens stay in the
    /// registry (revoked by the caller), so who held and minted what stays on record.
    pub async fn delete_user(&self, name: &str) -> Result<bool, StoreError> {
        let result = users::Entity::delete_many()
            .filter(users::Column::Name.eq(name))
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected > 0)
    }

    /// The highest bcrypt cost among the legacy (fastDeploy) hashes still stored, or
    /// `None` when every user has an argon2id hash.
    pub async fn legacy_bcrypt_cost(&self) -> Result<Option<u32>, StoreError> {
        let hashes: Vec<String> = users::Entity::find()
            .select_only()
            .column(users::Column::PasswordHash)
            .filter(users::Column::PasswordHash.starts_with("$2"))
            .into_tuple()
            .all(&self.db)
            .await?;
        Ok(hashes.iter().filter_map(|h| crate::passwords::bcrypt_cost(h)).max())
    }
}

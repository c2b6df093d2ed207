//! The registry's tables, behind one `Store` used the same way on SQLite and PostgreSQL.

mod migrations;
pub mod services;

use sea_orm::{ActiveModelTrait, ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder, Set};
use sea_orm_migration::MigratorTrait;

pub use migrations::Migrator;

#[derive(Debug, Clone)]
pub struct Store {
    db: DatabaseConnection,
}

impl Store {
    /// Connects and brings the schema up to date.
    pub async fn open(url: &str) -> Result<Self, DbErr> {
        let db = common::db::connect(url).await?;
        Migrator::up(&db, None).await?;
        Ok(Store { db })
    }

    /// Every service, in id order.
    pub async fn list_services(&self) -> Result<Vec<services::Model>, DbErr> {
        services::Entity::find()
            .order_by_asc(services::Column::Id)
            .all(&self.db)
            .await
    }

    pub async fn find_service(&self, name: &str) -> Result<Option<services::Model>, DbErr> {
        services::Entity::find()
            .filter(services::Column::Name.eq(name))
            .one(&self.db)
            .await
    }

    /// Inserts the service or replaces its data, keeping its id.
    pub async fn upsert_service(&self, name: &str, data: serde_json::Value) -> Result<services::Model, DbErr> {
        let now = chrono::Utc::now();
        match self.find_service(name).await? {
            Some(existing) => {
                let mut row: services::ActiveModel = existing.into();
                row.data = Set(data);
                row.updated_at = Set(now);
                row.update(&self.db).await
            }
            None => {
                services::ActiveModel {
                    name: Set(name.to_owned()),
                    data: Set(data),
                    created_at: Set(now),
                    updated_at: Set(now),
                    ..Default::default()
                }
                .insert(&self.db)
                .await
            }
        }
    }

    /// Deletes a service by id; false when there was none.
    pub async fn delete_service(&self, id: i64) -> Result<bool, DbErr> {
        Ok(services::Entity::delete_by_id(id).exec(&self.db).await?.rows_affected > 0)
    }
}

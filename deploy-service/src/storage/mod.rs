//! The deploy service's tables, behind one `Store` used the same way on SQLite and PostgreSQL.

pub mod deployments;
mod migrations;

use sea_orm::{ActiveModelTrait, DatabaseConnection, DbErr, EntityTrait, Set};
use sea_orm_migration::MigratorTrait;

pub use migrations::Migrator;

#[derive(Debug, Clone)]
pub struct Store {
    db: DatabaseConnection,
}

/// What a new deployment is made of.
#[derive(Debug, Clone)]
pub struct NewDeployment {
    pub service_id: i64,
    pub service: String,
    pub origin: String,
    pub user: String,
    pub context: serde_json::Value,
}

impl Store {
    /// Connects and brings the schema up to date.
    pub async fn open(url: &str) -> Result<Self, DbErr> {
        let db = common::db::connect(url).await?;
        Migrator::up(&db, None).await?;
        Ok(Store { db })
    }

    /// Records a deployment as queued.
    pub async fn create_deployment(&self, new: NewDeployment) -> Result<deployments::Model, DbErr> {
        deployments::ActiveModel {
            service_id: Set(new.service_id),
            service: Set(new.service),
            origin: Set(new.origin),
            user: Set(new.user),
            context: Set(new.context),
            status: Set("queued".into()),
            started: Set(Some(chrono::Utc::now())),
            ..Default::default()
        }
        .insert(&self.db)
        .await
    }

    pub async fn get_deployment(&self, id: i64) -> Result<Option<deployments::Model>, DbErr> {
        deployments::Entity::find_by_id(id).one(&self.db).await
    }
}

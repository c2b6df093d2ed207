//! The registry's tables, behind one `Store` used the same way on SQLite and PostgreSQL.
//! Every change to a service stores its event in the same transaction (`feed`).

pub mod deployed_services;
mod feed;
mod migrations;
pub mod service_events;
pub mod services;
mod snapshot;

use std::{collections::HashSet, sync::Arc};

use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder,
    Set, TransactionTrait, sea_query::OnConflict,
};
use sea_orm_migration::MigratorTrait;
use serde_json::Value;

pub use feed::{CHANNEL as SERVICE_EVENTS_CHANNEL, ServiceEventsTable, ServiceFeed};
pub use migrations::Migrator;

#[derive(Debug, Clone)]
pub struct Store {
    db: DatabaseConnection,
    /// The services table in memory (see `snapshot`).
    services: Arc<snapshot::Snapshot>,
    /// Delivers the service events of every replica on the database, in order.
    feed: ServiceFeed,
}

/// What a sync did to one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Added,
    Updated,
    Deleted,
}

/// One service a sync added, updated or deleted (a deleted one with its last data).
#[derive(Debug, Clone)]
pub struct Change {
    pub kind: ChangeKind,
    pub service: services::Model,
}

impl Store {
    /// Connects and brings the schema up to date.
    pub async fn open(url: &str) -> Result<Self, DbErr> {
        let db = common::db::connect(url).await?;
        common::db::migrate_alone(&db, || Migrator::up(&db, None)).await?;
        let services = Arc::<snapshot::Snapshot>::default();
        let table = ServiceEventsTable::new(db.clone(), services.clone());
        let feed = ServiceFeed::start(table, &db, SERVICE_EVENTS_CHANNEL).await?;
        Ok(Store { db, services, feed })
    }

    /// Every service in id order, from the snapshot (the table is read when it has
    /// none, or an old one).
    async fn services(&self) -> Result<snapshot::Rows, DbErr> {
        let generation = match self.services.get() {
            Ok(rows) => return Ok(rows),
            Err(generation) => generation,
        };
        let rows: snapshot::Rows = services::Entity::find()
            .order_by_asc(services::Column::Id)
            .all(&self.db)
            .await?
            .into();
        self.services.keep(generation, rows.clone());
        Ok(rows)
    }

    /// Every service, in id order.
    pub async fn list_services(&self) -> Result<Vec<services::Model>, DbErr> {
        self.list_services_page(0, None).await
    }

    /// Services with an id above `after`, in id order, at most `limit` of them.
    pub async fn list_services_page(&self, after: i64, limit: Option<u64>) -> Result<Vec<services::Model>, DbErr> {
        Ok(snapshot::page(&self.services().await?, after, limit).to_vec())
    }

    pub async fn get_service(&self, id: i64) -> Result<Option<services::Model>, DbErr> {
        let rows = self.services().await?;
        Ok(rows
            .binary_search_by_key(&id, |row| row.id)
            .ok()
            .map(|at| rows[at].clone()))
    }

    pub async fn find_service(&self, name: &str) -> Result<Option<services::Model>, DbErr> {
        Ok(self.services().await?.iter().find(|row| row.name == name).cloned())
    }

    /// Inserts the service or replaces its data, keeping its id.
    pub async fn upsert_service(&self, name: &str, data: Value) -> Result<services::Model, DbErr> {
        let txn = self.db.begin().await?;
        let existing = services::Entity::find()
            .filter(services::Column::Name.eq(name))
            .one(&txn)
            .await?;
        let row = upsert(&txn, name, data, existing).await?;
        let events = feed::record(&txn, &[(&row, false)]).await?;
        txn.commit().await?;
        self.services.invalidate();
        self.feed.committed(events);
        Ok(row)
    }

    /// Brings the services table in line with a scan of the services directory, in one
    /// transaction: `found` services are added or, when their data differs, updated;
    /// services neither found nor `kept` (folders with a problem keep their last good
    /// row) are deleted with their deployed-service rows.
    pub async fn apply_sync(&self, found: &[(String, Value)], kept: &HashSet<String>) -> Result<Vec<Change>, DbErr> {
        let txn = self.db.begin().await?;
        let existing = services::Entity::find()
            .order_by_asc(services::Column::Id)
            .all(&txn)
            .await?;
        let mut changes = Vec::new();
        for (name, data) in found {
            let current = existing.iter().find(|s| &s.name == name);
            let kind = match current {
                Some(row) if &row.data == data => continue,
                Some(_) => ChangeKind::Updated,
                None => ChangeKind::Added,
            };
            let service = upsert(&txn, name, data.clone(), current.cloned()).await?;
            changes.push(Change { kind, service });
        }
        for row in existing {
            if found.iter().any(|(name, _)| name == &row.name) || kept.contains(&row.name) {
                continue;
            }
            delete_with_deployed(&txn, &row).await?;
            changes.push(Change {
                kind: ChangeKind::Deleted,
                service: row,
            });
        }
        let recorded: Vec<(&services::Model, bool)> = changes
            .iter()
            .map(|c| (&c.service, c.kind == ChangeKind::Deleted))
            .collect();
        let events = feed::record(&txn, &recorded).await?;
        txn.commit().await?;
        if !changes.is_empty() {
            self.services.invalidate();
        }
        self.feed.committed(events);
        Ok(changes)
    }

    /// Deletes a service by id; false when there was none.
    pub async fn delete_service(&self, id: i64) -> Result<bool, DbErr> {
        Ok(self.remove_service(id).await?.is_some())
    }

    /// Deletes a service and its deployed-service rows; the deleted row, or None when
    /// there was none.
    pub async fn remove_service(&self, id: i64) -> Result<Option<services::Model>, DbErr> {
        let txn = self.db.begin().await?;
        let Some(row) = services::Entity::find_by_id(id).one(&txn).await? else {
            return Ok(None);
        };
        let deleted = delete_with_deployed(&txn, &row).await?;
        let events = match deleted {
            true => feed::record(&txn, &[(&row, true)]).await?,
            false => Vec::new(),
        };
        txn.commit().await?;
        self.services.invalidate();
        self.feed.committed(events);
        Ok(deleted.then_some(row))
    }

    /// Records the config a deployment of `service` published, replacing the
    /// service's previous one (its row keeps its id).
    pub async fn publish_deployed(
        &self,
        deployment_id: i64,
        service: &str,
        config: Value,
    ) -> Result<deployed_services::Model, DbErr> {
        use deployed_services::{ActiveModel, Column, Entity};
        let row = ActiveModel {
            deployment_id: Set(deployment_id),
            service: Set(service.to_owned()),
            config: Set(config),
            published_at: Set(chrono::Utc::now()),
            ..Default::default()
        };
        Entity::insert(row)
            .on_conflict(
                OnConflict::column(Column::Service)
                    .update_columns([Column::DeploymentId, Column::Config, Column::PublishedAt])
                    .to_owned(),
            )
            .exec_with_returning(&self.db)
            .await
    }

    /// Deployed services in id order, only those of `services` when given.
    pub async fn list_deployed(&self, services: Option<&[String]>) -> Result<Vec<deployed_services::Model>, DbErr> {
        use deployed_services::{Column, Entity};
        let mut query = Entity::find().order_by_asc(Column::Id);
        if let Some(names) = services {
            query = query.filter(Column::Service.is_in(names.iter().cloned()));
        }
        query.all(&self.db).await
    }
}

async fn upsert(
    db: &impl ConnectionTrait,
    name: &str,
    data: Value,
    existing: Option<services::Model>,
) -> Result<services::Model, DbErr> {
    let now = chrono::Utc::now();
    match existing {
        Some(existing) => {
            let mut row: services::ActiveModel = existing.into();
            row.data = Set(data);
            row.updated_at = Set(now);
            row.update(db).await
        }
        None => {
            services::ActiveModel {
                name: Set(name.to_owned()),
                data: Set(data),
                created_at: Set(now),
                updated_at: Set(now),
                ..Default::default()
            }
            .insert(db)
            .await
        }
    }
}

/// Deletes a service row and the deployed-service rows of its name; whether the
/// service row was still there.
async fn delete_with_deployed(db: &impl ConnectionTrait, row: &services::Model) -> Result<bool, DbErr> {
    deployed_services::Entity::delete_many()
        .filter(deployed_services::Column::Service.eq(row.name.as_str()))
        .exec(db)
        .await?;
    let deleted = services::Entity::delete_by_id(row.id).exec(db).await?;
    Ok(deleted.rows_affected > 0)
}

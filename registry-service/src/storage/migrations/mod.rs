//! Schema migrations of the registry service, one file per migration.

use sea_orm_migration::prelude::*;

mod m0001_create_services;
mod m0002_create_deployed_services;
mod m0003_unique_deployed_service;
mod m0004_create_service_events;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m0001_create_services::Migration),
            Box::new(m0002_create_deployed_services::Migration),
            Box::new(m0003_unique_deployed_service::Migration),
            Box::new(m0004_create_service_events::Migration),
        ]
    }

    fn migration_table_name() -> DynIden {
        "registry_migrations".into_iden()
    }
}

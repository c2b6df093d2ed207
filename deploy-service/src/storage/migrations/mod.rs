//! Schema migrations of the deploy service, one file per migration.

use sea_orm_migration::prelude::*;

mod m0001_create_deployments;
mod m0002_create_steps;
mod m0003_deployment_runs;
mod m0004_removed_steps;
mod m0005_create_events;
mod m0006_deployments_by_service;
mod m0007_create_deployment_logs;
mod m0008_retention_index;
mod m0009_run_queue;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m0001_create_deployments::Migration),
            Box::new(m0002_create_steps::Migration),
            Box::new(m0003_deployment_runs::Migration),
            Box::new(m0004_removed_steps::Migration),
            Box::new(m0005_create_events::Migration),
            Box::new(m0006_deployments_by_service::Migration),
            Box::new(m0007_create_deployment_logs::Migration),
            Box::new(m0008_retention_index::Migration),
            Box::new(m0009_run_queue::Migration),
        ]
    }

    fn migration_table_name() -> DynIden {
        "deploy_migrations".into_iden()
    }
}

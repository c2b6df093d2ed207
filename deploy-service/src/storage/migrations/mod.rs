//! Schema migrations of the deploy service, one file per migration.

use sea_orm_migration::prelude::*;

mod m0001_create_deployments;
mod m0002_create_steps;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m0001_create_deployments::Migration),
            Box::new(m0002_create_steps::Migration),
        ]
    }

    fn migration_table_name() -> DynIden {
        "deploy_migrations".into_iden()
    }
}

//! Schema migrations of the auth service, one file per migration.

use sea_orm_migration::prelude::*;

mod m0001_create_users;
mod m0002_create_tokens;
mod m0003_create_revocations;
mod m0004_user_disabled;
mod m0005_expiry_indexes;
mod m0006_signing_keys;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m0001_create_users::Migration),
            Box::new(m0002_create_tokens::Migration),
            Box::new(m0003_create_revocations::Migration),
            Box::new(m0004_user_disabled::Migration),
            Box::new(m0005_expiry_indexes::Migration),
            Box::new(m0006_signing_keys::Migration),
        ]
    }

    // Each service owns its tables; its own migration table keeps services apart when
    // they share one PostgreSQL database.
    fn migration_table_name() -> DynIden {
        "auth_migrations".into_iden()
    }
}

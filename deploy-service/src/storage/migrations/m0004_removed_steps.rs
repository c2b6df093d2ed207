//! Steps left pending or running when a deployment ends are removed from its visible
//! steps (fastDeploy's clients expect them gone, with `deleted` events) but kept as
//! rows: their ids are never reused and the next plan still lists them.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Steps::Table)
                    .add_column(boolean(Steps::Removed).default(false))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Steps::Table)
                    .drop_column(Steps::Removed)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum Steps {
    Table,
    Removed,
}

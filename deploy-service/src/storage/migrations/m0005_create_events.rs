//! Every change to a deployment or a step, numbered by one global, increasing
//! sequence, so watchers can resume where they stopped.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Events::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Events::Sequence))
                    .col(big_integer(Events::DeploymentId))
                    .col(string(Events::Service))
                    .col(string(Events::Kind))
                    .col(boolean(Events::Deleted))
                    .col(json_binary(Events::Payload))
                    .col(timestamp_with_time_zone(Events::CreatedAt))
                    .to_owned(),
            )
            .await?;
        for (name, column) in [
            ("idx_events_deployment_sequence", Events::DeploymentId),
            ("idx_events_service_sequence", Events::Service),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(Events::Table)
                        .col(column)
                        .col(Events::Sequence)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(Events::Table).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum Events {
    Table,
    Sequence,
    DeploymentId,
    Service,
    Kind,
    Deleted,
    Payload,
    CreatedAt,
}

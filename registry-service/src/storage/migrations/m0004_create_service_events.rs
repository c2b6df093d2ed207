//! Every change to a service (added, updated, deleted), numbered by one increasing
//! sequence, so watchers on any replica see them in order and can resume.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ServiceEvents::Table)
                    .if_not_exists()
                    .col(big_pk_auto(ServiceEvents::Sequence))
                    .col(string(ServiceEvents::Service))
                    .col(boolean(ServiceEvents::Deleted))
                    .col(json_binary(ServiceEvents::Payload))
                    .col(timestamp_with_time_zone(ServiceEvents::CreatedAt))
                    .to_owned(),
            )
            .await?;
        // Retention removes by age.
        manager
            .create_index(
                Index::create()
                    .name("idx_service_events_created_at")
                    .table(ServiceEvents::Table)
                    .col(ServiceEvents::CreatedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ServiceEvents::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum ServiceEvents {
    Table,
    Sequence,
    Service,
    Deleted,
    Payload,
    CreatedAt,
}

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(DeployedServices::Table)
                    .if_not_exists()
                    .col(big_pk_auto(DeployedServices::Id))
                    .col(big_integer(DeployedServices::DeploymentId))
                    .col(string(DeployedServices::Service))
                    .col(json_binary(DeployedServices::Config))
                    .col(timestamp_with_time_zone(DeployedServices::PublishedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_deployed_services_service")
                    .table(DeployedServices::Table)
                    .col(DeployedServices::Service)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(DeployedServices::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum DeployedServices {
    Table,
    Id,
    DeploymentId,
    Service,
    Config,
    PublishedAt,
}

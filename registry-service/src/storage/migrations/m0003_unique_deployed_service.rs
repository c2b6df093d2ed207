use sea_orm_migration::prelude::*;

/// One deployed-service row per service: the latest publish replaces the previous one.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("idx_deployed_services_service")
                    .table(DeployedServices::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("uq_deployed_services_service")
                    .table(DeployedServices::Table)
                    .col(DeployedServices::Service)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("uq_deployed_services_service")
                    .table(DeployedServices::Table)
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
}

#[derive(DeriveIden)]
enum DeployedServices {
    Table,
    Service,
}

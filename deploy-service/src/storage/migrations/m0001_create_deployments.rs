use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Deployments::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Deployments::Id))
                    .col(big_integer(Deployments::ServiceId))
                    .col(string(Deployments::Service))
                    .col(string(Deployments::Origin))
                    .col(string(Deployments::User))
                    .col(json_binary(Deployments::Context))
                    .col(string(Deployments::Status))
                    .col(timestamp_with_time_zone_null(Deployments::Started))
                    .col(timestamp_with_time_zone_null(Deployments::Finished))
                    .col(text_null(Deployments::FailureReason))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_deployments_service_status")
                    .table(Deployments::Table)
                    .col(Deployments::Service)
                    .col(Deployments::Status)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Deployments::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Deployments {
    Table,
    Id,
    ServiceId,
    Service,
    Origin,
    User,
    Context,
    Status,
    Started,
    Finished,
    FailureReason,
}

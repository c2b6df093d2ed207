use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Steps::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Steps::Id))
                    .col(big_integer(Steps::DeploymentId))
                    .col(big_integer(Steps::Sequence))
                    .col(string(Steps::Name))
                    .col(string(Steps::State))
                    .col(timestamp_with_time_zone_null(Steps::Started))
                    .col(timestamp_with_time_zone_null(Steps::Finished))
                    .col(text(Steps::Message))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_steps_deployment")
                            .from(Steps::Table, Steps::DeploymentId)
                            .to(Deployments::Table, Deployments::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_steps_deployment_sequence")
                    .table(Steps::Table)
                    .col(Steps::DeploymentId)
                    .col(Steps::Sequence)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(Steps::Table).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum Steps {
    Table,
    Id,
    DeploymentId,
    Sequence,
    Name,
    State,
    Started,
    Finished,
    Message,
}

#[derive(DeriveIden)]
enum Deployments {
    Table,
    Id,
}

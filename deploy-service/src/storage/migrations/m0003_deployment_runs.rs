//! What the queue and the runner keep per deployment: when its script started, which
//! script and time limit were fixed at acceptance, the runner and process that run it
//! (to recognise a dead runner after a restart), its deployment token's id (to revoke
//! it), whether the script asked to finish, its exit code and the deployed-service
//! config it reported.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite adds one column per ALTER TABLE.
        let columns = [
            timestamp_with_time_zone_null(Deployments::RunStarted),
            string_null(Deployments::DeployScript),
            big_integer_null(Deployments::TimeoutSecs),
            string_null(Deployments::RunnerId),
            big_integer_null(Deployments::Pid),
            big_integer_null(Deployments::ProcessStart),
            string_null(Deployments::TokenId),
            boolean(Deployments::FinishRequested).default(false).take(),
            json_binary_null(Deployments::DeployedConfig),
            big_integer_null(Deployments::ExitCode),
        ];
        for column in columns {
            manager
                .alter_table(Table::alter().table(Deployments::Table).add_column(column).to_owned())
                .await?;
        }
        manager
            .create_index(
                Index::create()
                    .name("idx_deployments_status_id")
                    .table(Deployments::Table)
                    .col(Deployments::Status)
                    .col(Deployments::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("idx_deployments_status_id")
                    .table(Deployments::Table)
                    .to_owned(),
            )
            .await?;
        for column in [
            Deployments::RunStarted,
            Deployments::DeployScript,
            Deployments::TimeoutSecs,
            Deployments::RunnerId,
            Deployments::Pid,
            Deployments::ProcessStart,
            Deployments::TokenId,
            Deployments::FinishRequested,
            Deployments::DeployedConfig,
            Deployments::ExitCode,
        ] {
            manager
                .alter_table(Table::alter().table(Deployments::Table).drop_column(column).to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Deployments {
    Table,
    Id,
    Status,
    RunStarted,
    DeployScript,
    TimeoutSecs,
    RunnerId,
    Pid,
    ProcessStart,
    TokenId,
    FinishRequested,
    DeployedConfig,
    ExitCode,
}

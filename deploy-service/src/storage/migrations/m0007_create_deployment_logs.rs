//! The output of deploy scripts: `log_lines` (the kept lines, keyed by deployment and
//! line number, so a page or a resume is a range read) and `deployment_logs` (one row
//! per run: last line, lines dropped, complete).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(LogLines::Table)
                    .if_not_exists()
                    .col(big_integer(LogLines::DeploymentId))
                    .col(big_integer(LogLines::Line))
                    .col(small_integer(LogLines::Stream))
                    .col(timestamp_with_time_zone(LogLines::Time))
                    .col(text(LogLines::Text))
                    .primary_key(Index::create().col(LogLines::DeploymentId).col(LogLines::Line))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(DeploymentLogs::Table)
                    .if_not_exists()
                    .col(big_integer(DeploymentLogs::DeploymentId).primary_key())
                    .col(big_integer(DeploymentLogs::LastLine))
                    .col(big_integer(DeploymentLogs::DroppedLines))
                    .col(boolean(DeploymentLogs::Complete))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(DeploymentLogs::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(LogLines::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum LogLines {
    Table,
    DeploymentId,
    Line,
    Stream,
    Time,
    Text,
}

#[derive(DeriveIden)]
enum DeploymentLogs {
    Table,
    DeploymentId,
    LastLine,
    DroppedLines,
    Complete,
}

//! Retention keeps each service's last successful deployment (the step-plan rule) and
//! asks for it once per candidate: an index on (service_id, status, id) makes that,
//! and the plan's own lookup, one index read.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name("idx_deployments_service_id_status_id")
                    .table(Deployments::Table)
                    .col(Deployments::ServiceId)
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
                    .name("idx_deployments_service_id_status_id")
                    .table(Deployments::Table)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum Deployments {
    Table,
    ServiceId,
    Status,
    Id,
}

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Tokens::Table)
                    .if_not_exists()
                    .col(string(Tokens::Id).primary_key())
                    .col(string(Tokens::TokenType))
                    .col(string(Tokens::Name))
                    .col(string(Tokens::Subject))
                    .col(string_null(Tokens::Service))
                    .col(string_null(Tokens::Origin))
                    .col(json_binary_null(Tokens::Permissions))
                    .col(string(Tokens::CreatedBy))
                    .col(timestamp_with_time_zone(Tokens::CreatedAt))
                    .col(timestamp_with_time_zone(Tokens::ExpiresAt))
                    .col(timestamp_with_time_zone_null(Tokens::RevokedAt))
                    .col(string_null(Tokens::ParentId))
                    .col(big_integer_null(Tokens::DeploymentId))
                    .to_owned(),
            )
            .await?;
        for (name, column) in [
            ("idx_tokens_parent", Tokens::ParentId),
            ("idx_tokens_service", Tokens::Service),
        ] {
            manager
                .create_index(Index::create().name(name).table(Tokens::Table).col(column).to_owned())
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(Tokens::Table).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum Tokens {
    Table,
    Id,
    TokenType,
    Name,
    Subject,
    Service,
    Origin,
    Permissions,
    CreatedBy,
    CreatedAt,
    ExpiresAt,
    RevokedAt,
    ParentId,
    DeploymentId,
}

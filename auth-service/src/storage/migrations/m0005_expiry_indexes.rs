//! Retention removes token records a while after they expire and revocations once
//! their token has: indexes on the expiry make each batch a range read.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name("idx_tokens_expires_at")
                    .table(Tokens::Table)
                    .col(Tokens::ExpiresAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_revocations_expires_at")
                    .table(Revocations::Table)
                    .col(Revocations::ExpiresAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (name, table) in [
            ("idx_tokens_expires_at", Tokens::Table.into_iden()),
            ("idx_revocations_expires_at", Revocations::Table.into_iden()),
        ] {
            manager
                .drop_index(Index::drop().name(name).table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Tokens {
    Table,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum Revocations {
    Table,
    ExpiresAt,
}

//! The signing keys move from files into the database, so every auth replica signs
//! and verifies with the same keys: each row a key id, its generation (unique: a
//! rotation inserts the next one, and of two replicas rotating at once one loses on
//! the constraint), the public key, and the private key sealed under the
//! key-encryption key.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(SigningKeys::Table)
                    .if_not_exists()
                    .col(string(SigningKeys::Kid).primary_key())
                    .col(big_integer_uniq(SigningKeys::Generation))
                    .col(text(SigningKeys::PublicKey))
                    .col(text(SigningKeys::SealedPrivateKey))
                    .col(timestamp_with_time_zone(SigningKeys::CreatedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(SigningKeys::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum SigningKeys {
    Table,
    Kid,
    Generation,
    PublicKey,
    SealedPrivateKey,
    CreatedAt,
}

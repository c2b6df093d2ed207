//! The signing keys in the database (see `signing_keys`): read them all, add one as
//! a compare-and-swap on its generation, and tell the other replicas.

use sea_orm::{ActiveModelTrait, ConnectionTrait, DbBackend, EntityTrait, QueryOrder, Statement, TransactionTrait};

use super::{Store, StoreError, signing_keys};

/// The PostgreSQL channel a replica notifies when it adds a signing key (the payload
/// is the new generation; the table stays the truth).
pub const KEYS_CHANNEL: &str = "slipway_keys";

impl Store {
    /// Every signing key, oldest generation first.
    pub async fn signing_keys(&self) -> Result<Vec<signing_keys::Model>, StoreError> {
        Ok(signing_keys::Entity::find()
            .order_by_asc(signing_keys::Column::Generation)
            .all(self.connection())
            .await?)
    }

    /// Adds keys in one transaction, unless a key of one of their generations (or
    /// ids) is there already: then nothing is added and the answer is `false` (another
    /// replica got there first; read the keys again).
    pub async fn add_signing_keys(&self, keys: Vec<signing_keys::Model>) -> Result<bool, StoreError> {
        let Some(newest) = keys.iter().map(|k| k.generation).max() else {
            return Ok(true);
        };
        let txn = self.connection().begin().await?;
        for key in keys {
            if let Err(error) = signing_keys::ActiveModel::from(key).insert(&txn).await {
                // Most likely the unique generation (or key id): a lost race.
                txn.rollback().await?;
                let taken = self.signing_keys().await?.iter().any(|k| k.generation >= newest);
                if taken {
                    return Ok(false);
                }
                return Err(error.into());
            }
        }
        if txn.get_database_backend() == DbBackend::Postgres {
            txn.execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT pg_notify($1, $2)",
                [KEYS_CHANNEL.into(), newest.to_string().into()],
            ))
            .await?;
        }
        txn.commit().await?;
        Ok(true)
    }
}

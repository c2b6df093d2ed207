//! Retention of the token registry: token records go a while after they expire, and
//! revocations once their token has expired (past the verifiers' leeway: no reader
//! of the log returns them any more, see `revocations_after`). The newest revocation
//! always stays, so its sequence number is never handed out again (SQLite may reuse
//! the highest rowid once it is deleted) and a follower never passes a new one.

use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::{Store, StoreError, revocations, tokens};

impl Store {
    /// Removes up to `limit` token records that expired before `before`; returns how many.
    pub async fn prune_tokens(&self, before: DateTime<Utc>, limit: u64) -> Result<u64, StoreError> {
        let ids: Vec<String> = tokens::Entity::find()
            .select_only()
            .column(tokens::Column::Id)
            .filter(tokens::Column::ExpiresAt.lt(before))
            .order_by_asc(tokens::Column::ExpiresAt)
            .limit(limit)
            .into_tuple()
            .all(self.connection())
            .await?;
        if ids.is_empty() {
            return Ok(0);
        }
        Ok(tokens::Entity::delete_many()
            .filter(tokens::Column::Id.is_in(ids))
            .exec(self.connection())
            .await?
            .rows_affected)
    }

    /// Removes up to `limit` revocations whose token expired before `before`, never
    /// the newest one; returns how many.
    pub async fn prune_revocations(&self, before: DateTime<Utc>, limit: u64) -> Result<u64, StoreError> {
        let newest: Option<i64> = revocations::Entity::find()
            .select_only()
            .column(revocations::Column::Seq)
            .order_by_desc(revocations::Column::Seq)
            .limit(1)
            .into_tuple()
            .one(self.connection())
            .await?;
        let Some(newest) = newest else { return Ok(0) };
        let seqs: Vec<i64> = revocations::Entity::find()
            .select_only()
            .column(revocations::Column::Seq)
            .filter(revocations::Column::ExpiresAt.lt(before))
            .filter(revocations::Column::Seq.lt(newest))
            .order_by_asc(revocations::Column::ExpiresAt)
            .limit(limit)
            .into_tuple()
            .all(self.connection())
            .await?;
        if seqs.is_empty() {
            return Ok(0);
        }
        Ok(revocations::Entity::delete_many()
            .filter(revocations::Column::Seq.is_in(seqs))
            .exec(self.connection())
            .await?
            .rows_affected)
    }
}

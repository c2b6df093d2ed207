//! The token registry on top of the `tokens` and `revocations` tables: record, list,
//! revoke with cascade, and the numbered revocation log verifiers follow.
//!
//! The log has no gaps a reader could pass: revocations are written one transaction
//! at a time (on PostgreSQL under a table lock taken before anything else, on SQLite
//! by its single writer), so they commit in the order of their sequence numbers. A
//! reader that has seen number N has seen every committed revocation below N; a
//! number lost to a rolled-back transaction is never filled and need not be waited
//! for.

use std::collections::BTreeSet;

use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set, Statement, TransactionTrait,
};

/// The PostgreSQL channel a revoking transaction notifies (payload: its newest
/// sequence number; the table stays the truth).
pub const REVOCATIONS_CHANNEL: &str = "slipway_revocations";

use super::{Store, StoreError, revocations, tokens};
use crate::paging::Cursor;

/// Which tokens to list; empty fields match everything.
#[derive(Debug, Default, Clone)]
pub struct TokenFilter {
    pub service: Option<String>,
    pub token_type: Option<String>,
    pub created_by: Option<String>,
    pub include_revoked: bool,
}

impl Store {
    pub async fn record_token(&self, token: tokens::Model) -> Result<(), StoreError> {
        tokens::ActiveModel::from(token).insert(self.connection()).await?;
        Ok(())
    }

    pub async fn find_token(&self, id: &str) -> Result<Option<tokens::Model>, StoreError> {
        Ok(tokens::Entity::find_by_id(id.to_owned()).one(self.connection()).await?)
    }

    /// Tokens matching the filter, newest first.
    pub async fn list_tokens(&self, filter: &TokenFilter) -> Result<Vec<tokens::Model>, StoreError> {
        self.list_tokens_page(filter, None, None).await
    }

    /// One page of `list_tokens`: at most `limit` tokens listed after `after` (newest
    /// first by creation time, ties by id descending, so the order is total).
    pub async fn list_tokens_page(
        &self,
        filter: &TokenFilter,
        after: Option<&Cursor>,
        limit: Option<u64>,
    ) -> Result<Vec<tokens::Model>, StoreError> {
        let mut condition = Condition::all();
        if let Some(after) = after {
            condition = condition.add(
                Condition::any()
                    .add(tokens::Column::CreatedAt.lt(after.created_at))
                    .add(
                        Condition::all()
                            .add(tokens::Column::CreatedAt.eq(after.created_at))
                            .add(tokens::Column::Id.lt(after.id.clone())),
                    ),
            );
        }
        if let Some(service) = &filter.service {
            condition = condition.add(tokens::Column::Service.eq(service.clone()));
        }
        if let Some(kind) = &filter.token_type {
            condition = condition.add(tokens::Column::TokenType.eq(kind.clone()));
        }
        if let Some(creator) = &filter.created_by {
            condition = condition.add(tokens::Column::CreatedBy.eq(creator.clone()));
        }
        if !filter.include_revoked {
            condition = condition.add(tokens::Column::RevokedAt.is_null());
        }
        Ok(tokens::Entity::find()
            .filter(condition)
            .order_by_desc(tokens::Column::CreatedAt)
            .order_by_desc(tokens::Column::Id)
            .limit(limit)
            .all(self.connection())
            .await?)
    }

    /// Revokes the tokens and every token derived from them, in one transaction.
    /// Any unknown id refuses the whole request and changes nothing. Returns the ids
    /// newly revoked (already revoked ones are left as they were).
    pub async fn revoke_tokens(&self, ids: &[String]) -> Result<Vec<String>, StoreError> {
        let txn = self.connection().begin().await?;
        if txn.get_database_backend() == DbBackend::Postgres {
            // Sequence numbers are drawn at insert but become visible at commit: two
            // revocations in flight could commit out of order and a reader between the
            // two commits would pass the lower number for good. One revoking
            // transaction at a time (readers are not blocked) rules that out. Taken
            // first, before any token row is locked, so revocations cannot deadlock.
            txn.execute_unprepared("LOCK TABLE revocations IN EXCLUSIVE MODE")
                .await?;
        }
        let mut all: BTreeSet<String> = BTreeSet::new();
        for id in ids {
            if tokens::Entity::find_by_id(id.clone()).one(&txn).await?.is_none() {
                return Err(StoreError::UnknownToken(id.clone()));
            }
            all.insert(id.clone());
        }
        let mut frontier: Vec<String> = all.iter().cloned().collect();
        while !frontier.is_empty() {
            let children = tokens::Entity::find()
                .filter(tokens::Column::ParentId.is_in(frontier.clone()))
                .all(&txn)
                .await?;
            frontier = children
                .into_iter()
                .map(|c| c.id)
                .filter(|id| all.insert(id.clone()))
                .collect();
        }
        let now = chrono::Utc::now();
        let pending = tokens::Entity::find()
            .filter(tokens::Column::Id.is_in(all))
            .filter(tokens::Column::RevokedAt.is_null())
            .all(&txn)
            .await?;
        let mut revoked = Vec::with_capacity(pending.len());
        let mut newest = None;
        for token in pending {
            let expires_at = token.expires_at;
            let id = token.id.clone();
            let mut row: tokens::ActiveModel = token.into();
            row.revoked_at = Set(Some(now));
            row.update(&txn).await?;
            let entry = revocations::ActiveModel {
                token_id: Set(id.clone()),
                expires_at: Set(expires_at),
                revoked_at: Set(now),
                ..Default::default()
            }
            .insert(&txn)
            .await?;
            newest = Some(entry.seq);
            revoked.push(id);
        }
        if let Some(seq) = newest
            && txn.get_database_backend() == DbBackend::Postgres
        {
            // Delivered at commit, to every replica listening: they read the log from
            // their last number (the notice itself carries nothing else).
            txn.execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT pg_notify($1, $2)",
                [REVOCATIONS_CHANNEL.into(), seq.to_string().into()],
            ))
            .await?;
        }
        txn.commit().await?;
        revoked.sort();
        Ok(revoked)
    }

    /// Revokes every live token `user` holds (its sessions) or minted (themselves or by
    /// trading a fastDeploy token), and everything derived from them. Returns the ids
    /// revoked.
    pub async fn revoke_user_tokens(&self, user: &str) -> Result<Vec<String>, StoreError> {
        let now = chrono::Utc::now();
        let ids: Vec<String> = tokens::Entity::find()
            .filter(
                Condition::any()
                    .add(tokens::Column::CreatedBy.eq(user))
                    .add(tokens::Column::CreatedBy.eq(format!("legacy:{user}")))
                    .add(tokens::Column::Subject.eq(format!("user:{user}"))),
            )
            .filter(tokens::Column::RevokedAt.is_null())
            .filter(tokens::Column::ExpiresAt.gt(now))
            .all(self.connection())
            .await?
            .into_iter()
            .map(|t| t.id)
            .collect();
        if ids.is_empty() {
            return Ok(ids);
        }
        self.revoke_tokens(&ids).await
    }

    pub async fn is_revoked(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.find_token(id).await?.is_some_and(|t| t.revoked_at.is_some()))
    }

    /// Revocations after `seq` whose tokens may still verify (not past `exp` plus the
    /// verifiers' leeway), in order.
    pub async fn revocations_after(&self, seq: i64) -> Result<Vec<revocations::Model>, StoreError> {
        let leeway = chrono::Duration::seconds(common::token::LEEWAY_SECS as i64);
        Ok(revocations::Entity::find()
            .filter(revocations::Column::Seq.gt(seq))
            .filter(revocations::Column::ExpiresAt.gt(chrono::Utc::now() - leeway))
            .order_by_asc(revocations::Column::Seq)
            .all(self.connection())
            .await?)
    }
}

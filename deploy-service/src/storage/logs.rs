//! Storing and reading the output of runs (`log_lines`, `deployment_logs`). Only the
//! log writer (`crate::logs`) writes here, one transaction per round, outside the
//! writer lock of deployments and steps: output never waits for step reports, nor
//! they for it.

use sea_orm::{
    ColumnTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set, TransactionTrait, sea_query::OnConflict,
};

use super::{Store, deployment_logs, log_lines};
use crate::model::DeploymentId;

/// Rows per INSERT (5 values each, within SQLite's and PostgreSQL's bind limits).
const ROWS_PER_INSERT: usize = 1000;

/// What one round writes for one run.
#[derive(Debug, Clone, Default)]
pub struct LogBatch {
    pub deployment_id: DeploymentId,
    /// New lines, in line order.
    pub lines: Vec<log_lines::Model>,
    /// Lines numbered below this are gone (dropped to keep the bound): deleted, with
    /// `marker` written in their place.
    pub drop_below: Option<i64>,
    pub marker: Option<log_lines::Model>,
    pub last_line: i64,
    pub dropped_lines: i64,
    pub complete: bool,
}

impl Store {
    /// Writes one round of output, every run's batch in one transaction.
    pub async fn write_log(&self, batches: &[LogBatch]) -> Result<(), DbErr> {
        let txn = self.db.begin().await?;
        for batch in batches {
            let id = batch.deployment_id;
            if let Some(below) = batch.drop_below {
                log_lines::Entity::delete_many()
                    .filter(log_lines::Column::DeploymentId.eq(id))
                    .filter(log_lines::Column::Line.lt(below))
                    .exec(&txn)
                    .await?;
            }
            let rows = batch.marker.iter().chain(&batch.lines);
            let rows: Vec<log_lines::ActiveModel> = rows
                .map(|l| log_lines::ActiveModel {
                    deployment_id: Set(l.deployment_id),
                    line: Set(l.line),
                    stream: Set(l.stream),
                    time: Set(l.time),
                    text: Set(l.text.clone()),
                })
                .collect();
            for chunk in rows.chunks(ROWS_PER_INSERT) {
                log_lines::Entity::insert_many(chunk.to_vec()).exec(&txn).await?;
            }
            let summary = deployment_logs::ActiveModel {
                deployment_id: Set(id),
                last_line: Set(batch.last_line),
                dropped_lines: Set(batch.dropped_lines),
                complete: Set(batch.complete),
            };
            deployment_logs::Entity::insert(summary)
                .on_conflict(
                    OnConflict::column(deployment_logs::Column::DeploymentId)
                        .update_columns([
                            deployment_logs::Column::LastLine,
                            deployment_logs::Column::DroppedLines,
                            deployment_logs::Column::Complete,
                        ])
                        .to_owned(),
                )
                .exec(&txn)
                .await?;
        }
        txn.commit().await
    }

    /// Stored lines of a run after line `after`, in order, at most `limit`.
    pub async fn log_lines(
        &self,
        deployment_id: DeploymentId,
        after: i64,
        limit: u64,
    ) -> Result<Vec<log_lines::Model>, DbErr> {
        log_lines::Entity::find()
            .filter(log_lines::Column::DeploymentId.eq(deployment_id))
            .filter(log_lines::Column::Line.gt(after))
            .order_by_asc(log_lines::Column::Line)
            .limit(limit.min(i64::MAX as u64))
            .all(&self.db)
            .await
    }

    /// How far a run's log goes, if it has one.
    pub async fn log_summary(&self, deployment_id: DeploymentId) -> Result<Option<deployment_logs::Model>, DbErr> {
        deployment_logs::Entity::find_by_id(deployment_id).one(&self.db).await
    }
}

//! Retention's reads and deletes: which finished deployments the policy lets go, and
//! removing them with everything that hangs on them (steps, events, output), a small
//! batch per transaction.

use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, DbBackend, DbErr, EntityTrait, FromQueryResult, QueryFilter, Statement, TransactionTrait};

use super::{Store, deployment_logs, deployments, events, log_lines, steps};
use crate::model::DeploymentId;

#[derive(Debug, FromQueryResult)]
struct Id {
    id: DeploymentId,
}

/// Who may go: finished before `cutoff`, not among the newest `keep` of its service,
/// not its service's last successful deployment (the step plan reads its steps).
const PRUNABLE: &str = "SELECT d.id AS id FROM deployments d
 WHERE d.id > ? AND d.finished IS NOT NULL AND d.finished < ?
   AND d.id <= (SELECT n.id FROM deployments n WHERE n.service = d.service
                ORDER BY n.id DESC LIMIT 1 OFFSET ?)
   AND d.id <> COALESCE((SELECT MAX(s.id) FROM deployments s
                         WHERE s.service_id = d.service_id AND s.status = 'succeeded'), 0)
 ORDER BY d.id LIMIT ?";

/// Whose events may be compacted: finished before `cutoff` (kept by the policy, or
/// the pass would have removed them) and holding more events than one for the
/// deployment and one per step, i.e. not compacted yet.
const COMPACTABLE: &str = "SELECT d.id AS id FROM deployments d
 WHERE d.id > ? AND d.finished IS NOT NULL AND d.finished < ?
   AND (SELECT COUNT(*) FROM events e WHERE e.deployment_id = d.id)
     > 1 + (SELECT COUNT(*) FROM steps s WHERE s.deployment_id = d.id)
 ORDER BY d.id LIMIT ?";

/// `?` placeholders as the backend writes them.
fn placeholders(backend: DbBackend, sql: &str) -> String {
    if backend != DbBackend::Postgres {
        return sql.to_owned();
    }
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push_str(&format!("${n}"));
        } else {
            out.push(c);
        }
    }
    out
}

impl Store {
    /// Up to `limit` deployments with an id above `after` that the policy lets go, in
    /// id order.
    pub async fn prunable(
        &self,
        after: DeploymentId,
        cutoff: DateTime<Utc>,
        keep: u32,
        limit: u32,
    ) -> Result<Vec<DeploymentId>, DbErr> {
        let backend = self.db.get_database_backend();
        let statement = Statement::from_sql_and_values(
            backend,
            placeholders(backend, PRUNABLE),
            [
                after.into(),
                cutoff.into(),
                i64::from(keep).into(),
                i64::from(limit).into(),
            ],
        );
        let rows = Id::find_by_statement(statement).all(&self.db).await?;
        Ok(rows.into_iter().map(|r| r.id).collect())
    }

    /// Up to `limit` deployments with an id above `after`, finished before `cutoff`,
    /// whose events are not compacted yet, in id order.
    pub async fn compactable(
        &self,
        after: DeploymentId,
        cutoff: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<DeploymentId>, DbErr> {
        let backend = self.db.get_database_backend();
        let statement = Statement::from_sql_and_values(
            backend,
            placeholders(backend, COMPACTABLE),
            [after.into(), cutoff.into(), i64::from(limit).into()],
        );
        let rows = Id::find_by_statement(statement).all(&self.db).await?;
        Ok(rows.into_iter().map(|r| r.id).collect())
    }

    /// Compacts the events of these finished deployments to the last event of each
    /// deployment and the last of each of its steps (what a watcher replaying them
    /// ends up knowing), in one transaction; returns how many events went.
    pub async fn compact_events(&self, ids: &[DeploymentId]) -> Result<u64, DbErr> {
        let txn = self.db.begin().await?;
        let rows = events::Entity::find()
            .filter(events::Column::DeploymentId.is_in(ids.iter().copied()))
            .all(&txn)
            .await?;
        let superseded = superseded_events(&rows);
        let gone = match superseded.is_empty() {
            true => 0,
            false => {
                events::Entity::delete_many()
                    .filter(events::Column::Sequence.is_in(superseded))
                    .exec(&txn)
                    .await?
                    .rows_affected
            }
        };
        txn.commit().await?;
        Ok(gone)
    }

    /// Deletes these deployments with their steps, events and output, in one
    /// transaction. Unfinished ones are left alone, whatever the caller asked.
    pub async fn prune(&self, ids: &[DeploymentId]) -> Result<u64, DbErr> {
        let txn = self.db.begin().await?;
        let finished: Vec<DeploymentId> = deployments::Entity::find()
            .filter(deployments::Column::Id.is_in(ids.iter().copied()))
            .filter(deployments::Column::Finished.is_not_null())
            .all(&txn)
            .await?
            .into_iter()
            .map(|d| d.id)
            .collect();
        log_lines::Entity::delete_many()
            .filter(log_lines::Column::DeploymentId.is_in(finished.clone()))
            .exec(&txn)
            .await?;
        deployment_logs::Entity::delete_many()
            .filter(deployment_logs::Column::DeploymentId.is_in(finished.clone()))
            .exec(&txn)
            .await?;
        events::Entity::delete_many()
            .filter(events::Column::DeploymentId.is_in(finished.clone()))
            .exec(&txn)
            .await?;
        steps::Entity::delete_many()
            .filter(steps::Column::DeploymentId.is_in(finished.clone()))
            .exec(&txn)
            .await?;
        let gone = deployments::Entity::delete_many()
            .filter(deployments::Column::Id.is_in(finished))
            .exec(&txn)
            .await?
            .rows_affected;
        txn.commit().await?;
        Ok(gone)
    }
}

/// The events a later one of the same deployment and the same thing (the deployment
/// itself, or one step, by its id) supersedes: all but the last of each.
fn superseded_events(rows: &[events::Model]) -> Vec<i64> {
    use std::collections::HashMap;
    let mut last: HashMap<(DeploymentId, String, String), i64> = HashMap::new();
    for row in rows {
        let which = match row.kind.as_str() {
            "step" => row
                .payload
                .get("id")
                .or_else(|| row.payload.get("name"))
                .map(ToString::to_string)
                .unwrap_or_default(),
            _ => String::new(),
        };
        let entry = last
            .entry((row.deployment_id, row.kind.clone(), which))
            .or_insert(row.sequence);
        *entry = (*entry).max(row.sequence);
    }
    let kept: std::collections::HashSet<i64> = last.into_values().collect();
    rows.iter().map(|r| r.sequence).filter(|s| !kept.contains(s)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(sequence: i64, deployment_id: DeploymentId, kind: &str, payload: serde_json::Value) -> events::Model {
        events::Model {
            sequence,
            deployment_id,
            service: "s".into(),
            kind: kind.into(),
            deleted: false,
            payload,
            created_at: Utc::now(),
        }
    }

    #[test]
    fn compaction_keeps_the_last_event_of_each_deployment_and_step() {
        use serde_json::json;
        let rows = [
            event(1, DeploymentId(7), "deployment", json!({"status": "running"})),
            event(2, DeploymentId(7), "step", json!({"id": "1", "state": "running"})),
            event(3, DeploymentId(7), "step", json!({"id": "2", "state": "pending"})),
            event(4, DeploymentId(7), "step", json!({"id": "1", "state": "success"})),
            event(5, DeploymentId(8), "deployment", json!({"status": "running"})),
            event(6, DeploymentId(7), "step", json!({"id": "2", "state": "success"})),
            event(7, DeploymentId(7), "deployment", json!({"status": "succeeded"})),
        ];
        let mut gone = superseded_events(&rows);
        gone.sort_unstable();
        assert_eq!(gone, [1, 2, 3]);
    }

    #[test]
    fn placeholders_are_numbered_for_postgres() {
        assert_eq!(placeholders(DbBackend::Postgres, "a ? b ? c"), "a $1 b $2 c");
        assert_eq!(placeholders(DbBackend::Sqlite, "a ? b"), "a ? b");
    }
}

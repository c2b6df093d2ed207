//! Runs claimed in the database, so that several deploy-service replicas share one
//! queue (issue 15). `run_queue` holds live runs only. A claim takes the oldest
//! queued row whose service is under its limit, gives it a free per-service slot and
//! a free global slot (unique indexes: the database refuses a run over either limit,
//! whichever replica asks), names the claiming replica as owner with a lease and
//! raises its fence, and starts the deployment, all in one transaction. On
//! PostgreSQL claims are serialized by a transaction-scoped advisory lock, so they do
//! not collide on a slot; on SQLite there is one process and its writer lock.
//!
//! Locks are taken in one order everywhere: the advisory lock, then a deployment's
//! row, then its `run_queue` row.
//!
//! The owner renews its leases (one UPDATE per heartbeat) and learns from it which of
//! its runs a user asked to cancel elsewhere. Every replica sweeps running rows whose
//! lease has expired: their deployments end failed ("the runner was lost") and the
//! rows go, freeing the slots. The owner's writes for a run name its `Claim` (owner
//! and fence) and are refused once the row is gone or taken over: a replica that
//! comes back late writes nothing.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseTransaction, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, TransactionTrait,
    sea_query::{Expr, ExprTrait},
};

use super::{
    Store, deployments,
    run_queue::{self, QUEUED, RUNNING},
};
use crate::model::{DeploymentId, Outcome, Status};

/// How long a lease lasts without a renewal. The owner renews every
/// [`HEARTBEAT`]; a replica that dies has its runs ended about this long after its
/// last renewal (plus a sweep interval).
pub const LEASE: Duration = Duration::from_secs(10);
/// How often an owner renews its leases, and every replica sweeps expired ones.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// Why a run whose owner stopped renewing its lease was ended.
pub const RUNNER_LOST: &str = "the runner was lost: its deploy-service replica stopped renewing the run's lease";

/// The advisory lock key that serializes claims on PostgreSQL ("SLPW" + 1).
const CLAIM_LOCK: i64 = 0x534c_5057_0001;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_running: u32,
    pub max_running_per_service: u32,
}

/// A replica's hold on one run: its writes for the run name it, and are refused once
/// the run was ended by another replica (or taken over after a restart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub owner: String,
    pub fence: i64,
}

/// Why a fenced write was not made.
#[derive(Debug, thiserror::Error)]
pub enum Fenced {
    #[error("the run is no longer this replica's")]
    Lost,
    #[error(transparent)]
    Db(#[from] DbErr),
}

/// The database's clock in milliseconds since the epoch (leases are compared by one
/// clock, whichever replica writes or reads them).
fn now_ms(backend: DatabaseBackend) -> &'static str {
    match backend {
        DatabaseBackend::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        _ => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
    }
}

fn lease_end(backend: DatabaseBackend) -> Expr {
    Expr::cust(format!("({} + {})", now_ms(backend), LEASE.as_millis()))
}

/// Serializes claims across replicas until `txn` ends (PostgreSQL; SQLite has one
/// writer at a time anyway).
pub(super) async fn serialize_claims(txn: &DatabaseTransaction) -> Result<(), DbErr> {
    if txn.get_database_backend() == DatabaseBackend::Postgres {
        txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({CLAIM_LOCK})"))
            .await?;
    }
    Ok(())
}

/// The slots running rows hold.
#[derive(Default)]
pub(super) struct Slots {
    per_service: HashMap<String, Vec<i32>>,
    global: HashSet<i32>,
    running: usize,
}

impl Slots {
    pub(super) async fn read(txn: &DatabaseTransaction) -> Result<Slots, DbErr> {
        let rows: Vec<(String, Option<i32>, Option<i32>)> = run_queue::Entity::find()
            .select_only()
            .column(run_queue::Column::Service)
            .column(run_queue::Column::Slot)
            .column(run_queue::Column::GlobalSlot)
            .filter(run_queue::Column::State.eq(RUNNING))
            .into_tuple()
            .all(txn)
            .await?;
        let mut slots = Slots::default();
        for (service, slot, global) in rows {
            let of = slots.per_service.entry(service).or_default();
            of.extend(slot);
            // A row without a slot still counts (it cannot be, but it must not let a
            // run more start).
            if slot.is_none() {
                of.push(-1);
            }
            slots.global.insert(global.unwrap_or(-1));
            slots.running += 1;
        }
        Ok(slots)
    }

    /// Free slots for a run of `service`: (per service, global), if both limits allow.
    pub(super) fn free_for(&self, service: &str, limits: Limits) -> Option<(i32, i32)> {
        let of = self.per_service.get(service).map(Vec::as_slice).unwrap_or(&[]);
        if self.running >= limits.max_running as usize {
            return None;
        }
        let global =
            (0..i32::try_from(limits.max_running).unwrap_or(i32::MAX)).find(|slot| !self.global.contains(slot))?;
        Some((free(of, limits.max_running_per_service)?, global))
    }

    /// Records a run just given `slots` (per service, global) in this batch.
    fn take(&mut self, service: &str, (slot, global): (i32, i32)) {
        self.per_service.entry(service.to_owned()).or_default().push(slot);
        self.global.insert(global);
        self.running += 1;
    }

    /// Services at their limit.
    fn full(&self, limits: Limits) -> Vec<String> {
        self.per_service
            .iter()
            .filter(|(_, slots)| slots.len() >= limits.max_running_per_service as usize)
            .map(|(service, _)| service.clone())
            .collect()
    }
}

/// The lowest slot below `max` that `used` does not hold.
fn free(used: &[i32], max: u32) -> Option<i32> {
    if used.len() >= max as usize {
        return None;
    }
    (0..i32::try_from(max).unwrap_or(i32::MAX)).find(|slot| !used.contains(slot))
}

/// Makes a queued row running for `owner` in `slots`; returns its claim, None if the
/// row is no longer queued.
pub(super) async fn claim_row(
    txn: &DatabaseTransaction,
    row: &run_queue::Model,
    owner: &str,
    (slot, global): (i32, i32),
) -> Result<Option<Claim>, DbErr> {
    let fence = row.fence + 1;
    let updated = run_queue::Entity::update_many()
        .col_expr(run_queue::Column::State, Expr::value(RUNNING))
        .col_expr(run_queue::Column::Owner, Expr::value(owner))
        .col_expr(run_queue::Column::LeaseExpires, lease_end(txn.get_database_backend()))
        .col_expr(run_queue::Column::Fence, Expr::value(fence))
        .col_expr(run_queue::Column::Slot, Expr::value(slot))
        .col_expr(run_queue::Column::GlobalSlot, Expr::value(global))
        .filter(run_queue::Column::DeploymentId.eq(row.deployment_id))
        .filter(run_queue::Column::State.eq(QUEUED))
        .exec(txn)
        .await?;
    Ok((updated.rows_affected == 1).then(|| Claim {
        owner: owner.to_owned(),
        fence,
    }))
}

/// Whether `claim` still holds the run (checked inside the caller's transaction,
/// after the deployment's row was locked).
pub(super) async fn holds(txn: &DatabaseTransaction, id: DeploymentId, claim: &Claim) -> Result<bool, DbErr> {
    Ok(run_queue::Entity::find_by_id(id)
        .filter(run_queue::Column::Owner.eq(claim.owner.as_str()))
        .filter(run_queue::Column::Fence.eq(claim.fence))
        .one(txn)
        .await?
        .is_some())
}

/// Deployments' rows, locked for the rest of the transaction in order of id
/// (PostgreSQL; SQLite has one writer at a time).
async fn lock_deployments(
    txn: &DatabaseTransaction,
    ids: impl IntoIterator<Item = DeploymentId>,
) -> Result<Vec<deployments::Model>, DbErr> {
    deployments::Entity::find()
        .filter(deployments::Column::Id.is_in(ids))
        .order_by_asc(deployments::Column::Id)
        .lock_exclusive()
        .all(txn)
        .await
}

/// A deployment's row, locked for the rest of the transaction (PostgreSQL; SQLite
/// has one writer at a time).
pub(super) async fn lock_deployment(
    txn: &DatabaseTransaction,
    id: DeploymentId,
) -> Result<Option<deployments::Model>, DbErr> {
    deployments::Entity::find_by_id(id).lock_exclusive().one(txn).await
}

impl Store {
    /// Claims the oldest queued deployment that the limits let start, for `owner`,
    /// and starts it (running, its first pending step running). None when nothing
    /// can start now.
    pub async fn claim_next(&self, owner: &str, limits: Limits) -> Result<Option<(deployments::Model, Claim)>, DbErr> {
        Ok(self.claim_batch(owner, limits, 1).await?.pop())
    }

    /// Claims up to `max` queued deployments that the limits let start, oldest first,
    /// for `owner`, and starts them (running, each one's first pending step running),
    /// in one transaction: one turn of the claim lock and one commit for the batch.
    /// Empty when nothing can start now.
    pub async fn claim_batch(
        &self,
        owner: &str,
        limits: Limits,
        max: usize,
    ) -> Result<Vec<(deployments::Model, Claim)>, DbErr> {
        // Most calls find nothing queued: asked without any lock.
        let any: Option<DeploymentId> = run_queue::Entity::find()
            .select_only()
            .column(run_queue::Column::DeploymentId)
            .filter(run_queue::Column::State.eq(QUEUED))
            .into_tuple()
            .one(&self.db)
            .await?;
        if any.is_none() || max == 0 {
            return Ok(Vec::new());
        }
        let _writer = self.writer.lock().await;
        let txn = self.db.begin().await?;
        serialize_claims(&txn).await?;
        let mut slots = Slots::read(&txn).await?;
        let want = max.min((limits.max_running as usize).saturating_sub(slots.running));
        if want == 0 {
            return Ok(Vec::new());
        }
        let full = slots.full(limits);
        let mut candidates = run_queue::Entity::find().filter(run_queue::Column::State.eq(QUEUED));
        if !full.is_empty() {
            candidates = candidates.filter(run_queue::Column::Service.is_not_in(full));
        }
        // Several of one service may come first; read more than can start.
        let candidates = candidates
            .order_by_asc(run_queue::Column::DeploymentId)
            .limit(u64::try_from(want.saturating_mul(4)).unwrap_or(u64::MAX))
            .all(&txn)
            .await?;
        // The runs to start, as the slots allow, before any row is locked.
        let mut picked = Vec::with_capacity(want);
        for next in candidates {
            if picked.len() == want {
                break;
            }
            // A service that filled up in this batch is passed over: its later
            // deployments wait for the earlier ones (FIFO within a service).
            if let Some(free) = slots.free_for(&next.service, limits) {
                slots.take(&next.service, free);
                picked.push((next, free));
            }
        }
        let ids = picked.iter().map(|(row, _)| row.deployment_id);
        let locked: HashMap<DeploymentId, deployments::Model> = lock_deployments(&txn, ids)
            .await?
            .into_iter()
            .map(|d| (d.id, d))
            .collect();
        let mut claims = Vec::with_capacity(picked.len());
        let mut starting = Vec::with_capacity(picked.len());
        for (row, free) in &picked {
            let Some(deployment) = locked.get(&row.deployment_id).filter(|d| d.status == Status::Queued) else {
                // Ended (cancelled) while queued: its row should be gone already.
                run_queue::Entity::delete_by_id(row.deployment_id).exec(&txn).await?;
                continue;
            };
            if let Some(claim) = claim_row(&txn, row, owner, *free).await? {
                claims.push(claim);
                starting.push(deployment.clone());
            }
        }
        let (started, emitted) = self.start_in(&txn, starting, owner).await?;
        match emitted {
            Some(emitted) => self.commit(txn, emitted).await?,
            None => txn.commit().await?,
        }
        Ok(started.into_iter().zip(claims).collect())
    }

    /// Renews `owner`'s leases of the runs `ids` in one statement; returns the rows
    /// renewed (a run missing from them may have been lost).
    pub async fn renew(&self, owner: &str, ids: &[DeploymentId]) -> Result<Vec<run_queue::Model>, DbErr> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let _writer = self.writer.lock().await;
        run_queue::Entity::update_many()
            .col_expr(
                run_queue::Column::LeaseExpires,
                lease_end(self.db.get_database_backend()),
            )
            .filter(run_queue::Column::Owner.eq(owner))
            .filter(run_queue::Column::State.eq(RUNNING))
            .filter(run_queue::Column::DeploymentId.is_in(ids.iter().copied()))
            .exec_with_returning(&self.db)
            .await
    }

    /// Running rows whose lease has expired.
    pub async fn expired_runs(&self) -> Result<Vec<run_queue::Model>, DbErr> {
        let now = Expr::cust(now_ms(self.db.get_database_backend()));
        run_queue::Entity::find()
            .filter(run_queue::Column::State.eq(RUNNING))
            .filter(Expr::col(run_queue::Column::LeaseExpires).lt(now))
            .order_by_asc(run_queue::Column::DeploymentId)
            .all(&self.db)
            .await
    }

    /// Running rows of `owner`, and those owned by nobody (adopted from before
    /// `run_queue`): what a replica finds of its own when it starts.
    pub async fn own_runs(&self, owner: &str) -> Result<Vec<run_queue::Model>, DbErr> {
        run_queue::Entity::find()
            .filter(run_queue::Column::State.eq(RUNNING))
            .filter(
                run_queue::Column::Owner
                    .eq(owner)
                    .or(run_queue::Column::Owner.is_null()),
            )
            .order_by_asc(run_queue::Column::DeploymentId)
            .all(&self.db)
            .await
    }

    /// The live run of a deployment, if any.
    pub async fn run_row(&self, id: DeploymentId) -> Result<Option<run_queue::Model>, DbErr> {
        run_queue::Entity::find_by_id(id).one(&self.db).await
    }

    /// Asks the owner of a running run to cancel it (it sees this at its next
    /// heartbeat). None when the deployment has no running run.
    pub async fn request_cancel(&self, id: DeploymentId, by: &str) -> Result<Option<run_queue::Model>, DbErr> {
        let _writer = self.writer.lock().await;
        let rows = run_queue::Entity::update_many()
            .col_expr(run_queue::Column::CancelBy, Expr::value(by))
            .filter(run_queue::Column::DeploymentId.eq(id))
            .filter(run_queue::Column::State.eq(RUNNING))
            .exec_with_returning(&self.db)
            .await?;
        Ok(rows.into_iter().next())
    }

    /// Ends a run whose owner is gone: its deployment failed for `reason` (unless it
    /// ended already) and its row removed, provided the row is still as read in
    /// `row` (same fence) and, with `only_expired`, its lease still expired (the
    /// owner may have renewed it meanwhile). Returns the deployment when this call
    /// removed the run (its token is then to be revoked), None when another replica
    /// or the owner got there first.
    pub async fn end_orphaned(
        &self,
        row: &run_queue::Model,
        reason: &str,
        only_expired: bool,
    ) -> Result<Option<deployments::Model>, DbErr> {
        let _writer = self.writer.lock().await;
        let txn = self.db.begin().await?;
        let deployment = lock_deployment(&txn, row.deployment_id).await?;
        let mut delete = run_queue::Entity::delete_many()
            .filter(run_queue::Column::DeploymentId.eq(row.deployment_id))
            .filter(run_queue::Column::Fence.eq(row.fence))
            .filter(run_queue::Column::State.eq(RUNNING));
        if only_expired {
            let now = Expr::cust(now_ms(txn.get_database_backend()));
            delete = delete.filter(Expr::col(run_queue::Column::LeaseExpires).lt(now));
        }
        if delete.exec(&txn).await?.rows_affected == 0 {
            return Ok(None);
        }
        let Some(deployment) = deployment else {
            txn.commit().await?;
            return Ok(None);
        };
        if deployment.finished.is_some() {
            txn.commit().await?;
            return Ok(Some(deployment));
        }
        let (ended, emitted) = self
            .end_in(&txn, deployment, &Outcome::Failed(reason.to_owned()), None)
            .await?;
        self.commit(txn, emitted).await?;
        Ok(Some(ended))
    }
}

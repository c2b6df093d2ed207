//! Changing deployments and steps. Each change is one transaction under the writer
//! lock that also stores one event per changed row (and, on PostgreSQL, notifies the
//! other replicas' feeds); after the commit the events go to this replica's feed.
//! A change to a deployment or its steps locks the deployment's row first
//! (PostgreSQL), so that replicas applying step reports, finishes and ends to one
//! deployment take turns.

use std::collections::HashMap;

use sea_orm::{
    ActiveEnum, ActiveModelTrait, ColumnTrait, DatabaseTransaction, DbErr, EntityTrait, QueryFilter, QueryOrder, Set,
    TransactionTrait, sea_query::Expr,
};
use serde_json::Value;

use super::{
    Store,
    claims::{self, Claim, Limits, Slots},
    deployments, events, run_queue, steps,
};
use crate::model::DeploymentId;
use crate::{
    convert,
    model::{FAILED_STEP, Outcome, Report, ServiceId, Status, StepState, now},
    steps as machine,
};

/// What a new deployment is made of.
#[derive(Debug, Clone)]
pub struct NewDeployment {
    pub service_id: ServiceId,
    pub service: String,
    pub origin: String,
    pub user: String,
    pub context: Value,
    /// Relative to the services directory.
    pub deploy_script: String,
    pub timeout_secs: i64,
    /// Planned step names, in order.
    pub steps: Vec<String>,
}

/// Why a step report or a finish request was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ReportRefused {
    #[error("deployment not found")]
    NotFound,
    #[error("the deployment has not started yet")]
    NotStarted,
    #[error("the deployment is finished")]
    Finished,
    /// The run is no longer the reporting runner's (another replica ended it).
    #[error("the run is no longer this replica's")]
    Lost,
    #[error(transparent)]
    Db(#[from] DbErr),
}

/// Events of the current transaction, stored in one statement before its commit and
/// handed to the feed after it.
pub(super) struct Emitted {
    service: String,
    deployment_id: DeploymentId,
    pending: Vec<events::ActiveModel>,
}

impl Emitted {
    pub(super) fn new(deployment: &deployments::Model) -> Emitted {
        Emitted {
            service: deployment.service.clone(),
            deployment_id: deployment.id,
            pending: Vec::new(),
        }
    }

    fn push(&mut self, kind: &str, deleted: bool, payload: Value) {
        self.pending.push(events::ActiveModel {
            deployment_id: Set(self.deployment_id),
            service: Set(self.service.clone()),
            kind: Set(kind.into()),
            deleted: Set(deleted),
            payload: Set(payload),
            created_at: Set(now()),
            ..Default::default()
        });
    }

    fn deployment(&mut self, row: &deployments::Model) {
        self.push("deployment", false, convert::deployment_payload(row));
    }

    fn step(&mut self, row: &steps::Model, deleted: bool) {
        self.push("step", deleted, convert::step_payload(row));
    }

    /// Adds another deployment's events after these (one commit for several).
    pub(super) fn append(&mut self, other: Emitted) {
        self.pending.extend(other.pending);
    }

    /// Stores the events; their sequences follow the order they were pushed in.
    async fn store(self, txn: &DatabaseTransaction) -> Result<Vec<events::Model>, DbErr> {
        if self.pending.is_empty() {
            return Ok(Vec::new());
        }
        let mut stored = events::Entity::insert_many(self.pending)
            .exec_with_returning(txn)
            .await?;
        stored.sort_by_key(|e| e.sequence);
        Ok(stored)
    }
}

/// Inserts the rows of `steps` that have no id yet (id 0), in one statement, and
/// gives them their ids (matched by sequence, unique within a deployment).
async fn insert_new_steps(txn: &DatabaseTransaction, steps: &mut [steps::Model]) -> Result<(), DbErr> {
    let new: Vec<steps::ActiveModel> = steps
        .iter()
        .filter(|s| s.id == 0)
        .map(|s| {
            let mut row = steps::ActiveModel::from(s.clone()).reset_all();
            row.id = sea_orm::ActiveValue::NotSet;
            row
        })
        .collect();
    if new.is_empty() {
        return Ok(());
    }
    let inserted = steps::Entity::insert_many(new).exec_with_returning(txn).await?;
    let ids: HashMap<i64, i64> = inserted.iter().map(|s| (s.sequence, s.id)).collect();
    for step in steps.iter_mut().filter(|s| s.id == 0) {
        step.id = *ids
            .get(&step.sequence)
            .ok_or_else(|| DbErr::Custom(format!("step {} not inserted", step.sequence)))?;
    }
    Ok(())
}

async fn update_step(txn: &DatabaseTransaction, row: &steps::Model) -> Result<(), DbErr> {
    steps::ActiveModel::from(row.clone()).reset_all().update(txn).await?;
    Ok(())
}

pub(super) async fn save_deployment(
    txn: &DatabaseTransaction,
    row: deployments::Model,
) -> Result<deployments::Model, DbErr> {
    deployments::ActiveModel::from(row).reset_all().update(txn).await
}

async fn visible_steps(txn: &DatabaseTransaction, deployment_id: DeploymentId) -> Result<Vec<steps::Model>, DbErr> {
    steps::Entity::find()
        .filter(steps::Column::DeploymentId.eq(deployment_id))
        .filter(steps::Column::Removed.eq(false))
        .order_by_asc(steps::Column::Sequence)
        .all(txn)
        .await
}

fn is(row: &steps::Model, state: StepState) -> bool {
    row.state == state.as_str()
}

impl Store {
    /// Stores the events, announces them to every replica's feed (a PostgreSQL notice
    /// sent at commit), commits `txn` and hands them to this replica's feed, which
    /// delivers them at once when nothing from another replica comes between.
    pub(super) async fn commit(&self, txn: DatabaseTransaction, emitted: Emitted) -> Result<(), DbErr> {
        let events = emitted.store(&txn).await?;
        if let Some(last) = events.last() {
            common::feed::announce(&txn, super::EVENTS_CHANNEL, last.sequence).await?;
        }
        txn.commit().await?;
        self.feed.committed(events);
        Ok(())
    }

    /// Records a queued deployment and its planned steps, all pending.
    pub async fn create_deployment(
        &self,
        new: NewDeployment,
    ) -> Result<(deployments::Model, Vec<steps::Model>), DbErr> {
        let (deployment, steps, _) = self.insert_deployment(new, None).await?;
        Ok((deployment, steps))
    }

    /// Accepts a deployment for the replica `owner`: when the limits allow and no
    /// deployment of its service waits before it, it starts at once, claimed by
    /// `owner` (running, its first planned step running, announced once as fastDeploy
    /// does, contract 2.11: the `deployment` event, then one `step` event per planned
    /// step); else it is queued. The claim says which.
    pub async fn accept(
        &self,
        new: NewDeployment,
        owner: &str,
        limits: Limits,
    ) -> Result<(deployments::Model, Vec<steps::Model>, Option<Claim>), DbErr> {
        self.insert_deployment(new, Some((owner, limits))).await
    }

    async fn insert_deployment(
        &self,
        new: NewDeployment,
        start: Option<(&str, Limits)>,
    ) -> Result<(deployments::Model, Vec<steps::Model>, Option<Claim>), DbErr> {
        let _writer = self.writer.lock().await;
        let txn = self.db.begin().await?;
        let mut slots = None;
        if let Some((_, limits)) = start {
            claims::serialize_claims(&txn).await?;
            let waiting = run_queue::Entity::find()
                .filter(run_queue::Column::Service.eq(new.service.as_str()))
                .filter(run_queue::Column::State.eq(run_queue::QUEUED))
                .one(&txn)
                .await?;
            if waiting.is_none() {
                slots = Slots::read(&txn).await?.free_for(&new.service, limits);
            }
        }
        let runner_id = start.filter(|_| slots.is_some()).map(|(owner, _)| owner);
        let at = now();
        let status = if runner_id.is_some() {
            Status::Running
        } else {
            Status::Queued
        };
        let deployment = deployments::ActiveModel {
            service_id: Set(new.service_id),
            service: Set(new.service),
            origin: Set(new.origin),
            user: Set(new.user),
            context: Set(new.context),
            status: Set(status),
            started: Set(Some(at)),
            run_started: Set(runner_id.map(|_| at)),
            runner_id: Set(runner_id.map(str::to_owned)),
            deploy_script: Set(Some(new.deploy_script)),
            timeout_secs: Set(Some(new.timeout_secs)),
            finish_requested: Set(false),
            ..Default::default()
        }
        .insert(&txn)
        .await?;
        let queued = run_queue::ActiveModel {
            deployment_id: Set(deployment.id),
            service: Set(deployment.service.clone()),
            state: Set(run_queue::QUEUED.into()),
            owner: Set(None),
            lease_expires: Set(0),
            fence: Set(0),
            slot: Set(None),
            global_slot: Set(None),
            cancel_by: Set(None),
        }
        .insert(&txn)
        .await?;
        let claim = match (runner_id, slots) {
            (Some(owner), Some(slots)) => claims::claim_row(&txn, &queued, owner, slots).await?,
            _ => None,
        };
        let mut planned: Vec<steps::Model> = new
            .steps
            .into_iter()
            .enumerate()
            .map(|(i, name)| {
                let runs = i == 0 && runner_id.is_some();
                let state = if runs { StepState::Running } else { StepState::Pending };
                steps::Model {
                    id: 0,
                    deployment_id: deployment.id,
                    sequence: i as i64 + 1,
                    name,
                    state: state.as_str().into(),
                    started: runs.then_some(at),
                    finished: None,
                    message: String::new(),
                    removed: false,
                }
            })
            .collect();
        insert_new_steps(&txn, &mut planned).await?;
        let mut emitted = Emitted::new(&deployment);
        emitted.deployment(&deployment);
        for step in &planned {
            emitted.step(step, false);
        }
        self.commit(txn, emitted).await?;
        Ok((deployment, planned, claim))
    }

    /// Starts queued deployments claimed by `owner` in `txn` (their rows locked): each
    /// running, its first pending step running, with a few statements for all of them.
    /// The deployments as started, in the order given, and their events.
    pub(super) async fn start_in(
        &self,
        txn: &DatabaseTransaction,
        mut started: Vec<deployments::Model>,
        owner: &str,
    ) -> Result<(Vec<deployments::Model>, Option<Emitted>), DbErr> {
        if started.is_empty() {
            return Ok((started, None));
        }
        let at = now();
        let ids: Vec<DeploymentId> = started.iter().map(|d| d.id).collect();
        deployments::Entity::update_many()
            .col_expr(deployments::Column::Status, Expr::value(Status::Running.to_value()))
            .col_expr(deployments::Column::RunStarted, Expr::value(at))
            .col_expr(deployments::Column::RunnerId, Expr::value(owner))
            .filter(deployments::Column::Id.is_in(ids.iter().copied()))
            .exec(txn)
            .await?;
        let mut steps: HashMap<DeploymentId, Vec<steps::Model>> = HashMap::new();
        for step in steps::Entity::find()
            .filter(steps::Column::DeploymentId.is_in(ids.iter().copied()))
            .filter(steps::Column::Removed.eq(false))
            .order_by_asc(steps::Column::Sequence)
            .all(txn)
            .await?
        {
            steps.entry(step.deployment_id).or_default().push(step);
        }
        let mut first_steps = Vec::new();
        let mut all: Option<Emitted> = None;
        for deployment in &mut started {
            deployment.status = Status::Running;
            deployment.run_started = Some(at);
            deployment.runner_id = Some(owner.to_owned());
            let mut emitted = Emitted::new(deployment);
            emitted.deployment(deployment);
            let of = steps.get_mut(&deployment.id).map(Vec::as_mut_slice).unwrap_or_default();
            if let Some(first) = machine::next_pending(of) {
                let step = &mut of[first];
                step.state = StepState::Running.as_str().into();
                step.started = Some(at);
                emitted.step(step, false);
                first_steps.push(step.id);
            }
            match &mut all {
                Some(all) => all.append(emitted),
                None => all = Some(emitted),
            }
        }
        if !first_steps.is_empty() {
            steps::Entity::update_many()
                .col_expr(steps::Column::State, Expr::value(StepState::Running.as_str()))
                .col_expr(steps::Column::Started, Expr::value(at))
                .filter(steps::Column::Id.is_in(first_steps))
                .exec(txn)
                .await?;
        }
        Ok((started, all))
    }

    /// Applies step reports to a running deployment in one transaction. Returns, per
    /// report, the step it applied to (as the batch left it).
    /// With `claim` (the runner's own reports), refused once the run is no longer
    /// the claim's.
    pub async fn apply_reports(
        &self,
        id: DeploymentId,
        reports: &[Report],
        claim: Option<&Claim>,
    ) -> Result<Vec<steps::Model>, ReportRefused> {
        let _writer = self.writer.lock().await;
        let txn = self.db.begin().await?;
        let deployment = claims::lock_deployment(&txn, id)
            .await?
            .ok_or(ReportRefused::NotFound)?;
        if let Some(claim) = claim
            && !claims::holds(&txn, id, claim).await?
        {
            return Err(ReportRefused::Lost);
        }
        if deployment.status == Status::Queued {
            return Err(ReportRefused::NotStarted);
        }
        if deployment.status != Status::Running || deployment.finished.is_some() || deployment.finish_requested {
            return Err(ReportRefused::Finished);
        }
        // Read under the deployment's lock: another replica may have changed them.
        let mut steps = visible_steps(&txn, id).await?;
        let at = now();
        let mut applied = Vec::with_capacity(reports.len());
        // Each change as it was, for its event; ids of new rows are filled in later.
        let mut changes: Vec<(usize, steps::Model)> = Vec::new();
        let stored = steps.len();
        let mut dirty = vec![false; stored];
        for report in reports {
            let changed = machine::apply(&mut steps, id, report, at);
            applied.push(changed[0]);
            for i in changed {
                if let Some(d) = dirty.get_mut(i) {
                    *d = true;
                }
                changes.push((i, steps[i].clone()));
            }
        }
        // New rows go in as the batch left them; changed stored rows are updated.
        insert_new_steps(&txn, &mut steps).await?;
        for (step, _) in steps[..stored].iter().zip(&dirty).filter(|(_, d)| **d) {
            update_step(&txn, step).await?;
        }
        let mut emitted = Emitted::new(&deployment);
        for (i, mut snapshot) in changes {
            snapshot.id = steps[i].id;
            emitted.step(&snapshot, false);
        }
        self.commit(txn, emitted).await?;
        Ok(applied.into_iter().map(|i| steps[i].clone()).collect())
    }

    /// The script (or a user) says the deployment is finished: no more reports are
    /// taken from now on (the caller then ends it with `end_deployment`). A finished
    /// deployment is returned unchanged.
    pub async fn request_finish(&self, id: DeploymentId) -> Result<deployments::Model, ReportRefused> {
        let _writer = self.writer.lock().await;
        let txn = self.db.begin().await?;
        let mut deployment = claims::lock_deployment(&txn, id)
            .await?
            .ok_or(ReportRefused::NotFound)?;
        if deployment.status == Status::Queued {
            return Err(ReportRefused::NotStarted);
        }
        if deployment.finished.is_some() || deployment.finish_requested || deployment.status != Status::Running {
            return Ok(deployment);
        }
        deployment.finish_requested = true;
        let deployment = save_deployment(&txn, deployment).await?;
        txn.commit().await?;
        Ok(deployment)
    }

    /// Ends a deployment: a `failed step` saying why when it failed or was cancelled,
    /// its status, `finished`, and every step still pending or running removed (with
    /// a `deleted` event). An ended deployment is returned unchanged. With
    /// `only_if_queued`, a deployment that is no longer queued is left alone (None).
    /// A queued deployment leaves the queue; a running one keeps its run (and slot)
    /// until its runner has stopped the script.
    pub async fn end_deployment(
        &self,
        id: DeploymentId,
        outcome: &Outcome,
        exit_code: Option<i64>,
        only_if_queued: bool,
    ) -> Result<Option<deployments::Model>, DbErr> {
        let _writer = self.writer.lock().await;
        let txn = self.db.begin().await?;
        let Some(deployment) = claims::lock_deployment(&txn, id).await? else {
            return Ok(None);
        };
        if only_if_queued && deployment.status != Status::Queued {
            return Ok(None);
        }
        if deployment.finished.is_some() {
            return Ok(Some(deployment));
        }
        if deployment.status == Status::Queued {
            run_queue::Entity::delete_many()
                .filter(run_queue::Column::DeploymentId.eq(id))
                .filter(run_queue::Column::State.eq(run_queue::QUEUED))
                .exec(&txn)
                .await?;
        }
        let (deployment, emitted) = self.end_in(&txn, deployment, outcome, exit_code).await?;
        self.commit(txn, emitted).await?;
        Ok(Some(deployment))
    }

    /// Ends an unfinished deployment (its row locked in `txn`); see `end_deployment`.
    pub(super) async fn end_in(
        &self,
        txn: &DatabaseTransaction,
        mut deployment: deployments::Model,
        outcome: &Outcome,
        exit_code: Option<i64>,
    ) -> Result<(deployments::Model, Emitted), DbErr> {
        let id = deployment.id;
        let at = now();
        let steps = visible_steps(txn, id).await?;
        let failed = steps.iter().find(|s| is(s, StepState::Failure));
        // A step that failed already says why: no `failed step` beside it (contract
        // 4.9, 4.10); the run's own reason stays in `failure_reason`.
        let (status, reason, failed_step) = match (outcome, failed) {
            (Outcome::Exited, None) => (Status::Succeeded, None, None),
            (Outcome::Exited, Some(step)) => (Status::Failed, Some(format!("step {:?} failed", step.name)), None),
            (Outcome::Failed(why), None) => (Status::Failed, Some(why.clone()), Some(why.clone())),
            (Outcome::Failed(why), Some(step)) => (
                Status::Failed,
                Some(format!("step {:?} failed; {why}", step.name)),
                None,
            ),
            (Outcome::Cancelled(why), None) => (Status::Cancelled, Some(why.clone()), Some(why.clone())),
            (Outcome::Cancelled(why), Some(step)) => (
                Status::Cancelled,
                Some(format!("step {:?} failed; {why}", step.name)),
                None,
            ),
        };
        let mut emitted = Emitted::new(&deployment);
        if let Some(message) = failed_step {
            let mut step = [steps::Model {
                id: 0,
                deployment_id: id,
                sequence: steps.iter().map(|s| s.sequence).max().unwrap_or(0) + 1,
                name: FAILED_STEP.into(),
                state: StepState::Failure.as_str().into(),
                started: Some(at),
                finished: Some(at),
                message: crate::model::cut(&message, crate::model::MAX_MESSAGE_CHARS),
                removed: false,
            }];
            insert_new_steps(txn, &mut step).await?;
            emitted.step(&step[0], false);
        }
        deployment.status = status;
        deployment.finished = Some(at);
        deployment.failure_reason = reason;
        deployment.exit_code = exit_code.or(deployment.exit_code);
        let deployment = save_deployment(txn, deployment).await?;
        emitted.deployment(&deployment);
        for mut step in steps
            .into_iter()
            .filter(|s| is(s, StepState::Pending) || is(s, StepState::Running))
        {
            step.removed = true;
            update_step(txn, &step).await?;
            emitted.step(&step, true);
        }
        Ok((deployment, emitted))
    }
}

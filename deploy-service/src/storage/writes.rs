//! Changing deployments and steps. Each change is one transaction under the writer
//! lock that also stores one event per changed row (and, on PostgreSQL, notifies the
//! other replicas' feeds); after the commit the events go to this replica's feed.

use std::collections::HashMap;

use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseTransaction, DbErr, EntityTrait, QueryFilter, QueryOrder, Set,
    TransactionTrait, sea_query::Expr,
};
use serde_json::Value;

use super::{Store, deployments, events, steps};
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
    #[error(transparent)]
    Db(#[from] DbErr),
}

/// Events of the current transaction, stored in one statement before its commit and
/// handed to the feed after it.
struct Emitted {
    service: String,
    deployment_id: DeploymentId,
    pending: Vec<events::ActiveModel>,
}

impl Emitted {
    fn new(deployment: &deployments::Model) -> Emitted {
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

async fn save_deployment(txn: &DatabaseTransaction, row: deployments::Model) -> Result<deployments::Model, DbErr> {
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
    async fn commit(&self, txn: DatabaseTransaction, emitted: Emitted) -> Result<(), DbErr> {
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
        self.insert_deployment(new, None).await
    }

    /// Records a deployment that starts at once, run by `runner_id`: running, its
    /// first planned step running. Announced once, as fastDeploy does (contract
    /// 2.11): the `deployment` event, then one `step` event per planned step.
    pub async fn create_running(
        &self,
        new: NewDeployment,
        runner_id: &str,
    ) -> Result<(deployments::Model, Vec<steps::Model>), DbErr> {
        self.insert_deployment(new, Some(runner_id)).await
    }

    async fn insert_deployment(
        &self,
        new: NewDeployment,
        runner_id: Option<&str>,
    ) -> Result<(deployments::Model, Vec<steps::Model>), DbErr> {
        let mut writer = self.writer.lock().await;
        let txn = self.db.begin().await?;
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
        if runner_id.is_some() {
            writer.steps.insert(deployment.id, planned.clone());
        }
        Ok((deployment, planned))
    }

    /// Takes a queued deployment from the queue: running, its first pending step
    /// running. None when it is no longer queued.
    pub async fn start_run(&self, id: DeploymentId, runner_id: &str) -> Result<Option<deployments::Model>, DbErr> {
        let mut writer = self.writer.lock().await;
        writer.steps.remove(&id);
        let txn = self.db.begin().await?;
        let Some(mut deployment) = deployments::Entity::find_by_id(id).one(&txn).await? else {
            return Ok(None);
        };
        if deployment.status != Status::Queued {
            return Ok(None);
        }
        let at = now();
        deployment.status = Status::Running;
        deployment.run_started = Some(at);
        deployment.runner_id = Some(runner_id.to_owned());
        let deployment = save_deployment(&txn, deployment).await?;
        let mut emitted = Emitted::new(&deployment);
        emitted.deployment(&deployment);
        let mut steps = visible_steps(&txn, id).await?;
        if let Some(first) = machine::next_pending(&steps) {
            let step = &mut steps[first];
            step.state = StepState::Running.as_str().into();
            step.started = Some(at);
            update_step(&txn, step).await?;
            emitted.step(step, false);
        }
        self.commit(txn, emitted).await?;
        writer.steps.insert(id, steps);
        Ok(Some(deployment))
    }

    /// Sets columns that no client sees (no event).
    async fn set_columns(
        &self,
        id: DeploymentId,
        values: Vec<(deployments::Column, sea_orm::Value)>,
    ) -> Result<(), DbErr> {
        let _writer = self.writer.lock().await;
        let mut update = deployments::Entity::update_many();
        for (column, value) in values {
            update = update.col_expr(column, Expr::value(value));
        }
        update.filter(deployments::Column::Id.eq(id)).exec(&self.db).await?;
        Ok(())
    }

    pub async fn set_token(&self, id: DeploymentId, token_id: &str) -> Result<(), DbErr> {
        self.set_columns(id, vec![(deployments::Column::TokenId, token_id.into())])
            .await
    }

    pub async fn set_process(&self, id: DeploymentId, pid: i64, start: Option<i64>) -> Result<(), DbErr> {
        let values = vec![
            (deployments::Column::Pid, pid.into()),
            (deployments::Column::ProcessStart, start.into()),
        ];
        self.set_columns(id, values).await
    }

    pub async fn set_exit_code(&self, id: DeploymentId, exit_code: Option<i64>) -> Result<(), DbErr> {
        match exit_code {
            Some(code) => {
                self.set_columns(id, vec![(deployments::Column::ExitCode, code.into())])
                    .await
            }
            None => Ok(()),
        }
    }

    pub async fn set_deployed_config(&self, id: DeploymentId, config: Value) -> Result<(), DbErr> {
        self.set_columns(id, vec![(deployments::Column::DeployedConfig, config.into())])
            .await
    }

    /// Applies step reports to a running deployment in one transaction. Returns, per
    /// report, the step it applied to (as the batch left it).
    pub async fn apply_reports(
        &self,
        id: DeploymentId,
        reports: &[Report],
    ) -> Result<Vec<steps::Model>, ReportRefused> {
        let mut writer = self.writer.lock().await;
        // Taken out of the cache: put back only once the batch is committed.
        let cached = writer.steps.remove(&id);
        let txn = self.db.begin().await?;
        let deployment = deployments::Entity::find_by_id(id)
            .one(&txn)
            .await?
            .ok_or(ReportRefused::NotFound)?;
        if deployment.status == Status::Queued {
            return Err(ReportRefused::NotStarted);
        }
        if deployment.status != Status::Running || deployment.finished.is_some() || deployment.finish_requested {
            return Err(ReportRefused::Finished);
        }
        let mut steps = match cached {
            Some(steps) => steps,
            None => visible_steps(&txn, id).await?,
        };
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
        let applied = applied.into_iter().map(|i| steps[i].clone()).collect();
        writer.steps.insert(id, steps);
        Ok(applied)
    }

    /// The script (or a user) says the deployment is finished: no more reports are
    /// taken from now on (the caller then ends it with `end_deployment`). A finished
    /// deployment is returned unchanged.
    pub async fn request_finish(&self, id: DeploymentId) -> Result<deployments::Model, ReportRefused> {
        let _writer = self.writer.lock().await;
        let mut deployment = deployments::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .ok_or(ReportRefused::NotFound)?;
        if deployment.status == Status::Queued {
            return Err(ReportRefused::NotStarted);
        }
        if deployment.finished.is_some() || deployment.finish_requested || deployment.status != Status::Running {
            return Ok(deployment);
        }
        deployment.finish_requested = true;
        Ok(deployments::ActiveModel::from(deployment)
            .reset_all()
            .update(&self.db)
            .await?)
    }

    /// Ends a deployment: a `failed step` saying why when it failed or was cancelled,
    /// its status, `finished`, and every step still pending or running removed (with
    /// a `deleted` event). An ended deployment is returned unchanged. With
    /// `only_if_queued`, a deployment that is no longer queued is left alone (None).
    pub async fn end_deployment(
        &self,
        id: DeploymentId,
        outcome: &Outcome,
        exit_code: Option<i64>,
        only_if_queued: bool,
    ) -> Result<Option<deployments::Model>, DbErr> {
        let mut writer = self.writer.lock().await;
        let txn = self.db.begin().await?;
        let Some(mut deployment) = deployments::Entity::find_by_id(id).one(&txn).await? else {
            return Ok(None);
        };
        if only_if_queued && deployment.status != Status::Queued {
            return Ok(None);
        }
        if deployment.finished.is_some() {
            return Ok(Some(deployment));
        }
        writer.steps.remove(&id);
        let at = now();
        let steps = visible_steps(&txn, id).await?;
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
            insert_new_steps(&txn, &mut step).await?;
            emitted.step(&step[0], false);
        }
        deployment.status = status;
        deployment.finished = Some(at);
        deployment.failure_reason = reason;
        deployment.exit_code = exit_code.or(deployment.exit_code);
        let deployment = save_deployment(&txn, deployment).await?;
        emitted.deployment(&deployment);
        for mut step in steps
            .into_iter()
            .filter(|s| is(s, StepState::Pending) || is(s, StepState::Running))
        {
            step.removed = true;
            update_step(&txn, &step).await?;
            emitted.step(&step, true);
        }
        self.commit(txn, emitted).await?;
        Ok(Some(deployment))
    }
}

//! Changing deployments and steps. Each change is one transaction under the writer
//! lock that also stores one event per changed row; the events are broadcast after
//! the commit, in sequence order.

use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseTransaction, DbErr, EntityTrait, QueryFilter, QueryOrder, Set,
    TransactionTrait,
};
use serde_json::Value;

use super::{Store, deployments, events, steps};
use crate::{
    convert,
    model::{FAILED_STEP, Outcome, Report, Status, StepState, now},
    steps as machine,
};

/// What a new deployment is made of.
#[derive(Debug, Clone)]
pub struct NewDeployment {
    pub service_id: i64,
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

/// Events stored in the current transaction, to broadcast after its commit.
struct Emitted {
    service: String,
    deployment_id: i64,
    events: Vec<events::Model>,
}

impl Emitted {
    fn new(deployment: &deployments::Model) -> Emitted {
        Emitted {
            service: deployment.service.clone(),
            deployment_id: deployment.id,
            events: Vec::new(),
        }
    }

    async fn push(
        &mut self,
        txn: &DatabaseTransaction,
        kind: &str,
        deleted: bool,
        payload: Value,
    ) -> Result<(), DbErr> {
        let event = events::ActiveModel {
            deployment_id: Set(self.deployment_id),
            service: Set(self.service.clone()),
            kind: Set(kind.into()),
            deleted: Set(deleted),
            payload: Set(payload),
            created_at: Set(now()),
            ..Default::default()
        }
        .insert(txn)
        .await?;
        self.events.push(event);
        Ok(())
    }

    async fn deployment(&mut self, txn: &DatabaseTransaction, row: &deployments::Model) -> Result<(), DbErr> {
        self.push(txn, "deployment", false, convert::deployment_payload(row))
            .await
    }

    async fn step(&mut self, txn: &DatabaseTransaction, row: &steps::Model, deleted: bool) -> Result<(), DbErr> {
        self.push(txn, "step", deleted, convert::step_payload(row)).await
    }
}

async fn save_step(txn: &DatabaseTransaction, row: &steps::Model) -> Result<steps::Model, DbErr> {
    if row.id == 0 {
        let mut new = steps::ActiveModel::from(row.clone()).reset_all();
        new.id = sea_orm::ActiveValue::NotSet;
        new.insert(txn).await
    } else {
        steps::ActiveModel::from(row.clone()).reset_all().update(txn).await
    }
}

async fn save_deployment(txn: &DatabaseTransaction, row: deployments::Model) -> Result<deployments::Model, DbErr> {
    deployments::ActiveModel::from(row).reset_all().update(txn).await
}

async fn visible_steps(txn: &DatabaseTransaction, deployment_id: i64) -> Result<Vec<steps::Model>, DbErr> {
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
    /// Commits `txn` and broadcasts its events (the writer lock is still held).
    async fn commit(&self, txn: DatabaseTransaction, emitted: Emitted) -> Result<(), DbErr> {
        txn.commit().await?;
        for event in emitted.events {
            // No receiver is fine: watchers catch up from the table.
            let _ = self.events.send(event);
        }
        Ok(())
    }

    /// Records a queued deployment and its planned steps, all pending.
    pub async fn create_deployment(
        &self,
        new: NewDeployment,
    ) -> Result<(deployments::Model, Vec<steps::Model>), DbErr> {
        let _writer = self.writer.lock().await;
        let txn = self.db.begin().await?;
        let deployment = deployments::ActiveModel {
            service_id: Set(new.service_id),
            service: Set(new.service),
            origin: Set(new.origin),
            user: Set(new.user),
            context: Set(new.context),
            status: Set(Status::Queued.as_str().into()),
            started: Set(Some(now())),
            deploy_script: Set(Some(new.deploy_script)),
            timeout_secs: Set(Some(new.timeout_secs)),
            finish_requested: Set(false),
            ..Default::default()
        }
        .insert(&txn)
        .await?;
        let mut emitted = Emitted::new(&deployment);
        emitted.deployment(&txn, &deployment).await?;
        let mut planned = Vec::with_capacity(new.steps.len());
        for (i, name) in new.steps.into_iter().enumerate() {
            let step = steps::ActiveModel {
                deployment_id: Set(deployment.id),
                sequence: Set(i as i64 + 1),
                name: Set(name),
                state: Set(StepState::Pending.as_str().into()),
                started: Set(None),
                finished: Set(None),
                message: Set(String::new()),
                removed: Set(false),
                ..Default::default()
            }
            .insert(&txn)
            .await?;
            emitted.step(&txn, &step, false).await?;
            planned.push(step);
        }
        self.commit(txn, emitted).await?;
        Ok((deployment, planned))
    }

    /// Takes a queued deployment from the queue: running, its first pending step
    /// running. None when it is no longer queued.
    pub async fn start_run(&self, id: i64, runner_id: &str) -> Result<Option<deployments::Model>, DbErr> {
        let _writer = self.writer.lock().await;
        let txn = self.db.begin().await?;
        let Some(mut deployment) = deployments::Entity::find_by_id(id).one(&txn).await? else {
            return Ok(None);
        };
        if deployment.status != Status::Queued.as_str() {
            return Ok(None);
        }
        let at = now();
        deployment.status = Status::Running.as_str().into();
        deployment.run_started = Some(at);
        deployment.runner_id = Some(runner_id.to_owned());
        let deployment = save_deployment(&txn, deployment).await?;
        let mut emitted = Emitted::new(&deployment);
        emitted.deployment(&txn, &deployment).await?;
        let mut steps = visible_steps(&txn, id).await?;
        if let Some(first) = machine::next_pending(&steps) {
            let step = &mut steps[first];
            step.state = StepState::Running.as_str().into();
            step.started = Some(at);
            let step = save_step(&txn, step).await?;
            emitted.step(&txn, &step, false).await?;
        }
        self.commit(txn, emitted).await?;
        Ok(Some(deployment))
    }

    /// Sets columns that no client sees (no event).
    async fn set_quietly(
        &self,
        id: i64,
        change: impl FnOnce(&mut deployments::Model),
    ) -> Result<Option<deployments::Model>, DbErr> {
        let _writer = self.writer.lock().await;
        let Some(mut deployment) = deployments::Entity::find_by_id(id).one(&self.db).await? else {
            return Ok(None);
        };
        change(&mut deployment);
        Ok(Some(
            deployments::ActiveModel::from(deployment)
                .reset_all()
                .update(&self.db)
                .await?,
        ))
    }

    pub async fn set_token(&self, id: i64, token_id: &str) -> Result<(), DbErr> {
        self.set_quietly(id, |d| d.token_id = Some(token_id.to_owned())).await?;
        Ok(())
    }

    pub async fn set_process(&self, id: i64, pid: i64, start: Option<i64>) -> Result<(), DbErr> {
        self.set_quietly(id, |d| {
            d.pid = Some(pid);
            d.process_start = start;
        })
        .await?;
        Ok(())
    }

    pub async fn set_deployed_config(&self, id: i64, config: Value) -> Result<(), DbErr> {
        self.set_quietly(id, |d| d.deployed_config = Some(config)).await?;
        Ok(())
    }

    /// Applies step reports to a running deployment in one transaction. Returns, per
    /// report, the step it applied to.
    pub async fn apply_reports(&self, id: i64, reports: &[Report]) -> Result<Vec<steps::Model>, ReportRefused> {
        let _writer = self.writer.lock().await;
        let txn = self.db.begin().await?;
        let deployment = deployments::Entity::find_by_id(id)
            .one(&txn)
            .await?
            .ok_or(ReportRefused::NotFound)?;
        if deployment.status == Status::Queued.as_str() {
            return Err(ReportRefused::NotStarted);
        }
        if deployment.status != Status::Running.as_str() || deployment.finished.is_some() || deployment.finish_requested
        {
            return Err(ReportRefused::Finished);
        }
        let mut emitted = Emitted::new(&deployment);
        let mut steps = visible_steps(&txn, id).await?;
        let mut applied = Vec::with_capacity(reports.len());
        for report in reports {
            let changed = machine::apply(&mut steps, id, report, now());
            for (n, i) in changed.into_iter().enumerate() {
                steps[i] = save_step(&txn, &steps[i]).await?;
                emitted.step(&txn, &steps[i], false).await?;
                if n == 0 {
                    applied.push(steps[i].clone());
                }
            }
        }
        self.commit(txn, emitted).await?;
        Ok(applied)
    }

    /// The script (or a user) says the deployment is finished: no more reports are
    /// taken; the script's exit still decides the outcome. A finished deployment is
    /// returned unchanged.
    pub async fn request_finish(&self, id: i64) -> Result<deployments::Model, ReportRefused> {
        let deployment = self.get_deployment(id).await?.ok_or(ReportRefused::NotFound)?;
        if deployment.status == Status::Queued.as_str() {
            return Err(ReportRefused::NotStarted);
        }
        if deployment.finished.is_some() || deployment.finish_requested {
            return Ok(deployment);
        }
        self.set_quietly(id, |d| {
            if d.status == Status::Running.as_str() {
                d.finish_requested = true;
            }
        })
        .await?
        .ok_or(ReportRefused::NotFound)
    }

    /// Ends a deployment: a `failed step` saying why when it failed or was cancelled,
    /// its status, `finished`, and every step still pending or running removed (with
    /// a `deleted` event). An ended deployment is returned unchanged. With
    /// `only_if_queued`, a deployment that is no longer queued is left alone (None).
    pub async fn end_deployment(
        &self,
        id: i64,
        outcome: &Outcome,
        exit_code: Option<i64>,
        only_if_queued: bool,
    ) -> Result<Option<deployments::Model>, DbErr> {
        let _writer = self.writer.lock().await;
        let txn = self.db.begin().await?;
        let Some(mut deployment) = deployments::Entity::find_by_id(id).one(&txn).await? else {
            return Ok(None);
        };
        if only_if_queued && deployment.status != Status::Queued.as_str() {
            return Ok(None);
        }
        if deployment.finished.is_some() {
            return Ok(Some(deployment));
        }
        let at = now();
        let steps = visible_steps(&txn, id).await?;
        let failed = steps.iter().find(|s| is(s, StepState::Failure));
        let (status, reason, failed_step) = match (outcome, failed) {
            (Outcome::Exited, None) => (Status::Succeeded, None, None),
            (Outcome::Exited, Some(step)) => (Status::Failed, Some(format!("step {:?} failed", step.name)), None),
            (Outcome::Failed(why), _) => (Status::Failed, Some(why.clone()), Some(why.clone())),
            (Outcome::Cancelled(why), _) => (Status::Cancelled, Some(why.clone()), Some(why.clone())),
        };
        let mut emitted = Emitted::new(&deployment);
        if let Some(message) = failed_step {
            let step = steps::Model {
                id: 0,
                deployment_id: id,
                sequence: steps.iter().map(|s| s.sequence).max().unwrap_or(0) + 1,
                name: FAILED_STEP.into(),
                state: StepState::Failure.as_str().into(),
                started: Some(at),
                finished: Some(at),
                message: crate::model::cut(&message, crate::model::MAX_MESSAGE_CHARS),
                removed: false,
            };
            let step = save_step(&txn, &step).await?;
            emitted.step(&txn, &step, false).await?;
        }
        deployment.status = status.as_str().into();
        deployment.finished = Some(at);
        deployment.failure_reason = reason;
        deployment.exit_code = exit_code.or(deployment.exit_code);
        let deployment = save_deployment(&txn, deployment).await?;
        emitted.deployment(&txn, &deployment).await?;
        for mut step in steps
            .into_iter()
            .filter(|s| is(s, StepState::Pending) || is(s, StepState::Running))
        {
            step.removed = true;
            let step = save_step(&txn, &step).await?;
            emitted.step(&txn, &step, true).await?;
        }
        self.commit(txn, emitted).await?;
        Ok(Some(deployment))
    }
}

//! The runner's own writes for a run it claimed: each names the run's `Claim`
//! (owner and fence) and is refused (`Fenced::Lost`) once another replica ended the
//! run or took it over, so a runner that comes back late changes nothing.

use sea_orm::{
    ColumnTrait, EntityTrait, QueryFilter, TransactionTrait,
    sea_query::{Expr, Query},
};
use serde_json::Value;

use super::{
    Store,
    claims::{self, Claim, Fenced},
    deployments, run_queue,
    writes::{Emitted, save_deployment},
};
use crate::model::{DeploymentId, Outcome};

impl Store {
    /// Sets columns that no client sees (no event), if `claim` still holds the run.
    async fn set_fenced(
        &self,
        id: DeploymentId,
        claim: &Claim,
        values: Vec<(deployments::Column, sea_orm::Value)>,
    ) -> Result<(), Fenced> {
        let _writer = self.writer.lock().await;
        let held = Query::select()
            .column(run_queue::Column::DeploymentId)
            .from(run_queue::Entity)
            .and_where(run_queue::Column::DeploymentId.eq(id))
            .and_where(run_queue::Column::Owner.eq(claim.owner.as_str()))
            .and_where(run_queue::Column::Fence.eq(claim.fence))
            .to_owned();
        let mut update = deployments::Entity::update_many();
        for (column, value) in values {
            update = update.col_expr(column, Expr::value(value));
        }
        let updated = update
            .filter(deployments::Column::Id.eq(id))
            .filter(deployments::Column::Id.in_subquery(held))
            .exec(&self.db)
            .await?;
        match updated.rows_affected {
            0 => Err(Fenced::Lost),
            _ => Ok(()),
        }
    }

    pub async fn set_token(&self, id: DeploymentId, claim: &Claim, token_id: &str) -> Result<(), Fenced> {
        self.set_fenced(id, claim, vec![(deployments::Column::TokenId, token_id.into())])
            .await
    }

    pub async fn set_process(
        &self,
        id: DeploymentId,
        claim: &Claim,
        pid: i64,
        start: Option<i64>,
    ) -> Result<(), Fenced> {
        let values = vec![
            (deployments::Column::Pid, pid.into()),
            (deployments::Column::ProcessStart, start.into()),
        ];
        self.set_fenced(id, claim, values).await
    }

    pub async fn set_deployed_config(&self, id: DeploymentId, claim: &Claim, config: Value) -> Result<(), Fenced> {
        self.set_fenced(id, claim, vec![(deployments::Column::DeployedConfig, config.into())])
            .await
    }

    /// The run's script has ended: ends its deployment with `outcome` (unless it was
    /// ended already, by a finish: then only its exit code is recorded) and removes
    /// the run, freeing its slots, in one transaction. Refused once `claim` no longer
    /// holds the run.
    pub async fn end_run(
        &self,
        id: DeploymentId,
        claim: &Claim,
        outcome: &Outcome,
        exit_code: Option<i64>,
    ) -> Result<Option<deployments::Model>, Fenced> {
        let _writer = self.writer.lock().await;
        let txn = self.db.begin().await?;
        let deployment = claims::lock_deployment(&txn, id).await?;
        if !claims::holds(&txn, id, claim).await? {
            return Err(Fenced::Lost);
        }
        run_queue::Entity::delete_by_id(id).exec(&txn).await?;
        let Some(mut deployment) = deployment else {
            txn.commit().await?;
            return Ok(None);
        };
        if deployment.finished.is_some() {
            if exit_code.is_some() {
                deployment.exit_code = exit_code;
                deployment = save_deployment(&txn, deployment).await?;
            }
            self.commit(txn, Emitted::new(&deployment)).await?;
            return Ok(Some(deployment));
        }
        let (deployment, emitted) = self.end_in(&txn, deployment, outcome, exit_code).await?;
        self.commit(txn, emitted).await?;
        Ok(Some(deployment))
    }
}

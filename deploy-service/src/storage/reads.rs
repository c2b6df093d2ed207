//! Reading deployments, steps and events.

use sea_orm::{ColumnTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::{Store, deployments, events, steps};
use crate::model::{DeploymentId, ServiceId, Status, StepState};

/// Which events a watcher wants; empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub service: Option<String>,
    pub deployment_id: Option<DeploymentId>,
}

impl EventFilter {
    pub fn matches(&self, event: &events::Model) -> bool {
        self.service.as_ref().is_none_or(|s| *s == event.service)
            && self.deployment_id.is_none_or(|d| d == event.deployment_id)
    }
}

/// Which deployments a listing wants (`None`: any) and in which order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeploymentFilter {
    pub service: Option<String>,
    pub status: Option<Status>,
    pub origin: Option<String>,
    pub user: Option<String>,
    /// Id descending instead of ascending.
    pub newest_first: bool,
}

impl DeploymentFilter {
    pub fn matches(&self, d: &deployments::Model) -> bool {
        self.service.as_ref().is_none_or(|s| *s == d.service)
            && self.status.is_none_or(|s| s == d.status)
            && self.origin.as_ref().is_none_or(|o| *o == d.origin)
            && self.user.as_ref().is_none_or(|u| *u == d.user)
    }

    /// Whether a deployment with this id comes after the cursor `after`.
    pub fn after(&self, id: DeploymentId, after: Option<DeploymentId>) -> bool {
        match (after, self.newest_first) {
            (None, _) => true,
            (Some(after), false) => id > after,
            (Some(after), true) => id < after,
        }
    }
}

impl Store {
    pub async fn get_deployment(&self, id: DeploymentId) -> Result<Option<deployments::Model>, DbErr> {
        deployments::Entity::find_by_id(id).one(&self.db).await
    }

    /// The steps a deployment shows, in sequence order (removed ones left out).
    pub async fn visible_steps(&self, deployment_id: DeploymentId) -> Result<Vec<steps::Model>, DbErr> {
        steps::Entity::find()
            .filter(steps::Column::DeploymentId.eq(deployment_id))
            .filter(steps::Column::Removed.eq(false))
            .order_by_asc(steps::Column::Sequence)
            .all(&self.db)
            .await
    }

    /// Deployments matching `filter` after the id `after` in the filter's order (from
    /// the first when `None`), at most `limit`.
    pub async fn list_deployments(
        &self,
        filter: &DeploymentFilter,
        after: Option<DeploymentId>,
        limit: u64,
    ) -> Result<Vec<deployments::Model>, DbErr> {
        let limit = limit.min(i64::MAX as u64);
        let mut query = deployments::Entity::find();
        if let Some(after) = after {
            query = query.filter(if filter.newest_first {
                deployments::Column::Id.lt(after)
            } else {
                deployments::Column::Id.gt(after)
            });
        }
        if let Some(service) = &filter.service {
            query = query.filter(deployments::Column::Service.eq(service.clone()));
        }
        if let Some(status) = filter.status {
            query = query.filter(deployments::Column::Status.eq(status));
        }
        if let Some(origin) = &filter.origin {
            query = query.filter(deployments::Column::Origin.eq(origin.clone()));
        }
        if let Some(user) = &filter.user {
            query = query.filter(deployments::Column::User.eq(user.clone()));
        }
        if filter.newest_first {
            query = query.order_by_desc(deployments::Column::Id);
        } else {
            query = query.order_by_asc(deployments::Column::Id);
        }
        query.limit(limit).all(&self.db).await
    }

    /// Deployments in `status`, oldest first, at most `limit`.
    pub async fn deployments_in(&self, status: Status, limit: u64) -> Result<Vec<deployments::Model>, DbErr> {
        let limit = limit.min(i64::MAX as u64);
        deployments::Entity::find()
            .filter(deployments::Column::Status.eq(status))
            .order_by_asc(deployments::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await
    }

    /// Every step (removed ones too) of the last succeeded deployment of the service
    /// with this id (a service removed and synced again has a new id, and starts
    /// afresh), in sequence order; empty when it has none.
    pub async fn last_succeeded_steps(&self, service_id: ServiceId) -> Result<Vec<steps::Model>, DbErr> {
        let last = deployments::Entity::find()
            .filter(deployments::Column::ServiceId.eq(service_id))
            .filter(deployments::Column::Status.eq(Status::Succeeded))
            .order_by_desc(deployments::Column::Id)
            .one(&self.db)
            .await?;
        let Some(last) = last else { return Ok(Vec::new()) };
        steps::Entity::find()
            .filter(steps::Column::DeploymentId.eq(last.id))
            .order_by_asc(steps::Column::Sequence)
            .all(&self.db)
            .await
    }

    /// The first visible failed step of a deployment, if any.
    pub async fn failed_step(&self, deployment_id: DeploymentId) -> Result<Option<steps::Model>, DbErr> {
        steps::Entity::find()
            .filter(steps::Column::DeploymentId.eq(deployment_id))
            .filter(steps::Column::Removed.eq(false))
            .filter(steps::Column::State.eq(StepState::Failure.as_str()))
            .order_by_asc(steps::Column::Sequence)
            .one(&self.db)
            .await
    }

    /// Stored events after `after` matching `filter`, in sequence order, at most `limit`.
    pub async fn events_after(
        &self,
        after: i64,
        filter: &EventFilter,
        limit: u64,
    ) -> Result<Vec<events::Model>, DbErr> {
        self.events_between(after, i64::MAX, filter, limit).await
    }

    /// The sequence of the last stored event (0 when there is none).
    pub async fn last_sequence(&self) -> Result<i64, DbErr> {
        Ok(events::Entity::find()
            .order_by_desc(events::Column::Sequence)
            .one(&self.db)
            .await?
            .map_or(0, |e| e.sequence))
    }
}

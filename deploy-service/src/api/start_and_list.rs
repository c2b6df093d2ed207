//! `StartDeployment` and `ListDeployments`: accepting a deployment (planned from the
//! service's config and its last successful run, then queued or started at once) and
//! listing deployments a page at a time.

use common::{error::ErrorCode, paging};
use proto::deploy::v1 as pb;
use serde_json::json;
use tonic::Status;

use super::{
    Shared,
    access::{self, Caller},
    internal,
    live_services::DeploymentsCursor,
};
use crate::{
    convert,
    model::{DeploymentId, ServiceId},
    plan,
    storage::{DeploymentFilter, NewDeployment},
};

/// Longest `origin` or `user` a listing may filter by.
const MAX_FILTER_LEN: usize = 1024;

/// The filters and order of a `ListDeployments` request, checked.
fn list_filter(request: &pb::ListDeploymentsRequest) -> Result<DeploymentFilter, Status> {
    let status = match pb::DeploymentStatus::try_from(request.status) {
        Ok(status) => convert::from_status(status),
        Err(_) => {
            return Err(ErrorCode::InvalidArgument.status(format!("unknown deployment status {}", request.status)));
        }
    };
    let text = |name: &str, value: &str| match value.len() {
        0 => Ok(None),
        n if n > MAX_FILTER_LEN => {
            Err(ErrorCode::InvalidArgument.status(format!("{name} is longer than {MAX_FILTER_LEN} bytes")))
        }
        _ => Ok(Some(value.to_owned())),
    };
    Ok(DeploymentFilter {
        service: (!request.service.is_empty()).then(|| request.service.clone()),
        status,
        origin: text("origin", &request.origin)?,
        user: text("user", &request.user)?,
        newest_first: request.newest_first,
    })
}

/// The fingerprint of a request's filters and order, as its page tokens carry it.
fn fingerprint(request: &pb::ListDeploymentsRequest) -> i64 {
    let status = match request.status {
        0 => String::new(),
        n => n.to_string(),
    };
    let order = if request.newest_first { "newest first" } else { "" };
    paging::fingerprint(&[&request.service, &status, &request.origin, &request.user, order])
}

/// Largest context (`{"env": …}` as JSON) a deployment may carry.
const MAX_CONTEXT_BYTES: usize = 64 * 1024;

impl Shared {
    pub(super) async fn start(
        &self,
        caller: Caller,
        request: pb::StartDeploymentRequest,
    ) -> Result<pb::Deployment, Status> {
        let (name, origin, user, service_token) = match caller {
            Caller::Service { service, origin, user } => {
                if !request.service.is_empty() && request.service != service {
                    return Err(ErrorCode::PermissionDenied
                        .status(format!("this token may only start deployments of {service}")));
                }
                (service, origin, user, true)
            }
            Caller::User { name, origin } => {
                if request.service.is_empty() {
                    return Err(ErrorCode::InvalidArgument.status("name the service to deploy"));
                }
                (request.service, origin, name, false)
            }
            Caller::Deployment { .. } => {
                return Err(ErrorCode::PermissionDenied.status("a deployment token may not start deployments"));
            }
        };
        let env = request
            .env
            .as_ref()
            .map(convert::from_struct)
            .unwrap_or_else(|| json!({}));
        let context = json!({ "env": env });
        if context.to_string().len() > MAX_CONTEXT_BYTES {
            return Err(ErrorCode::InvalidArgument.status(format!("env is larger than {MAX_CONTEXT_BYTES} bytes")));
        }
        let service = match self.backends.service(&name).await {
            Ok(Some(service)) => service,
            // fastDeploy checks the service as part of the token: 401 for a service token.
            Ok(None) if service_token => return Err(ErrorCode::Unauthenticated.status("invalid token")),
            Ok(None) => return Err(ErrorCode::NotFound.status(format!("service {name} not found"))),
            Err(error) => {
                tracing::warn!(%error, "registry lookup failed");
                return Err(ErrorCode::Unavailable.status("the registry is unavailable"));
            }
        };
        let invalid = |e: plan::PlanError| ErrorCode::InvalidArgument.status(e.to_string());
        let last = self.store.last_succeeded_steps(service.id).await.map_err(internal)?;
        let steps = plan::steps(&last, &service.data).map_err(invalid)?;
        let timeout_secs = plan::timeout_secs(&service.data, self.default_timeout_secs).map_err(invalid)?;
        let script = plan::deploy_script(&self.services_dir, &name, &service.data).map_err(invalid)?;
        let (deployment, steps) = self
            .queue
            .accept(NewDeployment {
                service_id: service.id,
                service: service.name,
                origin,
                user,
                context,
                deploy_script: script.to_string_lossy().into_owned(),
                timeout_secs,
                steps,
            })
            .await
            .map_err(internal)?;
        tracing::info!(id = %deployment.id, service = %deployment.service, status = %deployment.status, "deployment accepted");
        let visible: Vec<_> = steps.into_iter().filter(|step| !step.removed).collect();
        Ok(convert::deployment(&deployment, &visible))
    }

    pub(super) async fn list(
        &self,
        caller: Caller,
        request: pb::ListDeploymentsRequest,
    ) -> Result<pb::ListDeploymentsResponse, Status> {
        let size = paging::DEPLOYMENTS.of(request.page_size);
        let include_removed = request.include_removed_services;
        let mut filter = list_filter(&request)?;
        if let Caller::Service { service, .. } = &caller {
            if filter.service.as_ref().is_some_and(|w| w != service) {
                return Err(access::wrong_service_token());
            }
            filter.service = Some(service.clone());
        }
        let cursor = paging::decode::<DeploymentsCursor>(&request.page_token)?;
        let filters = fingerprint(&request);
        if cursor.is_some_and(|c| c.filters != filters) {
            return Err(ErrorCode::InvalidArgument
                .status("page_token was given by a list with other filters or order: ask again without it"));
        }
        let after = cursor.map(|c| DeploymentId(c.after));
        let rows = match &caller {
            Caller::User { .. } | Caller::Service { .. } => {
                self.store.list_deployments(&filter, after, u64::from(size) + 1).await
            }
            Caller::Deployment { id } => self.store.get_deployment(*id).await.map(|d| {
                d.into_iter()
                    .filter(|d| filter.after(d.id, after) && filter.matches(d))
                    .collect()
            }),
        }
        .map_err(internal)?;
        let mut rows = rows;
        let more = rows.len() > size as usize;
        rows.truncate(size as usize);
        let mut deployments: Vec<pb::Deployment> = rows.iter().map(|d| convert::deployment(d, &[])).collect();
        // Deployments of removed services are left out (a page may come out short),
        // or marked when asked for. The listing's snapshot of live services goes on
        // in its page token.
        let mut snapshot = 0;
        if !deployments.is_empty() && !matches!(caller, Caller::Deployment { .. }) {
            let (taken, live) = self
                .live_services
                .for_page(
                    &self.backends,
                    cursor.map(|c| c.snapshot),
                    deployments.iter().map(|d| ServiceId(d.service_id)),
                )
                .await
                .map_err(Shared::registry_down)?;
            snapshot = taken;
            for d in &mut deployments {
                d.service_removed = !live.contains(&ServiceId(d.service_id));
            }
            if !include_removed {
                deployments.retain(|d| !d.service_removed);
            }
        }
        let next_page_token = match rows.last() {
            Some(last) if more => paging::encode(&DeploymentsCursor {
                after: last.id.0,
                snapshot,
                filters,
            }),
            _ => String::new(),
        };
        Ok(pb::ListDeploymentsResponse {
            deployments,
            next_page_token,
        })
    }
}

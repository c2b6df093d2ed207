//! Who is calling, from the verified claims of the caller's token, and what each
//! kind of caller may see: a user any deployment, a service token those of its own
//! service, a deployment token its own deployment.

use common::{
    error::ErrorCode,
    token::{Claims, TokenType},
};
use tonic::Status;

use crate::model::DeploymentId;
use crate::storage::deployments;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    User {
        name: String,
        origin: String,
    },
    Service {
        service: String,
        origin: String,
        user: String,
    },
    Deployment {
        id: DeploymentId,
    },
}

/// fastDeploy's one 403: the same answer for another service's deployment and for
/// one that does not exist, so a service token cannot probe ids.
pub fn wrong_service_token() -> Status {
    ErrorCode::PermissionDenied.status("Wrong service token")
}

pub fn not_found(id: DeploymentId) -> Status {
    ErrorCode::NotFound.status(format!("Deployment {id} not found"))
}

impl Caller {
    pub fn from_claims(claims: &Claims) -> Result<Caller, Status> {
        let incomplete = || ErrorCode::Unauthenticated.status("invalid token");
        Ok(match claims.token_type {
            TokenType::User => Caller::User {
                name: claims.user.clone().unwrap_or_else(|| claims.sub.clone()),
                origin: claims.origin.clone().unwrap_or_default(),
            },
            TokenType::Service => Caller::Service {
                service: claims
                    .service
                    .clone()
                    .filter(|s| !s.is_empty())
                    .ok_or_else(incomplete)?,
                origin: claims.origin.clone().unwrap_or_default(),
                user: claims.user.clone().unwrap_or_default(),
            },
            TokenType::Deployment => Caller::Deployment {
                id: claims
                    .deployment
                    .filter(|d| *d > 0)
                    .map(DeploymentId)
                    .ok_or_else(incomplete)?,
            },
            TokenType::Config => {
                return Err(ErrorCode::PermissionDenied.status("a config token may not do this"));
            }
        })
    }

    /// The deployment `id` (found or not) if this caller may read it, else the
    /// refusal this caller gets.
    pub fn readable(&self, id: DeploymentId, found: Option<deployments::Model>) -> Result<deployments::Model, Status> {
        match self {
            Caller::User { .. } => found.ok_or_else(|| not_found(id)),
            Caller::Service { service, .. } => found.filter(|d| d.service == *service).ok_or_else(wrong_service_token),
            Caller::Deployment { id: own } if *own == id => found.ok_or_else(|| not_found(id)),
            Caller::Deployment { .. } => {
                Err(ErrorCode::PermissionDenied.status("a deployment token may only read its own deployment"))
            }
        }
    }
}

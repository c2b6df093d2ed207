//! The deploy service's calls to the other services, all made with its own
//! credential (never a caller's token): the registry for service configs and
//! deployed services, the auth service to mint and revoke deployment tokens.

use std::{collections::HashSet, time::Duration};

use common::identity::Credential;
use proto::{
    auth::v1::{self as auth, auth_service_client::AuthServiceClient},
    registry::v1::{self as registry, registry_service_client::RegistryServiceClient},
};
use secrecy::SecretString;
use serde_json::Value;
use tonic::{Code, transport::Channel};

use crate::model::DeploymentId;
use crate::{convert, model::ServiceId};

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{service} unavailable: {message}")]
    Unavailable { service: &'static str, message: String },
    #[error("{service} refused: {message}")]
    Refused { service: &'static str, message: String },
}

fn backend_error(service: &'static str, status: &tonic::Status) -> BackendError {
    let message = status.message().to_owned();
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
            BackendError::Unavailable { service, message }
        }
        _ => BackendError::Refused { service, message },
    }
}

/// A service as the registry knows it.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub id: ServiceId,
    pub name: String,
    /// Its config.json.
    pub data: Value,
}

/// A minted deployment token. `Debug` never shows the token.
pub struct DeploymentToken {
    pub token: SecretString,
    pub id: String,
}

impl std::fmt::Debug for DeploymentToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeploymentToken").field("id", &self.id).finish()
    }
}

#[derive(Debug, Clone)]
pub struct Backends {
    auth: AuthServiceClient<Channel>,
    registry: RegistryServiceClient<Channel>,
    credential: Credential,
}

/// A channel to one URL, or balanced over several (replicas) separated by commas.
fn channel(urls: &str) -> anyhow::Result<Channel> {
    common::balance::channel(urls, |endpoint| {
        endpoint
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
    })
}

impl Backends {
    pub fn new(auth_url: &str, registry_url: &str, credential: Credential) -> anyhow::Result<Backends> {
        Ok(Backends {
            auth: AuthServiceClient::new(channel(auth_url)?),
            registry: RegistryServiceClient::new(channel(registry_url)?),
            credential,
        })
    }

    /// The service named `name`, or None when the registry has no such service.
    pub async fn service(&self, name: &str) -> Result<Option<ServiceConfig>, BackendError> {
        let request = self.credential.request(registry::GetServiceRequest {
            key: Some(registry::get_service_request::Key::Name(name.to_owned())),
        });
        match self.registry.clone().get_service(request).await {
            Ok(service) => {
                let service = service.into_inner();
                Ok(Some(ServiceConfig {
                    id: ServiceId(service.id),
                    name: service.name,
                    data: service
                        .data
                        .as_ref()
                        .map(convert::from_struct)
                        .unwrap_or_else(|| Value::Object(Default::default())),
                }))
            }
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(backend_error("registry", &status)),
        }
    }

    /// Whether the registry still has the service with this id.
    pub async fn service_exists(&self, ServiceId(id): ServiceId) -> Result<bool, BackendError> {
        let request = self.credential.request(registry::GetServiceRequest {
            key: Some(registry::get_service_request::Key::Id(id)),
        });
        match self.registry.clone().get_service(request).await {
            Ok(_) => Ok(true),
            Err(status) if status.code() == Code::NotFound => Ok(false),
            Err(status) => Err(backend_error("registry", &status)),
        }
    }

    /// The ids of every service the registry has.
    pub async fn service_ids(&self) -> Result<HashSet<ServiceId>, BackendError> {
        let mut ids = HashSet::new();
        let mut page_token = String::new();
        loop {
            let request = self.credential.request(registry::ListServicesRequest {
                page_size: 0,
                page_token: page_token.clone(),
            });
            let page = self
                .registry
                .clone()
                .list_services(request)
                .await
                .map_err(|s| backend_error("registry", &s))?
                .into_inner();
            ids.extend(page.services.iter().map(|s| ServiceId(s.id)));
            if page.next_page_token.is_empty() || page.next_page_token == page_token {
                return Ok(ids);
            }
            page_token = page.next_page_token;
        }
    }

    /// Publishes the config a successful run reported as its deployed service.
    pub async fn publish(
        &self,
        deployment_id: DeploymentId,
        service: &str,
        config: &Value,
    ) -> Result<(), BackendError> {
        let request = self.credential.request(registry::PublishDeployedServiceRequest {
            deployment_id: deployment_id.0,
            service: service.to_owned(),
            config: convert::to_struct(config),
        });
        self.registry
            .clone()
            .publish_deployed_service(request)
            .await
            .map_err(|s| backend_error("registry", &s))?;
        Ok(())
    }

    /// A deployment token for one run, living `lifetime_seconds`.
    pub async fn mint_token(
        &self,
        deployment_id: DeploymentId,
        service: &str,
        lifetime_seconds: u64,
    ) -> Result<DeploymentToken, BackendError> {
        let request = self.credential.request(auth::MintDeploymentTokenRequest {
            deployment_id: deployment_id.0,
            service: service.to_owned(),
            lifetime_seconds,
        });
        let minted = self
            .auth
            .clone()
            .mint_deployment_token(request)
            .await
            .map_err(|s| backend_error("auth", &s))?
            .into_inner();
        let id = minted.info.map(|i| i.id).unwrap_or_default();
        Ok(DeploymentToken {
            token: SecretString::from(minted.token),
            id,
        })
    }

    /// Revokes a run's deployment token; an unknown or already revoked one is fine.
    pub async fn revoke_token(&self, id: &str) -> Result<(), BackendError> {
        let request = self.credential.request(auth::RevokeTokensRequest {
            ids: vec![id.to_owned()],
        });
        match self.auth.clone().revoke_tokens(request).await {
            Ok(_) => Ok(()),
            Err(status) if status.code() == Code::NotFound => Ok(()),
            Err(status) => Err(backend_error("auth", &status)),
        }
    }
}

//! gRPC clients of the backends. Channels connect lazily, so the gateway starts (and
//! answers 503) while a backend is down; every call has a deadline. HTTP/2 pings find
//! a connection that died silently (a vanished host) within about 50 s, so streams
//! followed over it (the services cache's and the WebSocket hub's) end instead of
//! waiting forever.

use std::time::Duration;

use proto::{
    auth::v1::auth_service_client::AuthServiceClient, deploy::v1::deploy_service_client::DeployServiceClient,
    registry::v1::registry_service_client::RegistryServiceClient,
};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use crate::Config;

#[derive(Debug, Clone)]
pub struct Backends {
    pub auth: Channel,
    pub registry: Channel,
    pub deploy: Channel,
}

impl Backends {
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        let timeout = Duration::from_millis(config.backend_timeout_ms);
        const PING_EVERY: Duration = Duration::from_secs(30);
        const PING_TIMEOUT: Duration = Duration::from_secs(20);
        // One URL or several (replicas, balanced over those serving).
        let channel = |urls: &str| -> anyhow::Result<Channel> {
            common::balance::channel(urls, |endpoint: Endpoint| {
                endpoint
                    .connect_timeout(Duration::from_secs(2).min(timeout))
                    .timeout(timeout)
                    .http2_keep_alive_interval(PING_EVERY)
                    .keep_alive_timeout(PING_TIMEOUT)
            })
        };
        Ok(Backends {
            auth: channel(&config.auth_url)?,
            registry: channel(&config.registry_url)?,
            deploy: channel(&config.deploy_url)?,
        })
    }

    pub fn auth(&self) -> AuthServiceClient<Channel> {
        AuthServiceClient::new(self.auth.clone())
    }

    pub fn deploy(&self) -> DeployServiceClient<Channel> {
        DeployServiceClient::new(self.deploy.clone())
    }

    pub fn registry(&self) -> RegistryServiceClient<Channel> {
        RegistryServiceClient::new(self.registry.clone())
    }

    /// Names of the backends that do not answer their health check as serving.
    pub async fn not_ready(&self) -> Vec<&'static str> {
        let mut down = Vec::new();
        for (name, channel) in [
            ("auth", &self.auth),
            ("registry", &self.registry),
            ("deploy", &self.deploy),
        ] {
            let serving = HealthClient::new(channel.clone())
                .check(HealthCheckRequest { service: String::new() })
                .await
                .is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32);
            if !serving {
                down.push(name);
            }
        }
        down
    }
}

//! A backend's link to the auth service for checking tokens: a verifier that fetches
//! the auth service's keys and follows its revocation feed (presenting this service's
//! own credential). The checks themselves happen in the authorization layer
//! ([`crate::authz`]), built from this verifier.

use std::{sync::Arc, time::Duration};

use proto::auth::v1::auth_service_client::AuthServiceClient;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;

use crate::{
    authz::AuthzLayer,
    identity::{Credential, TrustedCaller},
    token::RemoteVerifier,
};

#[derive(Debug, Clone)]
pub struct Guard {
    verifier: Arc<RemoteVerifier>,
}

impl Guard {
    /// A guard that fetches keys from the auth service at `auth_url` and follows its
    /// revocation feed until `shutdown`, presenting `credential` (this service's own).
    pub fn connect(
        auth_url: &str,
        max_stale: Duration,
        credential: Option<Credential>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Guard> {
        // One URL, or several auth replicas (the feed follows one serving replica).
        let channel = crate::balance::channel(auth_url, |endpoint: Endpoint| {
            endpoint
                .connect_timeout(Duration::from_secs(2))
                .timeout(Duration::from_secs(10))
        })?;
        let verifier =
            Arc::new(RemoteVerifier::new(AuthServiceClient::new(channel), max_stale).with_credential(credential));
        let follower = verifier.clone();
        tokio::spawn(async move { follower.follow_revocations(shutdown).await });
        Ok(Guard { verifier })
    }

    /// The authorization layer for this service's API: tokens checked with this
    /// guard's verifier, and the credentials of `trusted` services recognised where
    /// the scope table admits them.
    pub fn layer(&self, trusted: Vec<TrustedCaller>) -> AuthzLayer<RemoteVerifier> {
        AuthzLayer::new(self.verifier.clone(), trusted)
    }

    /// Whether the revocation feed is fresh (for readiness).
    pub fn ready(&self) -> bool {
        self.verifier.revocations_fresh()
    }

    /// Waits up to `max` for the first revocation snapshot, so a service that reports
    /// itself serving can also check tokens. Returns whether it arrived; a service
    /// starts anyway (refusing tokens with UNAVAILABLE until the feed is heard).
    pub async fn wait_ready(&self, max: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + max;
        while !self.ready() {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!("no revocation feed from the auth service yet; starting anyway");
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }
}

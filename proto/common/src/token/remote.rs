//! A verifier whose keys come from the auth service's JWKS: fetched on demand and
//! refetched when a token names an unknown key id, at most once per interval so
//! garbage tokens cannot hammer the auth service.

use std::time::{Duration, Instant};

use proto::auth::v1::{GetJwksRequest, auth_service_client::AuthServiceClient};
use tokio::sync::Mutex;
use tonic::transport::Channel;

use super::{Claims, TokenError, TokenType, Verifier};

const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(5);

pub struct RemoteVerifier {
    verifier: Verifier,
    client: AuthServiceClient<Channel>,
    last_refresh: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for RemoteVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteVerifier")
            .field("verifier", &self.verifier)
            .finish_non_exhaustive()
    }
}

impl RemoteVerifier {
    pub fn new(client: AuthServiceClient<Channel>) -> Self {
        RemoteVerifier {
            verifier: Verifier::new(crate::ISSUER, crate::AUDIENCE),
            client,
            last_refresh: Mutex::new(None),
        }
    }

    /// Fetches the key set now.
    pub async fn refresh(&self) -> Result<usize, tonic::Status> {
        let jwks = self.client.clone().get_jwks(GetJwksRequest {}).await?.into_inner();
        let count = self.verifier.set_keys(&jwks);
        tracing::debug!(keys = count, "jwks refreshed");
        Ok(count)
    }

    /// Refreshes unless another refresh happened within the minimum interval.
    async fn refresh_rate_limited(&self) -> bool {
        let mut last = self.last_refresh.lock().await;
        if last.is_some_and(|t| t.elapsed() < MIN_REFRESH_INTERVAL) {
            return false;
        }
        *last = Some(Instant::now());
        match self.refresh().await {
            Ok(_) => true,
            Err(status) => {
                tracing::warn!(code = ?status.code(), "cannot fetch jwks from auth-service");
                false
            }
        }
    }

    pub async fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        match self.verifier.verify(token) {
            Err(TokenError::UnknownKey) if self.refresh_rate_limited().await => self.verifier.verify(token),
            other => other,
        }
    }

    pub async fn verify_type(&self, token: &str, expected: TokenType) -> Result<Claims, TokenError> {
        let claims = self.verify(token).await?;
        if claims.token_type != expected {
            return Err(TokenError::WrongType(claims.token_type));
        }
        Ok(claims)
    }
}

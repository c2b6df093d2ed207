//! Token checks inside a backend service (defence in depth behind the gateway): the
//! caller's bearer token is verified against the auth service's keys and revocation
//! feed, then its permissions are checked. Internal callers are recognised by their
//! credential (see `identity`). Server streams are bound to their token
//! ([`Guard::bind_stream`]): they end when it is revoked or expires.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use proto::auth::v1::auth_service_client::AuthServiceClient;
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Status, transport::Endpoint};

use crate::{
    error::ErrorCode,
    identity::{Credential, TrustedCaller},
    scope,
    token::{Claims, RemoteVerifier, TokenError, bearer_token},
};

#[derive(Debug, Clone)]
pub struct Guard {
    verifier: Arc<RemoteVerifier>,
    trusted: Vec<TrustedCaller>,
}

impl Guard {
    /// A guard that fetches keys from the auth service at `auth_url` and follows its
    /// revocation feed until `shutdown`, presenting `credential` (this service's own).
    pub fn connect(
        auth_url: &str,
        max_stale: Duration,
        trusted: Vec<TrustedCaller>,
        credential: Option<Credential>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Guard> {
        let channel = Endpoint::from_shared(auth_url.to_owned())?
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .connect_lazy();
        let verifier =
            Arc::new(RemoteVerifier::new(AuthServiceClient::new(channel), max_stale).with_credential(credential));
        let follower = verifier.clone();
        tokio::spawn(async move { follower.follow_revocations(shutdown).await });
        Ok(Guard { verifier, trusted })
    }

    /// The verified claims of the request's bearer token (of any type).
    pub async fn claims<T>(&self, request: &Request<T>) -> Result<Claims, Status> {
        let header = request.metadata().get("authorization").and_then(|v| v.to_str().ok());
        let token = bearer_token(header).ok_or_else(|| ErrorCode::Unauthenticated.status("missing bearer token"))?;
        match self.verifier.verify(token).await {
            Ok(claims) => Ok(claims),
            Err(TokenError::RevocationsUnavailable) => {
                tracing::warn!("token refused: revocation feed stale");
                Err(ErrorCode::Unavailable.status("token revocation list unavailable"))
            }
            Err(reason) => {
                tracing::info!(%reason, "token refused");
                Err(ErrorCode::Unauthenticated.status("invalid token"))
            }
        }
    }

    /// The verified claims of a token that holds `permission`; a valid token without
    /// it is PERMISSION_DENIED.
    pub async fn require<T>(&self, request: &Request<T>, permission: &str) -> Result<Claims, Status> {
        let claims = self.claims(request).await?;
        if !scope::allows(&claims, permission) {
            tracing::info!(jti = %claims.jti, token_type = %claims.token_type, permission, "permission denied");
            return Err(ErrorCode::PermissionDenied.status(format!("this token may not {permission}")));
        }
        Ok(claims)
    }

    /// The name of the trusted internal service that made this call, if any.
    pub fn internal_caller<T>(&self, request: &Request<T>) -> Option<&str> {
        self.trusted
            .iter()
            .find(|t| t.is_caller(request.metadata()))
            .map(TrustedCaller::name)
    }

    /// `stream`, ended with UNAUTHENTICATED ("token revoked" / "token expired") as
    /// soon as the token whose `claims` opened it is revoked or at its `exp`, or with
    /// UNAVAILABLE when the revocation feed goes stale. Ending drops `stream`.
    pub fn bind_stream<S>(&self, claims: Claims, stream: S) -> TokenBound<S> {
        TokenBound::new(self.verifier.clone(), claims, stream)
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

/// The status a call lasting past its token's validity ends with.
pub fn token_end_status(reason: &TokenError) -> Status {
    match reason {
        TokenError::Revoked => ErrorCode::Unauthenticated.status("token revoked"),
        TokenError::Expired => ErrorCode::Unauthenticated.status("token expired"),
        TokenError::RevocationsUnavailable => ErrorCode::Unavailable.status("token revocation list unavailable"),
        other => ErrorCode::Unauthenticated.status(format!("invalid token: {other}")),
    }
}

/// A future that completes with the status a call must end with once its token is
/// no longer good (see [`RemoteVerifier::token_ends`]).
pub type TokenEnd = Pin<Box<dyn Future<Output = Status> + Send>>;

/// The end of a call made with the token of `claims`.
pub fn token_end(verifier: Arc<RemoteVerifier>, claims: Claims) -> TokenEnd {
    Box::pin(async move {
        let reason = verifier.token_ends(claims).await;
        tracing::info!(%reason, "ending a stream: its token is no longer good");
        token_end_status(&reason)
    })
}

/// A server stream that ends when its token does (see [`Guard::bind_stream`]).
pub struct TokenBound<S> {
    /// `None` once the stream has ended.
    inner: Option<S>,
    end: TokenEnd,
}

impl<S> TokenBound<S> {
    pub fn new(verifier: Arc<RemoteVerifier>, claims: Claims, stream: S) -> Self {
        TokenBound {
            inner: Some(stream),
            end: token_end(verifier, claims),
        }
    }
}

impl<S, T> Stream for TokenBound<S>
where
    S: Stream<Item = Result<T, Status>> + Unpin,
{
    type Item = Result<T, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        // The token first: nothing more is sent once it is no longer good.
        if let Poll::Ready(status) = this.end.as_mut().poll(cx) {
            this.inner = None;
            return Poll::Ready(Some(Err(status)));
        }
        match Pin::new(inner).poll_next(cx) {
            Poll::Ready(None) => {
                this.inner = None;
                Poll::Ready(None)
            }
            other => other,
        }
    }
}

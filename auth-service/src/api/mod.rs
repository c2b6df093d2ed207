//! The `AuthService` API: the handlers ([`rpcs`]), the state they share and the checks
//! they have in common; what reaches them has passed the authorization layer.

mod convert;
mod rpcs;

use std::{pin::Pin, sync::Arc};

use common::{
    authz::{Caller, TokenCheck, TokenEnd},
    error::ErrorCode,
    identity::{CLIENT_ADDRESS_HEADER, GATEWAY, TrustedCaller},
    scope,
    token::{Claims, TokenError},
};
use proto::{
    auth::v1 as pb,
    registry::v1::{GetServiceRequest, get_service_request::Key, registry_service_client::RegistryServiceClient},
};
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Status, transport::Channel};

use crate::{
    accounts::Accounts,
    keys::KeyRing,
    login_limits::LoginLimiter,
    revoked::RevokedSet,
    storage::Store,
    stream_caps::{Holder, StreamCaps},
    tokens::{Minter, TokenSpec},
    user_cache::Account,
};

use self::convert::*;

pub struct AuthApi {
    store: Store,
    pub(crate) accounts: Accounts,
    pub(crate) keys: Arc<KeyRing>,
    minter: Minter,
    /// Asked whether a service exists before a service token is minted for it.
    registry: Option<RegistryServiceClient<Channel>>,
    /// fastDeploy token acceptance during a migration, when configured.
    legacy: Option<crate::legacy::Legacy>,
    /// Ends the revocation feeds when the service stops, so shutdown never waits on them.
    shutdown: CancellationToken,
    /// Caps on open revocation feeds, per caller and in total.
    feed_caps: StreamCaps,
    /// Revoked token ids, in memory, following the revocation log.
    revoked: Arc<RevokedSet>,
    /// Internal callers by credential; here only to believe the gateway's naming of a
    /// login's client address (the authorization layer holds its own list).
    trusted: Vec<TrustedCaller>,
    /// Failed-login limits per user name and client address.
    login_limiter: LoginLimiter,
}

impl AuthApi {
    pub fn new(
        store: Store,
        accounts: Accounts,
        keys: Arc<KeyRing>,
        user_token_minutes: u32,
        revoked: Arc<RevokedSet>,
    ) -> Result<Self, crate::keys::KeyError> {
        let minter = Minter::new(keys.clone(), user_token_minutes);
        Ok(AuthApi {
            store,
            accounts,
            keys,
            minter,
            registry: None,
            legacy: None,
            shutdown: CancellationToken::new(),
            feed_caps: StreamCaps::new(crate::stream_caps::Limits {
                per_token_subject: 8,
                per_service: 64,
                total: 256,
            }),
            revoked,
            trusted: Vec::new(),
            login_limiter: LoginLimiter::new(crate::login_limits::Limits::default()),
        })
    }

    pub fn with_trusted(mut self, trusted: Vec<TrustedCaller>) -> Self {
        self.trusted = trusted;
        self
    }

    pub fn with_login_limiter(mut self, limiter: LoginLimiter) -> Self {
        self.login_limiter = limiter;
        self
    }

    /// The address a login comes from: as the gateway names it (believed only with the
    /// gateway's credential), else the connection's peer.
    fn client_address<T>(&self, request: &Request<T>) -> Option<std::net::IpAddr> {
        let from_gateway = self
            .trusted
            .iter()
            .any(|t| t.name() == GATEWAY && t.is_caller(request.metadata()));
        let named = request
            .metadata()
            .get(CLIENT_ADDRESS_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse().ok());
        match named {
            Some(address) if from_gateway => Some(address),
            _ => request.remote_addr().map(|a| a.ip()),
        }
    }

    pub fn with_stream_limits(mut self, limits: crate::stream_caps::Limits) -> Self {
        self.feed_caps = StreamCaps::new(limits);
        self
    }

    /// Who follows the revocation feed: an internal service (by its credential), or
    /// the holder of a user token holding `tokens:read` (the layer checked which).
    /// With the token's claims when a token (not a service) is the caller.
    fn feed_holder<T>(request: &Request<T>) -> Result<(Holder, Option<Claims>), Status> {
        if let Some(service) = Caller::of(request)?.service() {
            return Ok((Holder::Service(service.to_owned()), None));
        }
        let claims = Caller::claims(request)?.clone();
        let subject = claims.user.clone().unwrap_or_else(|| claims.sub.clone());
        Ok((Holder::Subject(subject), Some(claims)))
    }

    /// How the authorization layer checks tokens here: against this service's own
    /// keys and revocations.
    pub(crate) fn token_check(&self) -> LocalTokens {
        LocalTokens {
            keys: self.keys.clone(),
            revoked: self.revoked.clone(),
        }
    }

    pub fn with_registry(mut self, registry: RegistryServiceClient<Channel>) -> Self {
        self.registry = Some(registry);
        self
    }

    pub fn with_legacy(mut self, legacy: Option<crate::legacy::Legacy>) -> Self {
        self.legacy = legacy;
        self
    }

    pub fn with_shutdown(mut self, shutdown: CancellationToken) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// Signs `spec`, records the token, and answers with it. `owner` is the user whose
    /// standing the token depends on (its holder or minter), if any.
    async fn issue(
        &self,
        spec: TokenSpec,
        name: &str,
        created_by: &str,
        owner: Option<&str>,
    ) -> Result<pb::MintedToken, Status> {
        let (token, claims) = self.minter.mint(spec).map_err(internal)?;
        let record = crate::tokens::record_of(&claims, name, created_by);
        let info = crate::registry::token_info(&record);
        self.store.record_token(record).await.map_err(internal)?;
        self.still_standing(&claims, owner).await?;
        tracing::info!(jti = %claims.jti, token_type = %claims.token_type, by = created_by, "token minted");
        Ok(pb::MintedToken {
            token,
            token_type: "bearer".into(),
            info: Some(info),
        })
    }

    /// Checked again once a new token is recorded, so that a revocation or a user
    /// disabled while it was minted cannot miss it: when its parent was revoked or its
    /// owner disabled or deleted meanwhile, the new token is revoked and refused.
    async fn still_standing(&self, claims: &Claims, owner: Option<&str>) -> Result<(), Status> {
        let parent_revoked = match &claims.parent {
            Some(parent) => self.store.is_revoked(parent).await.map_err(internal)?,
            None => false,
        };
        let owner_gone = match owner {
            Some(user) => self
                .accounts
                .find_enabled(user)
                .await
                .map_err(account_status)?
                .is_none(),
            None => false,
        };
        if parent_revoked || owner_gone {
            self.store
                .revoke_tokens(std::slice::from_ref(&claims.jti))
                .await
                .map_err(internal)?;
            self.revoked.after_revoking().await;
            tracing::info!(jti = %claims.jti, parent_revoked, owner_gone, "token revoked as it was minted");
            return Err(ErrorCode::Unauthenticated.status("invalid token"));
        }
        Ok(())
    }

    /// Whether `service` is a service the registry knows, asked with the caller's token.
    async fn check_service_exists<T>(&self, request: &Request<T>, service: &str) -> Result<(), Status> {
        let Some(registry) = &self.registry else {
            return Err(ErrorCode::Unavailable.status("no registry configured to check the service"));
        };
        let mut lookup = Request::new(GetServiceRequest {
            key: Some(Key::Name(service.to_owned())),
        });
        if let Some(auth) = request.metadata().get("authorization") {
            lookup.metadata_mut().insert("authorization", auth.clone());
        }
        match registry.clone().get_service(lookup).await {
            Ok(_) => Ok(()),
            Err(status) if status.code() == tonic::Code::NotFound => {
                Err(ErrorCode::NotFound.status(format!("service {service:?} does not exist")))
            }
            // A narrowed token that mints without `services:read`.
            Err(status) if status.code() == tonic::Code::PermissionDenied => {
                Err(ErrorCode::PermissionDenied.status(format!(
                    "minting for a service needs {}, to check that it exists",
                    scope::SERVICES_READ
                )))
            }
            Err(status) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "registry lookup failed");
                Err(ErrorCode::Unavailable.status("the registry cannot be reached to check the service"))
            }
        }
    }

    /// The user named by a user token, which must still exist and be enabled (from
    /// the user cache: see `user_cache`).
    async fn current_user(&self, claims: &Claims) -> Result<Account, Status> {
        let name = claims
            .user
            .as_deref()
            .ok_or_else(|| ErrorCode::Unauthenticated.status("invalid token"))?;
        self.accounts
            .find_enabled_cached(name)
            .await
            .map_err(account_status)?
            .ok_or_else(|| ErrorCode::Unauthenticated.status("invalid token"))
    }
}

/// The token check of the authorization layer in the auth service: signature and
/// claims against the service's own keys, then the revocations it holds in memory.
pub(crate) struct LocalTokens {
    keys: Arc<KeyRing>,
    revoked: Arc<RevokedSet>,
}

impl TokenCheck for LocalTokens {
    async fn check_token(&self, token: &str) -> Result<Claims, TokenError> {
        let claims = self.keys.verify(token).await?;
        match self.revoked.is_revoked(&claims.jti).await {
            Ok(false) => Ok(claims),
            Ok(true) => Err(TokenError::Revoked),
            Err(error) => {
                tracing::error!(%error, "cannot read the revocation registry");
                Err(TokenError::RevocationsUnavailable)
            }
        }
    }

    /// The one stream here, the revocation feed, ends with its token itself
    /// (`held_feed`).
    fn stream_end(self: Arc<Self>, _claims: Claims) -> Option<TokenEnd> {
        None
    }
}

type Stream<T> = Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

/// A revocation feed holding `slot` until the client goes away or the feed ends. A
/// feed opened with a token (`claims`) ends with UNAUTHENTICATED at the token's `exp`
/// ("token expired"), or right after the event that revokes it ("token revoked").
fn held_feed(
    feed: impl tokio_stream::Stream<Item = Result<pb::RevocationEvent, Status>> + Send + 'static,
    slot: crate::stream_caps::Slot,
    claims: Option<Claims>,
) -> tokio_stream::wrappers::ReceiverStream<Result<pb::RevocationEvent, Status>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        let _slot = slot;
        let mut feed = std::pin::pin!(feed);
        // Without a token the expiry branch is off (its duration does not matter).
        let left_ms = claims.as_ref().map_or(0, |c| {
            c.exp
                .saturating_mul(1000)
                .saturating_sub(chrono::Utc::now().timestamp_millis())
        });
        let expiry = tokio::time::sleep(std::time::Duration::from_millis(u64::try_from(left_ms).unwrap_or(0)));
        let mut expiry = std::pin::pin!(expiry);
        loop {
            tokio::select! {
                () = tx.closed() => return,
                () = &mut expiry, if claims.is_some() => {
                    let _ = tx.send(Err(ErrorCode::Unauthenticated.status("token expired"))).await;
                    return;
                }
                item = feed.next() => {
                    let Some(item) = item else { return };
                    let revoked = matches!((&item, &claims), (Ok(event), Some(c)) if event.token_ids.contains(&c.jti));
                    if tx.send(item).await.is_err() {
                        return;
                    }
                    if revoked {
                        let _ = tx.send(Err(ErrorCode::Unauthenticated.status("token revoked"))).await;
                        return;
                    }
                }
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

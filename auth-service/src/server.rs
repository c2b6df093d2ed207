//! The auth service's gRPC server: the `AuthService` API behind the authorization
//! layer (`common::authz`, tokens checked against its own keys and revocations), health
//! and reflection.

use std::{pin::Pin, sync::Arc};

use anyhow::Context;
use common::{
    authz::{AuthzLayer, Caller, TokenCheck, TokenEnd},
    error::{ErrorCode, with_retry_after},
    identity::{CLIENT_ADDRESS_HEADER, DEPLOY_SERVICE, GATEWAY, TrustedCaller},
    scope,
    token::{Claims, MAX_TOKEN_LEN, TokenError, TokenType, Verifier},
};
use proto::{
    auth::v1::{
        self as pb,
        auth_service_server::{AuthService, AuthServiceServer},
    },
    registry::v1::{GetServiceRequest, get_service_request::Key, registry_service_client::RegistryServiceClient},
};
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, transport::Channel};

use crate::{
    Config,
    accounts::{AccountError, Accounts},
    keys::KeyRing,
    login_limits::LoginLimiter,
    paging::{self, Cursor},
    passwords::{Hasher, PasswordError},
    policy::{self, PolicyError},
    revoked::RevokedSet,
    storage::{Store, StoreError, TokenFilter},
    stream_caps::{Holder, StreamCaps},
    tokens::{Minter, TokenSpec},
    user_cache::Account,
};

/// Opens storage and keys, makes sure the admin user exists, and serves gRPC on
/// `listener` until `shutdown` is cancelled.
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    config
        .storage
        .prepare_data_dir()
        .with_context(|| format!("preparing the data dir {}", config.storage.data_dir.display()))?;
    let url = config.database_url();
    let store = Store::open(&url)
        .await
        .with_context(|| format!("opening {}", common::db::redacted(&url)))?;
    let keys = Arc::new(KeyRing::open(&config.keys_dir())?);
    let hasher = Hasher::new(config.hash_threads()).await?.with_queue(config.login_queue);
    let accounts = Accounts::new(store.clone(), hasher);
    accounts.refresh_legacy().await?;
    if let (Some(name), Some(password)) = (&config.admin_user, &config.admin_password)
        && accounts.ensure(name, password).await?
    {
        tracing::info!(user = %name, "admin user created");
    }
    let registry = tonic::transport::Endpoint::from_shared(config.registry_url.clone())?
        .connect_timeout(std::time::Duration::from_secs(2))
        .timeout(std::time::Duration::from_secs(10))
        .connect_lazy();
    let revoked = Arc::new(
        RevokedSet::load(store.clone())
            .await
            .context("reading the revocation log")?,
    );
    tokio::spawn({
        let (revoked, shutdown) = (revoked.clone(), shutdown.clone());
        async move { revoked.follow(shutdown).await }
    });
    // Expired token records and revocations go in the background, in small batches.
    crate::retention::start(store.clone(), config.token_retention(), shutdown.clone());
    let api = AuthApi::new(store, accounts, keys, config.user_token_minutes, revoked)?
        .with_login_limiter(LoginLimiter::new(config.login_limits()))
        .with_trusted(config.trusted()?)
        .with_registry(RegistryServiceClient::new(registry))
        .with_stream_limits(config.stream_limits())
        .with_shutdown(shutdown.clone())
        .with_legacy(match (&config.legacy_secret_file, config.legacy_until) {
            (Some(path), Some(until)) => {
                tracing::warn!(%until, "legacy fastDeploy tokens are accepted until the cutoff");
                Some(crate::legacy::Legacy::load(path, until)?)
            }
            _ => None,
        });

    let api = Arc::new(api);
    tokio::spawn(reload_keys_periodically(api.clone(), shutdown.clone()));
    let authz = AuthzLayer::new(Arc::new(api.token_check()), config.trusted()?);
    let api = authz.wrap(AuthServiceServer::from_arc(api));
    let grpc_name = <AuthServiceServer<AuthApi> as tonic::server::NamedService>::NAME;
    common::server::serve_grpc(
        "auth-service",
        grpc_name,
        tonic::service::Routes::new(api),
        listener,
        shutdown,
    )
    .await
}

/// How often the key directory is re-read, for rotations made by another replica.
const KEY_RELOAD_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

async fn reload_keys_periodically(api: Arc<AuthApi>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(KEY_RELOAD_INTERVAL) => {}
        }
        match api.keys.reload() {
            Ok(true) => match api.keys.jwks() {
                Ok(jwks) => {
                    api.verifier.set_keys(&jwks);
                    tracing::info!(keys = jwks.keys.len(), "signing keys reloaded from the keys dir");
                }
                Err(error) => tracing::error!(%error, "cannot build the key set"),
            },
            Ok(false) => {}
            Err(error) => tracing::error!(%error, "cannot re-read the keys dir"),
        }
        if let Err(error) = api.accounts.refresh_legacy().await {
            tracing::error!(%error, "cannot read which legacy password hashes are left");
        }
    }
}

pub struct AuthApi {
    store: Store,
    accounts: Accounts,
    keys: Arc<KeyRing>,
    minter: Minter,
    verifier: Arc<Verifier>,
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
        let verifier = Arc::new(Verifier::new(common::ISSUER, common::AUDIENCE));
        verifier.set_keys(&keys.jwks()?);
        Ok(AuthApi {
            store,
            accounts,
            keys,
            minter,
            verifier,
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
    fn token_check(&self) -> LocalTokens {
        LocalTokens {
            verifier: self.verifier.clone(),
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
struct LocalTokens {
    verifier: Arc<Verifier>,
    revoked: Arc<RevokedSet>,
}

impl TokenCheck for LocalTokens {
    async fn check_token(&self, token: &str) -> Result<Claims, TokenError> {
        let claims = self.verifier.verify(token)?;
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

fn policy_status(error: PolicyError) -> Status {
    match error {
        PolicyError::Invalid(m) => ErrorCode::InvalidArgument.status(m),
        PolicyError::Wider(m) => ErrorCode::PermissionDenied.status(m),
    }
}

/// The JSON of a token's header and payload, decoded without any checking (for
/// introspection only).
fn decode_parts(token: &str) -> Option<(serde_json::Value, serde_json::Value)> {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let mut parts = token.split('.');
    let (header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let decode = |part: &str| -> Option<serde_json::Value> {
        let bytes = URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).ok()?;
        let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        value.is_object().then_some(value)
    };
    Some((decode(header)?, decode(payload)?))
}

fn to_struct(value: serde_json::Value) -> Option<proto::wkt::Struct> {
    serde_json::from_value(value).ok()
}

fn internal(error: impl std::fmt::Display) -> Status {
    tracing::error!(%error, "internal error");
    if let Some(status) = common::error::storage_refusal(&error) {
        return status;
    }
    ErrorCode::Internal.status("internal error")
}

fn account_status(error: AccountError) -> Status {
    match error {
        AccountError::InvalidName(why) => ErrorCode::InvalidArgument.status(format!("invalid user name: {why}")),
        AccountError::InvalidPassword(why) => ErrorCode::InvalidArgument.status(format!("invalid password: {why}")),
        AccountError::Store(StoreError::UserExists(name)) => {
            Status::already_exists(format!("user {name:?} already exists"))
        }
        AccountError::UnknownUser(name) => ErrorCode::NotFound.status(format!("user {name:?} not found")),
        error @ AccountError::Yourself(_) => ErrorCode::Conflict.status(error.to_string()),
        AccountError::Password(PasswordError::Busy) => with_retry_after(
            ErrorCode::Unavailable.status("Too many password checks at once; try again shortly"),
            1,
        ),
        other => internal(other),
    }
}

fn timestamp(seconds: i64) -> proto::wkt::Timestamp {
    proto::wkt::Timestamp { seconds, nanos: 0 }
}

fn user_message(user: Account) -> pb::User {
    pb::User {
        id: user.id,
        name: user.name,
        disabled_at: user.disabled_at.map(Into::into),
        disabled_by: user.disabled_by.unwrap_or_default(),
    }
}

fn count(ids: &[String]) -> u32 {
    u32::try_from(ids.len()).unwrap_or(u32::MAX)
}

/// Whether a verification failure came after the signature checked out (the token is
/// one the auth service signed, only outside its time window).
fn signature_verified(error: &TokenError) -> bool {
    matches!(error, TokenError::Expired | TokenError::NotYetValid)
}

#[tonic::async_trait]
impl AuthService for AuthApi {
    #[tracing::instrument(skip_all, fields(user = %request.get_ref().username))]
    async fn login(&self, request: Request<pb::LoginRequest>) -> Result<Response<pb::LoginResponse>, Status> {
        let address = self.client_address(&request);
        let pb::LoginRequest { username, password } = request.into_inner();
        let attempt = self.login_limiter.attempt(&username, address).map_err(|barred| {
            let seconds = barred.retry_after_secs();
            tracing::info!(
                ?address,
                retry_after = seconds,
                "login refused: too many failed attempts"
            );
            with_retry_after(
                ErrorCode::TooManyRequests.status("Too many failed login attempts; try again later"),
                seconds,
            )
        })?;
        let password = SecretString::from(password);
        let user = match self.accounts.login(&username, &password).await {
            Ok(Some(user)) => user,
            Ok(None) => {
                attempt.failed();
                tracing::info!(?address, "login refused");
                return Err(ErrorCode::Unauthenticated.status("Incorrect username or password"));
            }
            // Not counted: the password was never checked.
            Err(AccountError::Password(PasswordError::Busy)) => {
                tracing::warn!("login refused: every hashing slot busy and the queue full");
                return Err(with_retry_after(
                    ErrorCode::Unavailable.status("Too many logins at once; try again shortly"),
                    1,
                ));
            }
            Err(error) => return Err(account_status(error)),
        };
        let (token, claims) = self.minter.user_token(&user.name).map_err(internal)?;
        let record = crate::tokens::record_of(&claims, "login", &user.name);
        self.store.record_token(record).await.map_err(internal)?;
        if self.still_standing(&claims, Some(&user.name)).await.is_err() {
            attempt.failed();
            tracing::info!("login refused: the user was disabled meanwhile");
            return Err(ErrorCode::Unauthenticated.status("Incorrect username or password"));
        }
        attempt.succeeded();
        tracing::info!(jti = %claims.jti, "user logged in");
        Ok(Response::new(pb::LoginResponse {
            access_token: token,
            token_type: "bearer".into(),
            expires_at: Some(timestamp(claims.exp)),
        }))
    }

    async fn who_am_i(&self, request: Request<pb::WhoAmIRequest>) -> Result<Response<pb::User>, Status> {
        let user = self.current_user(Caller::claims(&request)?).await?;
        Ok(Response::new(user_message(user)))
    }

    async fn get_jwks(&self, _request: Request<pb::GetJwksRequest>) -> Result<Response<pb::Jwks>, Status> {
        Ok(Response::new(self.keys.jwks().map_err(internal)?))
    }

    async fn rotate_keys(
        &self,
        request: Request<pb::RotateKeysRequest>,
    ) -> Result<Response<pb::RotateKeysResponse>, Status> {
        let claims = Caller::claims(&request)?;
        let kid = self.keys.rotate().map_err(internal)?;
        // The ring only changes here, so this is the one place the verifier reloads it.
        self.verifier.set_keys(&self.keys.jwks().map_err(internal)?);
        tracing::info!(by = ?claims.user, kid, "signing key rotated");
        Ok(Response::new(pb::RotateKeysResponse { kid }))
    }

    async fn mint_service_token(
        &self,
        request: Request<pb::MintServiceTokenRequest>,
    ) -> Result<Response<pb::MintedToken>, Status> {
        let claims = Caller::claims(&request)?;
        let user = self.current_user(claims).await?;
        let spec = policy::service_token(&user.name, request.get_ref()).map_err(policy_status)?;
        let spec = policy::bound_by_minter(claims, spec, chrono::Utc::now().timestamp()).map_err(policy_status)?;
        self.check_service_exists(&request, &request.get_ref().service).await?;
        let name = request.get_ref().name.clone();
        Ok(Response::new(
            self.issue(spec, &name, &user.name, Some(&user.name)).await?,
        ))
    }

    async fn mint_config_token(
        &self,
        request: Request<pb::MintConfigTokenRequest>,
    ) -> Result<Response<pb::MintedToken>, Status> {
        let claims = Caller::claims(&request)?;
        let user = self.current_user(claims).await?;
        let spec = policy::config_token(&user.name, request.get_ref()).map_err(policy_status)?;
        let spec = policy::bound_by_minter(claims, spec, chrono::Utc::now().timestamp()).map_err(policy_status)?;
        for service in &request.get_ref().services {
            self.check_service_exists(&request, service).await?;
        }
        let name = request.get_ref().name.clone();
        Ok(Response::new(
            self.issue(spec, &name, &user.name, Some(&user.name)).await?,
        ))
    }

    async fn mint_deployment_token(
        &self,
        request: Request<pb::MintDeploymentTokenRequest>,
    ) -> Result<Response<pb::MintedToken>, Status> {
        // Only the deploy service, by its credential (the scope table says so).
        let spec = policy::deployment_token(request.get_ref()).map_err(policy_status)?;
        let name = format!("deployment {}", request.get_ref().deployment_id);
        Ok(Response::new(self.issue(spec, &name, DEPLOY_SERVICE, None).await?))
    }

    async fn attenuate_token(
        &self,
        request: Request<pb::AttenuateTokenRequest>,
    ) -> Result<Response<pb::MintedToken>, Status> {
        let parent = Caller::claims(&request)?;
        let owner = if parent.token_type == TokenType::User {
            // A derived user token is only as good as the user behind it.
            Some(self.current_user(parent).await?.name)
        } else {
            None
        };
        let now = chrono::Utc::now().timestamp();
        let spec = policy::attenuate(parent, request.get_ref(), now).map_err(policy_status)?;
        let by = parent.user.clone().unwrap_or_else(|| parent.sub.clone());
        let name = request.get_ref().name.clone();
        Ok(Response::new(self.issue(spec, &name, &by, owner.as_deref()).await?))
    }

    async fn list_tokens(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        let r = request.into_inner();
        let token_type = match pb::TokenType::try_from(r.r#type) {
            Ok(pb::TokenType::Unspecified) => None,
            Ok(kind) => Some(crate::registry::type_name(kind).to_owned()),
            Err(_) => return Err(ErrorCode::InvalidArgument.status("unknown token type")),
        };
        let non_empty = |s: String| (!s.is_empty()).then_some(s);
        let filter = TokenFilter {
            service: non_empty(r.service),
            token_type,
            created_by: non_empty(r.created_by),
            include_revoked: r.include_revoked,
        };
        let after = common::paging::decode::<Cursor>(&r.page_token)?;
        let (rows, next_page_token) = paging::page(&self.store, &filter, after.as_ref(), r.page_size)
            .await
            .map_err(internal)?;
        Ok(Response::new(pb::ListTokensResponse {
            tokens: rows.iter().map(crate::registry::token_info).collect(),
            next_page_token,
        }))
    }

    async fn revoke_tokens(
        &self,
        request: Request<pb::RevokeTokensRequest>,
    ) -> Result<Response<pb::RevokeTokensResponse>, Status> {
        // The deploy service revokes the deployment tokens of finished runs with its
        // credential; everyone else needs a user token that may revoke.
        let deploy_service = Caller::of(&request)?.service() == Some(DEPLOY_SERVICE);
        let by = if deploy_service {
            DEPLOY_SERVICE.to_owned()
        } else {
            let claims = Caller::claims(&request)?;
            claims.user.clone().unwrap_or_else(|| claims.sub.clone())
        };
        let ids = request.into_inner().ids;
        if ids.is_empty() || ids.iter().any(|id| id.is_empty() || id.len() > 128) {
            return Err(ErrorCode::InvalidArgument.status("give one or more token ids"));
        }
        if deploy_service {
            for id in &ids {
                let token = self.store.find_token(id).await.map_err(internal)?;
                if token.is_some_and(|t| t.token_type != TokenType::Deployment.as_str()) {
                    return Err(
                        ErrorCode::PermissionDenied.status("the deploy service may only revoke deployment tokens")
                    );
                }
            }
        }
        let revoked_ids = self.store.revoke_tokens(&ids).await.map_err(|e| match e {
            StoreError::UnknownToken(id) => ErrorCode::NotFound.status(format!("token {id} not found")),
            other => internal(other),
        })?;
        self.revoked.after_revoking().await;
        tracing::info!(by, ids = ?revoked_ids, "tokens revoked");
        Ok(Response::new(pb::RevokeTokensResponse { revoked_ids }))
    }

    /// Open to anyone: holding a token is what it takes to decode it. Says whether it
    /// is valid now and, if not, why.
    async fn debug_token(
        &self,
        request: Request<pb::DebugTokenRequest>,
    ) -> Result<Response<pb::DebugTokenResponse>, Status> {
        let token = request.into_inner().token;
        let token = token.trim();
        if token.len() > MAX_TOKEN_LEN {
            return Err(ErrorCode::InvalidArgument.status("token too long"));
        }
        let Some((header, payload)) = decode_parts(token) else {
            return Err(ErrorCode::InvalidArgument.status("not a JWT (header.payload.signature)"));
        };
        let decoded: Option<Claims> = serde_json::from_value(payload.clone()).ok();
        let verified = self.verifier.verify(token);
        // Registry data only for a token the auth service signed: anyone can write a
        // JWT carrying someone else's `jti`.
        let signed_here = match &verified {
            Ok(_) => true,
            Err(e) => signature_verified(e),
        };
        let info = match &decoded {
            Some(c) if signed_here => self.store.find_token(&c.jti).await.map_err(internal)?,
            _ => None,
        };
        let reason = match verified {
            Err(e) => Some(e.to_string()),
            Ok(claims) if self.revoked.is_revoked(&claims.jti).await.map_err(internal)? => Some("token revoked".into()),
            Ok(claims) if claims.token_type == TokenType::User && self.current_user(&claims).await.is_err() => {
                Some("the user no longer exists or is disabled".into())
            }
            Ok(_) => None,
        };
        Ok(Response::new(pb::DebugTokenResponse {
            header: to_struct(header),
            claims: to_struct(payload),
            valid: reason.is_none(),
            reason: reason.unwrap_or_default(),
            permissions: decoded
                .as_ref()
                .map(|c| scope::effective(c).into_iter().map(String::from).collect())
                .unwrap_or_default(),
            info: info.as_ref().map(crate::registry::token_info),
        }))
    }

    type WatchRevocationsStream = Stream<pb::RevocationEvent>;

    async fn watch_revocations(
        &self,
        request: Request<pb::WatchRevocationsRequest>,
    ) -> Result<Response<Self::WatchRevocationsStream>, Status> {
        let (holder, claims) = AuthApi::feed_holder(&request)?;
        let slot = self.feed_caps.acquire(holder.clone()).map_err(|full| {
            tracing::warn!(?holder, %full, "revocation feed refused");
            ErrorCode::TooManyRequests.status(full.to_string())
        })?;
        let after = request.into_inner().after_sequence;
        let feed = crate::registry::revocation_feed(self.store.clone(), after, self.shutdown.clone());
        Ok(Response::new(Box::pin(held_feed(feed, slot, claims))))
    }

    async fn create_user(&self, request: Request<pb::CreateUserRequest>) -> Result<Response<pb::User>, Status> {
        let creator = self.current_user(Caller::claims(&request)?).await?;
        let pb::CreateUserRequest { name, password } = request.into_inner();
        let user = self
            .accounts
            .create(&name, &SecretString::from(password))
            .await
            .map_err(account_status)?;
        tracing::info!(user = %user.name, by = %creator.name, "user created");
        Ok(Response::new(user_message(Account::from(&user))))
    }

    async fn disable_user(
        &self,
        request: Request<pb::DisableUserRequest>,
    ) -> Result<Response<pb::DisableUserResponse>, Status> {
        let caller = self.current_user(Caller::claims(&request)?).await?;
        let name = request.into_inner().name;
        let removed = self
            .accounts
            .disable(&name, &caller.name)
            .await
            .map_err(account_status)?;
        self.revoked.after_revoking().await;
        tracing::info!(user = %name, by = %caller.name, revoked = removed.revoked.len(), "user disabled; tokens revoked");
        Ok(Response::new(pb::DisableUserResponse {
            revoked_tokens: count(&removed.revoked),
            user: Some(user_message(Account::from(&removed.user))),
        }))
    }

    async fn enable_user(&self, request: Request<pb::EnableUserRequest>) -> Result<Response<pb::User>, Status> {
        let caller = self.current_user(Caller::claims(&request)?).await?;
        let name = request.into_inner().name;
        let user = self.accounts.enable(&name).await.map_err(account_status)?;
        tracing::info!(user = %name, by = %caller.name, "user enabled");
        Ok(Response::new(user_message(Account::from(&user))))
    }

    async fn delete_user(
        &self,
        request: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        let caller = self.current_user(Caller::claims(&request)?).await?;
        let name = request.into_inner().name;
        let removed = self
            .accounts
            .delete(&name, &caller.name)
            .await
            .map_err(account_status)?;
        self.revoked.after_revoking().await;
        tracing::info!(user = %name, by = %caller.name, revoked = removed.revoked.len(), "user deleted; tokens revoked");
        Ok(Response::new(pb::DeleteUserResponse {
            revoked_tokens: count(&removed.revoked),
            user: Some(user_message(Account::from(&removed.user))),
        }))
    }

    /// Changes the caller's password and revokes every token they hold or minted
    /// (the current one included): whoever knew the old password may have minted some.
    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::ChangePasswordResponse>, Status> {
        let claims = Caller::claims(&request)?.clone();
        let pb::ChangePasswordRequest {
            old_password,
            new_password,
        } = request.into_inner();
        let name = claims
            .user
            .as_deref()
            .ok_or_else(|| ErrorCode::Unauthenticated.status("invalid token"))?;
        let Some(user) = self
            .accounts
            .login(name, &SecretString::from(old_password))
            .await
            .map_err(account_status)?
        else {
            tracing::info!(user = name, "password change refused: wrong old password");
            return Err(ErrorCode::PermissionDenied.status("the old password is wrong"));
        };
        self.accounts
            .set_password(&user, &SecretString::from(new_password))
            .await
            .map_err(account_status)?;
        let revoked = self.store.revoke_user_tokens(&user.name).await.map_err(internal)?;
        self.revoked.after_revoking().await;
        tracing::info!(user = %user.name, revoked = revoked.len(), "password changed; tokens revoked");
        Ok(Response::new(pb::ChangePasswordResponse {
            revoked_tokens: count(&revoked),
        }))
    }

    async fn exchange_legacy_token(
        &self,
        request: Request<pb::ExchangeLegacyTokenRequest>,
    ) -> Result<Response<pb::MintedToken>, Status> {
        use crate::legacy::LegacyError;
        let token = request.into_inner().token;
        if token.len() > MAX_TOKEN_LEN {
            return Err(ErrorCode::Unauthenticated.status("invalid token"));
        }
        let result = match &self.legacy {
            None => Err(LegacyError::Off),
            Some(legacy) => legacy.exchange(&token, chrono::Utc::now()),
        };
        let spec = result.map_err(|e| {
            tracing::info!(reason = %e, "legacy token refused");
            ErrorCode::Unauthenticated.status(e.to_string())
        })?;
        // A user token needs an enabled user; a token any user minted, that the user
        // is not disabled.
        if let Some(user) = &spec.user {
            let account = self.accounts.find(user).await.map_err(account_status)?;
            let refused = match account {
                None => spec.token_type == TokenType::User,
                Some(account) => !account.is_enabled(),
            };
            if refused {
                tracing::info!(user, "legacy token refused: unknown or disabled user");
                return Err(ErrorCode::Unauthenticated.status("invalid legacy token"));
            }
        }
        tracing::warn!(
            legacy = true,
            token_type = %spec.token_type,
            user = ?spec.user,
            service = ?spec.service,
            "legacy fastDeploy token used"
        );
        let by = format!("legacy:{}", spec.user.as_deref().unwrap_or("unknown"));
        let owner = (spec.token_type == TokenType::User)
            .then(|| spec.user.clone())
            .flatten();
        Ok(Response::new(
            self.issue(spec, "legacy exchange", &by, owner.as_deref()).await?,
        ))
    }
}

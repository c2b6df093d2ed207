//! The auth service's gRPC server: the `AuthService` API, health and reflection.

use std::{pin::Pin, sync::Arc};

use anyhow::Context;
use common::{
    error::ErrorCode,
    token::{Claims, TokenType, Verifier, bearer_token},
};
use proto::auth::v1::{
    self as pb,
    auth_service_server::{AuthService, AuthServiceServer},
};
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::{
    Config,
    accounts::{AccountError, Accounts},
    keys::KeyRing,
    passwords::Hasher,
    storage::{Store, StoreError, TokenFilter},
    tokens::Minter,
};

/// Opens storage and keys, makes sure the admin user exists, and serves gRPC on
/// `listener` until `shutdown` is cancelled.
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let url = config.database_url();
    let store = Store::open(&url)
        .await
        .with_context(|| format!("opening {}", common::db::redacted(&url)))?;
    let keys = Arc::new(KeyRing::open(&config.keys_dir())?);
    let accounts = Accounts::new(store.clone(), Hasher::for_this_machine().await?);
    if let (Some(name), Some(password)) = (&config.admin_user, &config.admin_password)
        && accounts.ensure(name, password).await?
    {
        tracing::info!(user = %name, "admin user created");
    }
    let api = AuthApi::new(store, accounts, keys, config.user_token_minutes)?;

    let api = AuthServiceServer::new(api);
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

pub struct AuthApi {
    store: Store,
    accounts: Accounts,
    keys: Arc<KeyRing>,
    minter: Minter,
    verifier: Verifier,
}

impl AuthApi {
    pub fn new(
        store: Store,
        accounts: Accounts,
        keys: Arc<KeyRing>,
        user_token_minutes: u32,
    ) -> Result<Self, crate::keys::KeyError> {
        let minter = Minter::new(keys.clone(), user_token_minutes);
        let verifier = Verifier::new(common::ISSUER, common::AUDIENCE);
        verifier.set_keys(&keys.jwks()?);
        Ok(AuthApi {
            store,
            accounts,
            keys,
            minter,
            verifier,
        })
    }

    /// The claims of the caller's token, which must be of type `expected` and not revoked.
    async fn authenticate<T>(&self, request: &Request<T>, expected: TokenType) -> Result<Claims, Status> {
        let header = request.metadata().get("authorization").and_then(|v| v.to_str().ok());
        let token = bearer_token(header).ok_or_else(|| ErrorCode::Unauthenticated.status("missing bearer token"))?;
        let claims = self.verifier.verify_type(token, expected).map_err(|e| {
            tracing::info!(reason = %e, "token refused");
            ErrorCode::Unauthenticated.status("invalid token")
        })?;
        if self.store.is_revoked(&claims.jti).await.map_err(internal)? {
            tracing::info!(jti = %claims.jti, "revoked token refused");
            return Err(ErrorCode::Unauthenticated.status("invalid token"));
        }
        Ok(claims)
    }

    /// The user named by a user token, which must still exist.
    async fn current_user(&self, claims: &Claims) -> Result<crate::storage::users::Model, Status> {
        let name = claims
            .user
            .as_deref()
            .ok_or_else(|| ErrorCode::Unauthenticated.status("invalid token"))?;
        self.accounts
            .find(name)
            .await
            .map_err(account_status)?
            .ok_or_else(|| ErrorCode::Unauthenticated.status("invalid token"))
    }
}

type Stream<T> = Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

fn not_yet(what: &str) -> Status {
    Status::unimplemented(format!("{what} is not implemented yet"))
}

fn internal(error: impl std::fmt::Display) -> Status {
    tracing::error!(%error, "internal error");
    ErrorCode::Internal.status("internal error")
}

fn account_status(error: AccountError) -> Status {
    match error {
        AccountError::InvalidName(why) => ErrorCode::InvalidArgument.status(format!("invalid user name: {why}")),
        AccountError::InvalidPassword(why) => ErrorCode::InvalidArgument.status(format!("invalid password: {why}")),
        AccountError::Store(StoreError::UserExists(name)) => {
            Status::already_exists(format!("user {name:?} already exists"))
        }
        other => internal(other),
    }
}

fn timestamp(seconds: i64) -> proto::wkt::Timestamp {
    proto::wkt::Timestamp { seconds, nanos: 0 }
}

#[tonic::async_trait]
impl AuthService for AuthApi {
    #[tracing::instrument(skip_all, fields(user = %request.get_ref().username))]
    async fn login(&self, request: Request<pb::LoginRequest>) -> Result<Response<pb::LoginResponse>, Status> {
        let pb::LoginRequest { username, password } = request.into_inner();
        let password = SecretString::from(password);
        let Some(user) = self
            .accounts
            .login(&username, &password)
            .await
            .map_err(account_status)?
        else {
            tracing::info!("login refused");
            return Err(ErrorCode::Unauthenticated.status("Incorrect username or password"));
        };
        let (token, claims) = self.minter.user_token(&user.name).map_err(internal)?;
        let record = crate::tokens::record_of(&claims, "login", &user.name);
        self.store.record_token(record).await.map_err(internal)?;
        tracing::info!(jti = %claims.jti, "user logged in");
        Ok(Response::new(pb::LoginResponse {
            access_token: token,
            token_type: "bearer".into(),
            expires_at: Some(timestamp(claims.exp)),
        }))
    }

    async fn who_am_i(&self, request: Request<pb::WhoAmIRequest>) -> Result<Response<pb::User>, Status> {
        let claims = self.authenticate(&request, TokenType::User).await?;
        let user = self.current_user(&claims).await?;
        Ok(Response::new(pb::User {
            id: user.id,
            name: user.name,
        }))
    }

    async fn get_jwks(&self, _request: Request<pb::GetJwksRequest>) -> Result<Response<pb::Jwks>, Status> {
        Ok(Response::new(self.keys.jwks().map_err(internal)?))
    }

    async fn rotate_keys(
        &self,
        request: Request<pb::RotateKeysRequest>,
    ) -> Result<Response<pb::RotateKeysResponse>, Status> {
        let claims = self.authenticate(&request, TokenType::User).await?;
        let kid = self.keys.rotate().map_err(internal)?;
        // The ring only changes here, so this is the one place the verifier reloads it.
        self.verifier.set_keys(&self.keys.jwks().map_err(internal)?);
        tracing::info!(by = ?claims.user, kid, "signing key rotated");
        Ok(Response::new(pb::RotateKeysResponse { kid }))
    }

    async fn mint_service_token(
        &self,
        _: Request<pb::MintServiceTokenRequest>,
    ) -> Result<Response<pb::MintedToken>, Status> {
        Err(not_yet("service tokens"))
    }

    async fn mint_config_token(
        &self,
        _: Request<pb::MintConfigTokenRequest>,
    ) -> Result<Response<pb::MintedToken>, Status> {
        Err(not_yet("config tokens"))
    }

    async fn mint_deployment_token(
        &self,
        _: Request<pb::MintDeploymentTokenRequest>,
    ) -> Result<Response<pb::MintedToken>, Status> {
        Err(not_yet("deployment tokens"))
    }

    async fn attenuate_token(
        &self,
        _: Request<pb::AttenuateTokenRequest>,
    ) -> Result<Response<pb::MintedToken>, Status> {
        Err(not_yet("attenuation"))
    }

    async fn list_tokens(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        self.authenticate(&request, TokenType::User).await?;
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
        let tokens = self.store.list_tokens(&filter).await.map_err(internal)?;
        Ok(Response::new(pb::ListTokensResponse {
            tokens: tokens.iter().map(crate::registry::token_info).collect(),
            next_page_token: String::new(),
        }))
    }

    async fn revoke_tokens(
        &self,
        request: Request<pb::RevokeTokensRequest>,
    ) -> Result<Response<pb::RevokeTokensResponse>, Status> {
        let claims = self.authenticate(&request, TokenType::User).await?;
        let ids = request.into_inner().ids;
        if ids.is_empty() || ids.iter().any(|id| id.is_empty() || id.len() > 128) {
            return Err(ErrorCode::InvalidArgument.status("give one or more token ids"));
        }
        let revoked_ids = self.store.revoke_tokens(&ids).await.map_err(|e| match e {
            StoreError::UnknownToken(id) => ErrorCode::NotFound.status(format!("token {id} not found")),
            other => internal(other),
        })?;
        tracing::info!(by = ?claims.user, ids = ?revoked_ids, "tokens revoked");
        Ok(Response::new(pb::RevokeTokensResponse { revoked_ids }))
    }

    async fn debug_token(&self, _: Request<pb::DebugTokenRequest>) -> Result<Response<pb::DebugTokenResponse>, Status> {
        Err(not_yet("token introspection"))
    }

    type WatchRevocationsStream = Stream<pb::RevocationEvent>;

    async fn watch_revocations(
        &self,
        request: Request<pb::WatchRevocationsRequest>,
    ) -> Result<Response<Self::WatchRevocationsStream>, Status> {
        let after = request.into_inner().after_sequence;
        let feed = crate::registry::revocation_feed(self.store.clone(), after);
        Ok(Response::new(Box::pin(feed)))
    }

    async fn create_user(&self, request: Request<pb::CreateUserRequest>) -> Result<Response<pb::User>, Status> {
        let claims = self.authenticate(&request, TokenType::User).await?;
        let creator = self.current_user(&claims).await?;
        let pb::CreateUserRequest { name, password } = request.into_inner();
        let user = self
            .accounts
            .create(&name, &SecretString::from(password))
            .await
            .map_err(account_status)?;
        tracing::info!(user = %user.name, by = %creator.name, "user created");
        Ok(Response::new(pb::User {
            id: user.id,
            name: user.name,
        }))
    }

    async fn change_password(
        &self,
        _: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::ChangePasswordResponse>, Status> {
        Err(not_yet("password changes"))
    }
}

//! The handlers of `AuthService`, one per RPC.

use common::{
    authz::Caller,
    error::{ErrorCode, with_retry_after},
    identity::DEPLOY_SERVICE,
    paging::UsersCursor,
    scope,
    token::{Claims, MAX_TOKEN_LEN, TokenType},
};
use proto::auth::v1::{self as pb, auth_service_server::AuthService};
use secrecy::SecretString;
use tonic::{Request, Response, Status};

use crate::{
    accounts::AccountError,
    paging::{self, Cursor},
    passwords::PasswordError,
    policy,
    storage::{StoreError, TokenFilter},
    user_cache::Account,
};

use super::{AuthApi, Stream, convert::*, held_feed};

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
        // A verifier asks when a token names a key it does not know: answer with the
        // keys as the database has them now, whichever replica rotated.
        self.keys.refresh().await;
        Ok(Response::new(self.keys.jwks()))
    }

    async fn rotate_keys(
        &self,
        request: Request<pb::RotateKeysRequest>,
    ) -> Result<Response<pb::RotateKeysResponse>, Status> {
        let claims = Caller::claims(&request)?;
        let kid = self.keys.rotate().await.map_err(internal)?;
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
        let verified = self.keys.verify(token).await;
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
        let feed = crate::registry::revocation_feed(
            self.store.clone(),
            after,
            self.revoked.subscribe(),
            self.shutdown.clone(),
        );
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

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let r = request.into_inner();
        let after = common::paging::decode::<UsersCursor>(&r.page_token)?;
        let size = common::paging::USERS.of(r.page_size);
        // One more than the page says whether another page follows.
        let rows = self
            .store
            .list_users(after.as_ref().map(|c| c.0.as_str()), u64::from(size) + 1)
            .await
            .map_err(internal)?;
        let (rows, next_page_token) = common::paging::split_page(rows, size, |last| UsersCursor(last.name.clone()));
        Ok(Response::new(pb::ListUsersResponse {
            users: rows.iter().map(|u| user_message(Account::from(u))).collect(),
            next_page_token,
        }))
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

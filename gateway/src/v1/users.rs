//! `/v1` for the auth service's user RPCs: log in with JSON, who am I, change the
//! caller's password, list, create, disable, enable and delete users.

use std::net::SocketAddr;

use axum::{
    Extension, Json,
    extract::{ConnectInfo, Path, State},
};
use proto::auth::v1::{
    ChangePasswordRequest, ChangePasswordResponse, CreateUserRequest, DeleteUserRequest, DeleteUserResponse,
    DisableUserRequest, DisableUserResponse, EnableUserRequest, ListUsersRequest, ListUsersResponse, LoginRequest,
    LoginResponse, User, WhoAmIRequest,
};

use serde::Deserialize;

use super::{Auth, Body, Params, Reply, forward};
use crate::{
    error::Retryable,
    fastdeploy::auth::{login_refused, login_request},
    interceptor::Caller,
    server::AppState,
};

/// Log in with `{"username", "password"}`; a wrong name or password is 401, too many
/// failures 429 and too many logins at once 503 (both with `Retry-After`).
pub async fn login(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    Body(request): Body<LoginRequest>,
) -> Result<Json<LoginResponse>, Retryable> {
    let peer = peer.map(|Extension(ConnectInfo(addr))| addr);
    let request = login_request(request, &state, peer);
    match state.backends.auth().login(request).await {
        Ok(response) => Ok(Json(response.into_inner())),
        Err(status) => Err(login_refused(&status)),
    }
}

pub async fn who_am_i(State(state): State<AppState>, caller: Caller) -> Reply<User> {
    let request = WhoAmIRequest {};
    forward(&state, Some(&caller), request, async |mut c: Auth, r| {
        c.who_am_i(r).await
    })
    .await
}

/// Changes the caller's password; every token they hold or minted is revoked.
pub async fn change_password(
    State(state): State<AppState>,
    caller: Caller,
    Body(request): Body<ChangePasswordRequest>,
) -> Reply<ChangePasswordResponse> {
    forward(&state, Some(&caller), request, async |mut c: Auth, r| {
        c.change_password(r).await
    })
    .await
}

/// `ListUsersRequest` as query parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    page_size: u32,
    #[serde(default)]
    page_token: String,
}

/// Every user by name, paged (a user token with `users:read`).
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Params(query): Params<ListQuery>,
) -> Reply<ListUsersResponse> {
    let request = ListUsersRequest {
        page_size: query.page_size,
        page_token: query.page_token,
    };
    forward(&state, Some(&caller), request, async |mut c: Auth, r| {
        c.list_users(r).await
    })
    .await
}

/// Create a user (a user token with `users:write`).
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Body(request): Body<CreateUserRequest>,
) -> Reply<User> {
    forward(&state, Some(&caller), request, async |mut c: Auth, r| {
        c.create_user(r).await
    })
    .await
}

/// Disable a user: logins refused, every token the user holds or minted revoked.
pub async fn disable(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Reply<DisableUserResponse> {
    let request = DisableUserRequest { name };
    forward(&state, Some(&caller), request, async |mut c: Auth, r| {
        c.disable_user(r).await
    })
    .await
}

/// Let a disabled user log in again.
pub async fn enable(State(state): State<AppState>, caller: Caller, Path(name): Path<String>) -> Reply<User> {
    let request = EnableUserRequest { name };
    forward(&state, Some(&caller), request, async |mut c: Auth, r| {
        c.enable_user(r).await
    })
    .await
}

/// Delete a user and revoke every token the user holds or minted.
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Reply<DeleteUserResponse> {
    let request = DeleteUserRequest { name };
    forward(&state, Some(&caller), request, async |mut c: Auth, r| {
        c.delete_user(r).await
    })
    .await
}

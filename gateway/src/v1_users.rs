//! `/v1` for the auth service's user RPCs: log in with JSON, who am I, create, disable,
//! enable and delete a user.

use std::net::SocketAddr;

use axum::{
    Extension, Json, Router,
    extract::{ConnectInfo, Path, State, rejection::JsonRejection},
    routing::{delete, get, post},
};
use proto::auth::v1::{
    CreateUserRequest, DeleteUserRequest, DeleteUserResponse, DisableUserRequest, DisableUserResponse,
    EnableUserRequest, LoginRequest, LoginResponse, User, WhoAmIRequest,
};

use crate::{
    error::{ApiError, Retryable},
    fastdeploy::auth::{login_refused, login_request, with_token},
    interceptor::Caller,
    server::{AppState, method_not_allowed},
    v1::{auth_error, body},
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/login", post(login).fallback(method_not_allowed))
        .route("/v1/users/me", get(who_am_i).fallback(method_not_allowed))
        .route("/v1/users", post(create_user).fallback(method_not_allowed))
        .route("/v1/users/{name}", delete(delete_user).fallback(method_not_allowed))
        .route(
            "/v1/users/{name}/disable",
            post(disable_user).fallback(method_not_allowed),
        )
        .route(
            "/v1/users/{name}/enable",
            post(enable_user).fallback(method_not_allowed),
        )
}

/// Log in with `{"username", "password"}`; a wrong name or password is 401.
async fn login(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    json: Result<Json<LoginRequest>, JsonRejection>,
) -> Result<Json<LoginResponse>, Retryable> {
    let peer = peer.map(|Extension(ConnectInfo(addr))| addr);
    let request = login_request(body(json)?, &state, peer);
    match state.backends.auth().login(request).await {
        Ok(response) => Ok(Json(response.into_inner())),
        Err(status) => Err(login_refused(&status)),
    }
}

async fn who_am_i(State(state): State<AppState>, user: Caller) -> Result<Json<User>, ApiError> {
    let request = with_token(WhoAmIRequest {}, &user.token)?;
    let me = state.backends.auth().who_am_i(request).await.map_err(auth_error)?;
    Ok(Json(me.into_inner()))
}

/// Create a user (a user token with `users:write`).
async fn create_user(
    State(state): State<AppState>,
    user: Caller,
    json: Result<Json<CreateUserRequest>, JsonRejection>,
) -> Result<Json<User>, ApiError> {
    let request = with_token(body(json)?, &user.token)?;
    let created = state.backends.auth().create_user(request).await.map_err(auth_error)?;
    Ok(Json(created.into_inner()))
}

/// Disable a user: logins refused, every token the user holds or minted revoked.
async fn disable_user(
    State(state): State<AppState>,
    user: Caller,
    Path(name): Path<String>,
) -> Result<Json<DisableUserResponse>, ApiError> {
    let request = with_token(DisableUserRequest { name }, &user.token)?;
    let response = state.backends.auth().disable_user(request).await.map_err(auth_error)?;
    Ok(Json(response.into_inner()))
}

/// Let a disabled user log in again.
async fn enable_user(
    State(state): State<AppState>,
    user: Caller,
    Path(name): Path<String>,
) -> Result<Json<User>, ApiError> {
    let request = with_token(EnableUserRequest { name }, &user.token)?;
    let response = state.backends.auth().enable_user(request).await.map_err(auth_error)?;
    Ok(Json(response.into_inner()))
}

/// Delete a user and revoke every token the user holds or minted.
async fn delete_user(
    State(state): State<AppState>,
    user: Caller,
    Path(name): Path<String>,
) -> Result<Json<DeleteUserResponse>, ApiError> {
    let request = with_token(DeleteUserRequest { name }, &user.token)?;
    let response = state.backends.auth().delete_user(request).await.map_err(auth_error)?;
    Ok(Json(response.into_inner()))
}

//! Slipway's own API under `/v1`, in proto3 canonical JSON (the proto crate's pbjson
//! mapping). Tokens are checked by the interceptor against the scope table; unlike
//! fastDeploy's routes, a valid token that may not call a route gets 403. Today: tokens (mint, list, revoke, attenuate, debug), password change and
//! signing-key rotation.

use axum::extract::rejection::JsonRejection;
use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::StatusCode,
    routing::{delete, get, post},
};
use proto::auth::v1::{
    AttenuateTokenRequest, ChangePasswordRequest, ChangePasswordResponse, DebugTokenRequest, DebugTokenResponse,
    ExchangeLegacyTokenRequest, ListTokensRequest, ListTokensResponse, MintConfigTokenRequest, MintServiceTokenRequest,
    MintedToken, RevokeTokensRequest, RevokeTokensResponse, RotateKeysRequest, RotateKeysResponse, TokenType as PbType,
};
use serde::Deserialize;

use crate::{
    error::ApiError,
    fastdeploy::auth::{with_request_id, with_token},
    interceptor::Caller,
    server::{AppState, method_not_allowed},
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/tokens",
            get(list_tokens).post(mint_config_token).fallback(method_not_allowed),
        )
        .route(
            "/v1/tokens/service",
            post(mint_service_token).fallback(method_not_allowed),
        )
        .route(
            "/v1/tokens/attenuate",
            post(attenuate_token).fallback(method_not_allowed),
        )
        .route("/v1/tokens/debug", post(debug_token).fallback(method_not_allowed))
        .route(
            "/v1/tokens/exchange",
            post(exchange_legacy_token).fallback(method_not_allowed),
        )
        .route("/v1/tokens/{id}", delete(revoke_token).fallback(method_not_allowed))
        .route(
            "/v1/users/me/password",
            post(change_password).fallback(method_not_allowed),
        )
        .route("/v1/keys/rotate", post(rotate_keys).fallback(method_not_allowed))
}

/// A JSON body in proto3 JSON, or 400 saying what is wrong with it (413 past the
/// body limit).
pub fn body<T>(json: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    json.map(|Json(t)| t).map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => crate::body_limit::too_large(),
        _ => ApiError::Detail(StatusCode::BAD_REQUEST, e.body_text()),
    })
}

pub(crate) fn auth_error(status: tonic::Status) -> ApiError {
    ApiError::from_backend("auth", &status)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    service: Option<String>,
    #[serde(rename = "type")]
    token_type: Option<String>,
    created_by: Option<String>,
    #[serde(default)]
    include_revoked: bool,
    #[serde(default)]
    page_size: u32,
    #[serde(default)]
    page_token: String,
}

fn parse_type(name: &str) -> Result<PbType, ApiError> {
    match name {
        "user" => Ok(PbType::User),
        "service" => Ok(PbType::Service),
        "deployment" => Ok(PbType::Deployment),
        "config" => Ok(PbType::Config),
        other => Err(ApiError::Detail(
            StatusCode::BAD_REQUEST,
            format!("unknown token type {other:?}"),
        )),
    }
}

async fn list_tokens(
    State(state): State<AppState>,
    user: Caller,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ListTokensResponse>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::Detail(StatusCode::BAD_REQUEST, e.body_text()))?;
    let token_type = query
        .token_type
        .as_deref()
        .map(parse_type)
        .transpose()?
        .unwrap_or(PbType::Unspecified);
    let request = ListTokensRequest {
        service: query.service.unwrap_or_default(),
        r#type: token_type as i32,
        created_by: query.created_by.unwrap_or_default(),
        include_revoked: query.include_revoked,
        page_size: query.page_size,
        page_token: query.page_token,
    };
    let response = state
        .backends
        .auth()
        .list_tokens(with_token(request, &user.token)?)
        .await
        .map_err(|s| ApiError::from_backend("auth", &s))?;
    Ok(Json(response.into_inner()))
}

async fn revoke_token(
    State(state): State<AppState>,
    user: Caller,
    Path(id): Path<String>,
) -> Result<Json<RevokeTokensResponse>, ApiError> {
    let request = RevokeTokensRequest { ids: vec![id] };
    let response = state
        .backends
        .auth()
        .revoke_tokens(with_token(request, &user.token)?)
        .await
        .map_err(|s| ApiError::from_backend("auth", &s))?;
    Ok(Json(response.into_inner()))
}

/// Start signing with a new key; tokens of older keys stay valid until they expire.
async fn rotate_keys(State(state): State<AppState>, user: Caller) -> Result<Json<RotateKeysResponse>, ApiError> {
    let response = state
        .backends
        .auth()
        .rotate_keys(with_token(RotateKeysRequest {}, &user.token)?)
        .await
        .map_err(|s| ApiError::from_backend("auth", &s))?;
    Ok(Json(response.into_inner()))
}

/// A config token, optionally limited to some services, with extra claims.
async fn mint_config_token(
    State(state): State<AppState>,
    user: Caller,
    json: Result<Json<MintConfigTokenRequest>, JsonRejection>,
) -> Result<Json<MintedToken>, ApiError> {
    let request = with_token(body(json)?, &user.token)?;
    let minted = state
        .backends
        .auth()
        .mint_config_token(request)
        .await
        .map_err(auth_error)?;
    Ok(Json(minted.into_inner()))
}

/// A service token for one existing service and an origin.
async fn mint_service_token(
    State(state): State<AppState>,
    user: Caller,
    json: Result<Json<MintServiceTokenRequest>, JsonRejection>,
) -> Result<Json<MintedToken>, ApiError> {
    let request = with_token(body(json)?, &user.token)?;
    let minted = state
        .backends
        .auth()
        .mint_service_token(request)
        .await
        .map_err(auth_error)?;
    Ok(Json(minted.into_inner()))
}

/// A narrower token derived from the presented one.
async fn attenuate_token(
    State(state): State<AppState>,
    holder: Caller,
    json: Result<Json<AttenuateTokenRequest>, JsonRejection>,
) -> Result<Json<MintedToken>, ApiError> {
    let request = with_token(body(json)?, &holder.token)?;
    let minted = state
        .backends
        .auth()
        .attenuate_token(request)
        .await
        .map_err(auth_error)?;
    Ok(Json(minted.into_inner()))
}

/// Decodes a token and says whether it is valid now; needs no token of its own.
async fn debug_token(
    State(state): State<AppState>,
    json: Result<Json<DebugTokenRequest>, JsonRejection>,
) -> Result<Json<DebugTokenResponse>, ApiError> {
    let response = state
        .backends
        .auth()
        .debug_token(body(json)?)
        .await
        .map_err(auth_error)?;
    Ok(Json(response.into_inner()))
}

/// Exchanges a fastDeploy HS256 user token for a short-lived Slipway token (when the
/// auth service accepts legacy tokens, until its cutoff); the legacy token is the
/// credential, as on the RPC.
async fn exchange_legacy_token(
    State(state): State<AppState>,
    json: Result<Json<ExchangeLegacyTokenRequest>, JsonRejection>,
) -> Result<Json<MintedToken>, ApiError> {
    let response = state
        .backends
        .auth()
        .exchange_legacy_token(with_request_id(body(json)?))
        .await
        .map_err(auth_error)?;
    Ok(Json(response.into_inner()))
}

/// Changes the caller's password; every token they hold or minted is revoked.
async fn change_password(
    State(state): State<AppState>,
    user: Caller,
    json: Result<Json<ChangePasswordRequest>, JsonRejection>,
) -> Result<Json<ChangePasswordResponse>, ApiError> {
    let request = with_token(body(json)?, &user.token)?;
    let response = state
        .backends
        .auth()
        .change_password(request)
        .await
        .map_err(auth_error)?;
    Ok(Json(response.into_inner()))
}

//! Slipway's own API under `/v1`, in proto3 canonical JSON (the proto crate's pbjson
//! mapping). Unlike fastDeploy's routes, a valid token that may not call a route gets
//! 403. Today: the token registry (list, revoke) and signing-key rotation.

use axum::{
    Json, Router,
    extract::{FromRequestParts, Path, Query, State},
    http::{StatusCode, request::Parts},
    routing::{delete, get, post},
};
use common::token::TokenType;
use proto::auth::v1::{
    ListTokensRequest, ListTokensResponse, RevokeTokensRequest, RevokeTokensResponse, RotateKeysRequest,
    RotateKeysResponse, TokenType as PbType,
};
use serde::Deserialize;

use crate::{
    error::ApiError,
    fastdeploy::auth::{verified, with_token},
    server::{AppState, method_not_allowed},
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/tokens", get(list_tokens).fallback(method_not_allowed))
        .route("/v1/tokens/{id}", delete(revoke_token).fallback(method_not_allowed))
        .route("/v1/keys/rotate", post(rotate_keys).fallback(method_not_allowed))
}

/// A verified user token; any other valid token is 403.
pub struct V1User {
    token: String,
}

impl FromRequestParts<AppState> for V1User {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let (token, claims) = verified(parts, state).await?;
        if claims.token_type != TokenType::User {
            return Err(ApiError::Detail(
                StatusCode::FORBIDDEN,
                "this route needs a user token".into(),
            ));
        }
        Ok(V1User { token })
    }
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
    user: V1User,
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
        ..Default::default()
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
    user: V1User,
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
async fn rotate_keys(State(state): State<AppState>, user: V1User) -> Result<Json<RotateKeysResponse>, ApiError> {
    let response = state
        .backends
        .auth()
        .rotate_keys(with_token(RotateKeysRequest {}, &user.token)?)
        .await
        .map_err(|s| ApiError::from_backend("auth", &s))?;
    Ok(Json(response.into_inner()))
}

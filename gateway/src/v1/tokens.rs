//! `/v1` for tokens and keys: list, mint (config and service tokens), attenuate, debug,
//! exchange a legacy token, revoke, and rotate the signing key.

use axum::extract::{Path, State};
use proto::auth::v1::{
    AttenuateTokenRequest, DebugTokenRequest, DebugTokenResponse, ExchangeLegacyTokenRequest, ListTokensRequest,
    ListTokensResponse, MintConfigTokenRequest, MintServiceTokenRequest, MintedToken, RevokeTokensRequest,
    RevokeTokensResponse, RotateKeysRequest, RotateKeysResponse, TokenType as PbType,
};
use serde::Deserialize;

use super::{Auth, Body, Params, Reply, bad_request, forward};
use crate::{error::ApiError, interceptor::Caller, server::AppState};

/// `ListTokensRequest` as query parameters.
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
        other => Err(bad_request(format!("unknown token type {other:?}"))),
    }
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Params(query): Params<ListQuery>,
) -> Reply<ListTokensResponse> {
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
    forward(&state, Some(&caller), request, async |mut c: Auth, r| {
        c.list_tokens(r).await
    })
    .await
}

pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Reply<RevokeTokensResponse> {
    let request = RevokeTokensRequest { ids: vec![id] };
    let revoked = forward(&state, Some(&caller), request, async |mut c: Auth, r| {
        c.revoke_tokens(r).await
    })
    .await?;
    // Refused here at once, even if the auth service stops before its feed says so.
    state.verifier.revoked_here(&revoked.revoked_ids);
    Ok(revoked)
}

/// Start signing with a new key; tokens of older keys stay valid until they expire.
pub async fn rotate_keys(State(state): State<AppState>, caller: Caller) -> Reply<RotateKeysResponse> {
    let request = RotateKeysRequest {};
    forward(&state, Some(&caller), request, async |mut c: Auth, r| {
        c.rotate_keys(r).await
    })
    .await
}

/// A config token, optionally limited to some services, with extra claims.
pub async fn mint_config(
    State(state): State<AppState>,
    caller: Caller,
    Body(request): Body<MintConfigTokenRequest>,
) -> Reply<MintedToken> {
    forward(&state, Some(&caller), request, async |mut c: Auth, r| {
        c.mint_config_token(r).await
    })
    .await
}

/// A service token for one existing service and an origin.
pub async fn mint_service(
    State(state): State<AppState>,
    caller: Caller,
    Body(request): Body<MintServiceTokenRequest>,
) -> Reply<MintedToken> {
    forward(&state, Some(&caller), request, async |mut c: Auth, r| {
        c.mint_service_token(r).await
    })
    .await
}

/// A narrower token derived from the presented one.
pub async fn attenuate(
    State(state): State<AppState>,
    holder: Caller,
    Body(request): Body<AttenuateTokenRequest>,
) -> Reply<MintedToken> {
    forward(&state, Some(&holder), request, async |mut c: Auth, r| {
        c.attenuate_token(r).await
    })
    .await
}

/// Decodes a token and says whether it is valid now; needs no token of its own.
pub async fn debug(State(state): State<AppState>, Body(request): Body<DebugTokenRequest>) -> Reply<DebugTokenResponse> {
    forward(&state, None, request, async |mut c: Auth, r| c.debug_token(r).await).await
}

/// Exchanges a fastDeploy HS256 user token for a short-lived Slipway token (when the
/// auth service accepts legacy tokens, until its cutoff); the legacy token is the
/// credential, as on the RPC.
pub async fn exchange_legacy(
    State(state): State<AppState>,
    Body(request): Body<ExchangeLegacyTokenRequest>,
) -> Reply<MintedToken> {
    forward(&state, None, request, async |mut c: Auth, r| {
        c.exchange_legacy_token(r).await
    })
    .await
}

//! Token verification for HTTP routes (the interceptor applies it before any handler
//! runs): a missing or non-Bearer header is 401 "Not authenticated"; a token that fails
//! verification is 401 "Could not validate credentials". Also: gRPC requests carrying
//! the caller's token and the request id to the backends.

use std::net::SocketAddr;

use axum::{
    extract::ConnectInfo,
    http::{Extensions, StatusCode, request::Parts},
};
use common::{
    identity::CLIENT_ADDRESS_HEADER,
    scope_table::Refusal,
    token::{Claims, TokenError, bearer_token},
};
use proto::auth::v1::LoginRequest;

use crate::{
    error::{ApiError, Retryable},
    server::AppState,
};

/// The bearer token of a request and its verified claims (of any type), or why it is
/// refused (`ApiError::refused` and `Status::from` answer it). A revocation set that
/// cannot be trusted right now is its own refusal (503, not 401), so clients do not
/// log out.
pub async fn verified(parts: &Parts, state: &AppState) -> Result<(String, Claims), Refusal> {
    let header = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let Some(token) = bearer_token(header) else {
        crate::metrics::count_refusal("missing");
        return Err(Refusal::MissingToken);
    };
    let mut token = token.to_owned();
    if let Some(legacy) = &state.legacy
        && crate::legacy::is_legacy(&token)
    {
        token = match legacy.exchange(&state.backends, &token).await {
            Ok(exchanged) => exchanged,
            Err(TokenError::RevocationsUnavailable) => return Err(Refusal::RevocationsUnavailable),
            Err(_) => {
                crate::metrics::count_refusal("legacy");
                return Err(Refusal::Invalid);
            }
        };
    }
    match state.verifier.verify(&token).await {
        Ok(claims) => Ok((token, claims)),
        Err(reason) => {
            crate::metrics::count_refusal(refusal_label(&reason));
            if reason == TokenError::RevocationsUnavailable {
                tracing::warn!("token refused: revocation feed stale");
            } else {
                tracing::info!(%reason, "token refused");
            }
            Err(Refusal::from(reason))
        }
    }
}

/// A gRPC request carrying the current request's id.
pub fn with_request_id<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(id) = crate::metrics::current_request_id()
        && let Ok(value) = tonic::metadata::AsciiMetadataValue::try_from(id.as_bytes())
    {
        request.metadata_mut().insert(common::request_id::KEY, value);
    }
    request
}

/// A bounded label for a refusal reason (the metrics must not grow with input).
fn refusal_label(reason: &TokenError) -> &'static str {
    match reason {
        TokenError::TooLong => "too long",
        TokenError::Malformed => "malformed",
        TokenError::Algorithm => "algorithm",
        TokenError::UnknownKey => "unknown key",
        TokenError::Signature => "signature",
        TokenError::Expired => "expired",
        TokenError::NotYetValid => "not yet valid",
        TokenError::Issuer => "issuer",
        TokenError::Audience => "audience",
        TokenError::WrongType(_) => "wrong type",
        TokenError::Revoked => "revoked",
        TokenError::RevocationsUnavailable => "revocations unavailable",
    }
}

/// A gRPC request carrying the caller's token (and the request id), for the backend
/// to verify again.
pub fn with_token<T>(message: T, token: &str) -> Result<tonic::Request<T>, ApiError> {
    let mut request = with_request_id(message);
    let value = format!("Bearer {token}")
        .parse()
        .map_err(|_| ApiError::invalid_credentials())?;
    request.metadata_mut().insert("authorization", value);
    Ok(request)
}

/// The address a request came from, as the connection says.
pub fn peer_address(extensions: &Extensions) -> Option<SocketAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr)
}

/// Names the client's address to the auth service (for its per-address login limits)
/// with the gateway's credential, without which the auth service ignores it.
pub fn name_client(metadata: &mut tonic::metadata::MetadataMap, state: &AppState, peer: Option<SocketAddr>) {
    metadata.remove(CLIENT_ADDRESS_HEADER);
    let (Some(peer), Some(credential)) = (peer, state.verifier.credential()) else {
        return;
    };
    if let Ok(value) = peer.ip().to_string().parse() {
        metadata.insert(CLIENT_ADDRESS_HEADER, value);
        credential.attach(metadata);
    }
}

/// A `Login` call for the auth service: the request id, and the client's address.
pub fn login_request(
    message: LoginRequest,
    state: &AppState,
    peer: Option<SocketAddr>,
) -> tonic::Request<LoginRequest> {
    let mut request = with_request_id(message);
    name_client(request.metadata_mut(), state, peer);
    request
}

/// What a refused login answers: fastDeploy's 401 for a wrong name or password; 429
/// (too many failed attempts) or 503 (too many logins at once) with `Retry-After`
/// when the auth service gave a retry hint; else as any auth service failure.
pub fn login_refused(status: &tonic::Status) -> Retryable {
    if status.code() == tonic::Code::Unauthenticated {
        return ApiError::Detail(StatusCode::UNAUTHORIZED, "Incorrect username or password".into()).into();
    }
    match common::error::retry_after(status) {
        Some(seconds) => Retryable {
            error: ApiError::Detail(
                common::error::ErrorCode::from_grpc(status.code()).http(),
                status.message().to_owned(),
            ),
            retry_after: Some(seconds),
        },
        None => ApiError::from_backend("auth", status).into(),
    }
}

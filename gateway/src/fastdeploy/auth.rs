//! Token checks for fastDeploy routes, done before any backend call: a missing or
//! non-Bearer header is 401 "Not authenticated"; any token that fails verification,
//! including a token of the wrong type, is 401 "Could not validate credentials".

use axum::{extract::FromRequestParts, http::request::Parts};
use common::token::{Claims, TokenType, bearer_token};

use crate::{error::ApiError, server::AppState};

async fn authenticate(parts: &Parts, state: &AppState, expected: TokenType) -> Result<(String, Claims), ApiError> {
    let header = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let token = bearer_token(header).ok_or_else(ApiError::not_authenticated)?;
    match state.verifier.verify_type(token, expected).await {
        Ok(claims) => Ok((token.to_owned(), claims)),
        Err(reason) => {
            tracing::info!(%reason, expected = %expected, "token refused");
            Err(ApiError::invalid_credentials())
        }
    }
}

/// A verified user token.
pub struct UserToken {
    pub token: String,
    pub claims: Claims,
}

impl FromRequestParts<AppState> for UserToken {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let (token, claims) = authenticate(parts, state, TokenType::User).await?;
        Ok(UserToken { token, claims })
    }
}

/// A gRPC request carrying the caller's token, for the backend to verify again.
pub fn with_token<T>(message: T, token: &str) -> Result<tonic::Request<T>, ApiError> {
    let mut request = tonic::Request::new(message);
    let value = format!("Bearer {token}")
        .parse()
        .map_err(|_| ApiError::invalid_credentials())?;
    request.metadata_mut().insert("authorization", value);
    Ok(request)
}

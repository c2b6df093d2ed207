//! `POST /token` (form login) and `GET /users/me` (contract 2.3, 2.4).

use axum::{
    Json,
    extract::{FromRequest, Multipart, Request, State},
    http::header,
};
use proto::auth::v1::{LoginRequest, WhoAmIRequest};
use serde_json::{Value, json};

use super::auth::{login_refused, login_request, peer_address, with_token};
use crate::{
    body_limit::{is_too_large, read_all, too_large},
    error::{ApiError, Retryable, missing},
    interceptor::Caller,
    server::AppState,
};

/// Form fields of a login request; fastDeploy accepts urlencoded and multipart forms.
/// Any other body reads as an empty form (so its fields are "missing", as in FastAPI).
pub(crate) async fn read_form(request: Request) -> Result<Vec<(String, String)>, ApiError> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if content_type.starts_with("multipart/form-data") {
        let mut multipart = Multipart::from_request(request, &())
            .await
            .map_err(|_| ApiError::Validation(vec![]))?;
        let mut fields = Vec::new();
        // A part that cannot be read ends the form (its fields are then missing),
        // except a body over the limit, which is 413.
        loop {
            let field = match multipart.next_field().await {
                Ok(Some(field)) => field,
                Ok(None) => break,
                Err(error) if is_too_large(&error) => return Err(too_large()),
                Err(_) => break,
            };
            let name = field.name().unwrap_or_default().to_owned();
            match field.text().await {
                Ok(value) => fields.push((name, value)),
                Err(error) if is_too_large(&error) => return Err(too_large()),
                Err(_) => {}
            }
        }
        return Ok(fields);
    }
    if content_type.starts_with("application/x-www-form-urlencoded") {
        let body = read_all(request.into_body()).await?;
        return Ok(serde_urlencoded::from_bytes(&body).unwrap_or_default());
    }
    Ok(Vec::new())
}

pub async fn login(State(state): State<AppState>, request: Request) -> Result<Json<Value>, Retryable> {
    let peer = peer_address(request.extensions());
    let form = read_form(request).await?;
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());

    let mut errors = Vec::new();
    if let Some(grant_type) = field("grant_type").filter(|g| g != "password") {
        errors.push(json!({
            "type": "string_pattern_mismatch",
            "loc": ["body", "grant_type"],
            "msg": "String should match pattern '^password$'",
            "input": grant_type,
            "ctx": { "pattern": "^password$" },
        }));
    }
    let username = field("username");
    let password = field("password");
    for (name, value) in [("username", &username), ("password", &password)] {
        if value.is_none() {
            errors.push(missing(&["body", name], Value::Null));
        }
    }
    let (Some(username), Some(password), true) = (username, password, errors.is_empty()) else {
        return Err(ApiError::Validation(errors).into());
    };

    let request = login_request(LoginRequest { username, password }, &state, peer);
    match state.backends.auth().login(request).await {
        Ok(response) => {
            let response = response.into_inner();
            Ok(Json(
                json!({ "access_token": response.access_token, "token_type": "bearer" }),
            ))
        }
        Err(status) => Err(login_refused(&status)),
    }
}

pub async fn me(State(state): State<AppState>, user: Caller) -> Result<Json<Value>, ApiError> {
    match state
        .backends
        .auth()
        .who_am_i(with_token(WhoAmIRequest {}, &user.token)?)
        .await
    {
        Ok(response) => {
            let me = response.into_inner();
            Ok(Json(json!({ "id": me.id, "name": me.name })))
        }
        Err(status) if status.code() == tonic::Code::Unauthenticated => Err(ApiError::invalid_credentials()),
        Err(status) => Err(ApiError::from_backend("auth", &status)),
    }
}

//! Slipway's own API under `/v1`, in proto3 canonical JSON (the proto crate's pbjson
//! mapping, nothing written by hand per message). Tokens are checked by the interceptor
//! against the route table; unlike fastDeploy's routes, a valid token that may not call
//! a route gets 403. Each route is the HTTP form of one RPC (`routes::ROUTES` names
//! it): most handlers only turn the path, query or body into the request and
//! [`forward`] it with the caller's token.

pub mod deployments;
pub mod logs;
pub mod services;
pub mod streams;
pub mod tokens;
pub mod users;

use axum::{
    Json,
    extract::{FromRequest, FromRequestParts, Query, Request, rejection::JsonRejection},
    http::{StatusCode, request::Parts},
};
use proto::{
    auth::v1::auth_service_client::AuthServiceClient, deploy::v1::deploy_service_client::DeployServiceClient,
    registry::v1::registry_service_client::RegistryServiceClient,
};
use serde::de::DeserializeOwned;
use tonic::transport::Channel;

use crate::{
    backends::Backends,
    error::ApiError,
    fastdeploy::auth::{with_request_id, with_token},
    interceptor::Caller,
    server::AppState,
};

pub type Auth = AuthServiceClient<Channel>;
pub type Registry = RegistryServiceClient<Channel>;
pub type Deploy = DeployServiceClient<Channel>;

/// A `/v1` answer: the response message as proto3 JSON, or the error.
pub type Reply<T> = Result<Json<T>, ApiError>;

/// A backend a `/v1` route calls: its client, and its name in error details.
pub trait Backend {
    const NAME: &'static str;
    fn client(backends: &Backends) -> Self;
}

impl Backend for Auth {
    const NAME: &'static str = "auth";
    fn client(backends: &Backends) -> Self {
        backends.auth()
    }
}

impl Backend for Registry {
    const NAME: &'static str = "registry";
    fn client(backends: &Backends) -> Self {
        backends.registry()
    }
}

impl Backend for Deploy {
    const NAME: &'static str = "deploy";
    fn client(backends: &Backends) -> Self {
        backends.deploy()
    }
}

/// One backend call for a route: `message` goes to the backend with the caller's token
/// (and the request id; no token for an open route), the answer comes back as JSON, and
/// a failure is `ApiError::from_backend` of the backend's name.
pub async fn forward<C: Backend, Req, Resp>(
    state: &AppState,
    caller: Option<&Caller>,
    message: Req,
    call: impl AsyncFnOnce(C, tonic::Request<Req>) -> Result<tonic::Response<Resp>, tonic::Status>,
) -> Reply<Resp> {
    let request = match caller {
        Some(caller) => with_token(message, &caller.token)?,
        None => with_request_id(message),
    };
    let response = call(C::client(&state.backends), request)
        .await
        .map_err(|status| backend_error::<C>(&status))?;
    Ok(Json(response.into_inner()))
}

/// The answer for a status `C` returned.
pub fn backend_error<C: Backend>(status: &tonic::Status) -> ApiError {
    ApiError::from_backend(C::NAME, status)
}

pub fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::Detail(StatusCode::BAD_REQUEST, message.into())
}

/// A JSON body in proto3 JSON; 400 saying what is wrong with it (413 past the body
/// limit).
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        body(Json::<T>::from_request(request, state).await).map(Body)
    }
}

/// A JSON body, or 400 saying what is wrong with it (413 past the body limit).
pub fn body<T>(json: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    json.map(|Json(t)| t).map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => crate::body_limit::too_large(),
        _ => bad_request(e.body_text()),
    })
}

/// Query parameters; 400 saying what is wrong with them.
#[derive(Debug)]
pub struct Params<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(t)| Params(t))
            .map_err(|e| bad_request(e.body_text()))
    }
}

//! fastDeploy's HTTP API, served exactly as its clients expect
//! (`reference/fastdeploy-contract.md`).

pub mod auth;
mod service_token;
mod users;

use axum::{
    Router,
    routing::{get, post},
};

pub use auth::UserToken;

use crate::server::{AppState, method_not_allowed};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/token", post(users::login).fallback(method_not_allowed))
        .route("/users/me", get(users::me).fallback(method_not_allowed))
        .route("/service-token", post(service_token::mint).fallback(method_not_allowed))
}

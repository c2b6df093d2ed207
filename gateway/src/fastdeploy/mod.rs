//! fastDeploy's HTTP API, served exactly as its clients expect
//! (`reference/fastdeploy-contract.md`).

pub mod auth;
mod deployments;
pub mod objects;
mod service_token;
mod services;
mod users;
pub mod websocket;

use axum::{
    Router,
    routing::{any, delete, get, post, put},
};

use crate::server::{AppState, method_not_allowed};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/token", post(users::login).fallback(method_not_allowed))
        .route("/users/me", get(users::me).fallback(method_not_allowed))
        .route("/service-token", post(service_token::mint).fallback(method_not_allowed))
        .route(
            "/deployments/",
            get(deployments::list)
                .post(deployments::start)
                .fallback(method_not_allowed),
        )
        .route(
            "/deployments/{deployment_id}",
            get(deployments::get).fallback(method_not_allowed),
        )
        .route(
            "/deployments/finish/",
            put(deployments::finish).fallback(method_not_allowed),
        )
        .route(
            "/steps/",
            get(deployments::list_steps)
                .post(deployments::report_step)
                .fallback(method_not_allowed),
        )
        .route(websocket::PATH, any(websocket::upgrade))
        .route("/services/", get(services::list).fallback(method_not_allowed))
        .route("/services/names/", get(services::names).fallback(method_not_allowed))
        .route("/services/sync", post(services::sync).fallback(method_not_allowed))
        .route(
            "/services/{service_id}",
            delete(services::delete).fallback(method_not_allowed),
        )
        .route(
            "/deployed-services/",
            get(services::deployed).fallback(method_not_allowed),
        )
}

//! fastDeploy's HTTP API, served exactly as its clients expect
//! (`reference/fastdeploy-contract.md`). Its routes are entries of `routes::ROUTES`.

pub mod auth;
pub mod deployments;
pub mod objects;
pub mod service_token;
pub mod services;
pub mod users;
pub mod websocket;

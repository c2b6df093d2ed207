//! The gateway: the edge of Slipway. HTTP/JSON (fastDeploy's API) in, gRPC out, with
//! tokens checked before any backend is called.

pub mod backends;
pub mod body_limit;
pub mod config;
pub mod connections;
pub mod console;
pub mod error;
pub mod fastdeploy;
pub mod grpc_proxy;
pub mod interceptor;
pub mod legacy;
pub mod metrics;
pub mod openapi;
#[cfg(test)]
mod parser_props;
pub mod routes;
pub mod server;
pub mod services_cache;
pub mod v1;

pub use config::Config;
pub use server::run;

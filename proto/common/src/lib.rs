//! Code every Slipway service shares, written once: token claims and verification,
//! the scope table and the backends' authorization layer,
//! the error-code mapping, telemetry, shutdown, listener and storage helpers.

pub mod authz;
pub mod balance;
pub mod coalesce;
pub mod config;
pub mod db;
pub mod error;
pub mod feed;
#[cfg(feature = "fuzz")]
pub mod fuzz;
pub mod guard;
pub mod identity;
pub mod paging;
#[cfg(test)]
mod parser_props;
pub mod request_id;
pub mod scope;
pub mod scope_table;
pub mod server;
pub mod shutdown;
pub mod telemetry;
pub mod token;

/// The `iss` and default `aud` of every Slipway token.
pub const ISSUER: &str = "slipway";
pub const AUDIENCE: &str = "slipway";

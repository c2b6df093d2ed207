//! The registry service: services synced from a services directory, and
//! deployed-service configs for service discovery.

pub mod api;
pub mod catalog;
pub mod config;
pub mod convert;
pub mod error;
pub mod events;
pub mod retention;
pub mod server;
pub mod storage;
pub mod sync;

pub use config::Config;
pub use server::run;

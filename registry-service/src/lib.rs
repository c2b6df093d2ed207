//! The registry service: services synced from a services directory, and
//! deployed-service configs for service discovery.

pub mod config;
pub mod server;
pub mod storage;

pub use config::Config;
pub use server::run;

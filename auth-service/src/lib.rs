//! The auth service: users and passwords, the only token signer, and (as the token
//! issue lands) the token registry and revocation feed.

pub mod accounts;
pub mod api;
pub mod config;
pub mod follow;
pub mod hash_threads;
pub mod kek;
pub mod keys;
pub mod legacy;
pub mod login_limits;
pub mod paging;
pub mod passwords;
pub mod policy;
pub mod registry;
pub mod retention;
pub mod revoked;
pub mod server;
pub mod storage;
pub mod stream_caps;
pub mod tokens;
pub mod user_cache;

pub use config::Config;
pub use server::run;

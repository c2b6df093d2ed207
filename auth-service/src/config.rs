//! Auth service configuration: flags, then `SLIPWAY_*` environment variables, then defaults.

use std::{net::SocketAddr, path::PathBuf};

use secrecy::SecretString;

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "auth-service",
    version,
    about = "Slipway auth service: users, token signing, token registry"
)]
pub struct Config {
    /// Address to serve gRPC on (port 0 picks a free port).
    #[arg(long, env = "SLIPWAY_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub storage: common::config::StorageArgs,
    /// Write the bound address to this file once listening.
    #[arg(long, env = "SLIPWAY_ADDR_FILE")]
    pub addr_file: Option<PathBuf>,
    /// Where the signing keys live (default: `auth-keys` in the data dir). Point
    /// several auth replicas at one shared, private directory so they sign alike.
    #[arg(long, env = "SLIPWAY_KEYS_DIR")]
    pub keys_dir: Option<PathBuf>,
    /// Lifetime of user tokens, in minutes.
    #[arg(long, env = "SLIPWAY_USER_TOKEN_MINUTES", default_value_t = 30)]
    pub user_token_minutes: u32,
    /// Make sure this user exists at start (with `--admin-password`).
    #[arg(long, env = "SLIPWAY_ADMIN_USER", requires = "admin_password")]
    pub admin_user: Option<String>,
    /// Password for `--admin-user` when it has to be created.
    #[arg(long, env = "SLIPWAY_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<SecretString>,
    /// The registry service, asked whether a service exists before a token is minted for it.
    #[arg(long, env = "SLIPWAY_REGISTRY_URL", default_value = "http://127.0.0.1:50052")]
    pub registry_url: String,
    #[command(flatten)]
    pub trust: common::config::TrustArgs,
    /// Migration from fastDeploy: a file holding its `SECRET_KEY`. With
    /// `--legacy-until`, fastDeploy's HS256 tokens are exchanged for Slipway tokens
    /// until that date (RFC 3339). Off unless both are given.
    #[arg(long, env = "SLIPWAY_LEGACY_SECRET_FILE", requires = "legacy_until")]
    pub legacy_secret_file: Option<PathBuf>,
    /// The cutoff after which legacy tokens are refused, e.g. 2027-03-01T00:00:00Z.
    #[arg(long, env = "SLIPWAY_LEGACY_UNTIL", requires = "legacy_secret_file")]
    pub legacy_until: Option<chrono::DateTime<chrono::Utc>>,
}

impl Config {
    pub fn database_url(&self) -> String {
        self.storage.database_url("auth.db")
    }

    pub fn keys_dir(&self) -> PathBuf {
        self.keys_dir
            .clone()
            .unwrap_or_else(|| self.storage.data_dir.join("auth-keys"))
    }
}

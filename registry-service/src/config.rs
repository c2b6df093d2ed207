//! Registry service configuration: flags, then `SLIPWAY_*` environment variables, then defaults.

use std::{net::SocketAddr, path::PathBuf};

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "registry-service",
    version,
    about = "Slipway registry service: services and deployed-service configs"
)]
pub struct Config {
    /// Address to serve gRPC on (port 0 picks a free port).
    #[arg(long, env = "SLIPWAY_LISTEN", default_value = "127.0.0.1:50052")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub storage: common::config::StorageArgs,
    /// Write the bound address to this file once listening.
    #[arg(long, env = "SLIPWAY_ADDR_FILE")]
    pub addr_file: Option<PathBuf>,
    /// The services directory (a folder per service with a `config.json`).
    #[arg(long, env = "SLIPWAY_SERVICES_DIR", default_value = "services")]
    pub services_dir: PathBuf,
    /// Base of `ansible_playbook` paths in `config.json` (default: the services
    /// directory's parent).
    #[arg(long, env = "SLIPWAY_PROJECT_ROOT")]
    pub project_root: Option<PathBuf>,
    #[command(flatten)]
    pub auth: common::config::AuthArgs,
    #[command(flatten)]
    pub trust: common::config::TrustArgs,
    /// The gateway's credential: it follows `WatchServices` and lists services for its
    /// cache and WebSocket hub on nobody's behalf.
    #[command(flatten)]
    pub gateway: common::config::GatewayTrustArgs,
    #[command(flatten)]
    pub credential: common::config::CredentialArgs,
}

impl Config {
    pub fn database_url(&self) -> String {
        self.storage.database_url("registry.db")
    }
}

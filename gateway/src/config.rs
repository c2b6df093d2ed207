//! Gateway configuration: flags, then `SLIPWAY_*` environment variables, then defaults.

use std::{net::SocketAddr, path::PathBuf};

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "gateway",
    version,
    about = "Slipway gateway: HTTP/JSON, grpc-web and WebSocket edge"
)]
pub struct Config {
    /// Address to serve HTTP on (port 0 picks a free port).
    #[arg(long, env = "SLIPWAY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Write the bound address to this file once listening.
    #[arg(long, env = "SLIPWAY_ADDR_FILE")]
    pub addr_file: Option<PathBuf>,
    /// gRPC URL of the auth service (several replicas: URLs separated by commas).
    #[arg(long, env = "SLIPWAY_AUTH_URL", default_value = "http://127.0.0.1:50051")]
    pub auth_url: String,
    /// gRPC URL of the registry service (several replicas: URLs separated by commas).
    #[arg(long, env = "SLIPWAY_REGISTRY_URL", default_value = "http://127.0.0.1:50052")]
    pub registry_url: String,
    /// gRPC URL of the deploy service (several replicas: URLs separated by commas).
    #[arg(long, env = "SLIPWAY_DEPLOY_URL", default_value = "http://127.0.0.1:50053")]
    pub deploy_url: String,
    /// Deadline of every backend call, in milliseconds.
    #[arg(long, env = "SLIPWAY_BACKEND_TIMEOUT_MS", default_value_t = 10_000)]
    pub backend_timeout_ms: u64,
    /// How long tokens are still accepted after the revocation feed was last heard
    /// from; after that every token is refused until the feed is back (fail closed).
    #[arg(long, env = "SLIPWAY_REVOCATION_MAX_STALE_SECS", default_value_t = 30)]
    pub revocation_max_stale_secs: u64,
    #[command(flatten)]
    pub credential: common::config::CredentialArgs,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "SLIPWAY_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// How long a new connection may take to send its first request's opening bytes,
    /// and an HTTP/1 request its headers (also how long a keep-alive connection may
    /// sit idle between requests), in milliseconds.
    #[arg(long, env = "SLIPWAY_HEADER_READ_TIMEOUT_MS", default_value_t = 30_000)]
    pub header_read_timeout_ms: u64,
    /// A connection whose client has read nothing for this long while the gateway had
    /// something to send (a watcher that stopped reading) is closed, in milliseconds.
    #[arg(long, env = "SLIPWAY_STALLED_WRITE_TIMEOUT_MS", default_value_t = 30_000)]
    pub stalled_write_timeout_ms: u64,
    /// Migration from fastDeploy: trade HS256 bearer tokens for Slipway tokens at the
    /// auth service (which must have `--legacy-secret-file`/`--legacy-until`).
    #[arg(long, env = "SLIPWAY_LEGACY_TOKENS")]
    pub legacy_tokens: bool,
    /// Browser origins allowed to call the gateway (CORS, for the fastDeploy frontend and
    /// grpc-web), comma-separated, e.g. `https://deploy.example.com`. Loopback origins
    /// (`http://localhost`, `http://127.0.0.1`, `http://[::1]`, any port) always are.
    #[arg(long, env = "SLIPWAY_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
}

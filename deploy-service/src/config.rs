//! Deploy service configuration: flags, then `SLIPWAY_*` environment variables, then defaults.

use std::{net::SocketAddr, path::PathBuf};

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "deploy-service",
    version,
    about = "Slipway deploy service: deployments, steps, runner, events"
)]
pub struct Config {
    /// Address to serve gRPC on (port 0 picks a free port).
    #[arg(long, env = "SLIPWAY_LISTEN", default_value = "127.0.0.1:50053")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub storage: common::config::StorageArgs,
    /// Write the bound address to this file once listening.
    #[arg(long, env = "SLIPWAY_ADDR_FILE")]
    pub addr_file: Option<PathBuf>,
    /// The services directory (a folder per service with a `config.json`).
    #[arg(long, env = "SLIPWAY_SERVICES_DIR", default_value = "services")]
    pub services_dir: PathBuf,
    #[command(flatten)]
    pub auth: common::config::AuthArgs,
    /// The registry service, for service configs and deployed services (several
    /// replicas: URLs separated by commas).
    #[arg(long, env = "SLIPWAY_REGISTRY_URL", default_value = "http://127.0.0.1:50052")]
    pub registry_url: String,
    /// This service's own credential (see `slipway up`); the auth and registry services
    /// trust calls that present it.
    #[arg(long, env = "SLIPWAY_CREDENTIAL_FILE")]
    pub credential_file: Option<PathBuf>,
    /// The gateway's credential: it follows `WatchEvents` for its WebSocket hub on
    /// nobody's behalf.
    #[command(flatten)]
    pub gateway: common::config::GatewayTrustArgs,
    /// The gateway's URL as deploy scripts reach it (`steps_url`, `deployment_finish_url`).
    #[arg(long, env = "SLIPWAY_PUBLIC_URL", default_value = "http://127.0.0.1:8080")]
    pub public_url: String,
    /// Working directory of deploy scripts (fastDeploy's project root); default: the
    /// services directory's parent.
    #[arg(long, env = "SLIPWAY_PROJECT_ROOT")]
    pub project_root: Option<PathBuf>,
    /// Most deployments running at once, over all services.
    #[arg(long, env = "SLIPWAY_MAX_RUNNING", default_value_t = 4)]
    pub max_running: u32,
    /// Most deployments of one service running at once.
    #[arg(long, env = "SLIPWAY_MAX_RUNNING_PER_SERVICE", default_value_t = 1)]
    pub max_running_per_service: u32,
    /// This replica's name in the runs it claims, when several deploy services share
    /// one PostgreSQL database; default: one kept in the data dir
    /// (`deploy-replica-id`), so a restart on the same data dir finds its runs again.
    #[arg(long, env = "SLIPWAY_REPLICA_ID")]
    pub replica_id: Option<String>,
    /// Deploy script time limit when a service's config.json sets none (seconds).
    #[arg(long, env = "SLIPWAY_DEPLOY_TIMEOUT_SECS", default_value_t = 3600)]
    pub deploy_timeout_secs: u64,
    /// `PATH` of deploy scripts (also `path_for_deploy` in their config file).
    #[arg(
        long,
        env = "SLIPWAY_DEPLOY_PATH",
        default_value = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    )]
    pub deploy_path: String,
    /// Keep deploy scripts out of the data dir and the credential file with Landlock,
    /// where the kernel has it (else they run unrestricted, with a warning). Scripts
    /// then run with no_new_privs: `sudo` in them stops working.
    #[arg(long, env = "SLIPWAY_LANDLOCK")]
    pub landlock: bool,
    /// Each run's log keeps the last this many lines of the script's output (older
    /// ones are dropped, and a marker line says how many).
    #[arg(long, env = "SLIPWAY_LOG_MAX_LINES", default_value_t = 10_000)]
    pub log_max_lines: usize,
    /// … and at most this many bytes of it.
    #[arg(long, env = "SLIPWAY_LOG_MAX_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub log_max_bytes: usize,
    /// A longer output line is kept cut to this many bytes, with a note.
    #[arg(long, env = "SLIPWAY_LOG_MAX_LINE_BYTES", default_value_t = 16 * 1024)]
    pub log_max_line_bytes: usize,
    /// The private directory of the config files handed to deploy scripts (default:
    /// `deploy-runs` in the data dir). Each replica on one host needs its own: at start
    /// a replica stops the script groups left in it.
    #[arg(long, env = "SLIPWAY_RUNS_DIR")]
    pub runs_dir: Option<PathBuf>,
    /// Retention: finished deployments (steps, events, output) are kept this many days
    /// (0: for ever) …
    #[arg(long, env = "SLIPWAY_RETENTION_DAYS", default_value_t = 90)]
    pub retention_days: u32,
    /// … and at least the newest this many of each service (and always each service's
    /// last successful one, whose steps plan the next run).
    #[arg(long, env = "SLIPWAY_RETENTION_KEEP_PER_SERVICE", default_value_t = 50)]
    pub retention_keep_per_service: u32,
    /// How often retention prunes (seconds).
    #[arg(long, env = "SLIPWAY_RETENTION_INTERVAL_SECS", default_value_t = 3600)]
    pub retention_interval_secs: u64,
    /// Deployments pruned per transaction.
    #[arg(long, env = "SLIPWAY_RETENTION_BATCH", default_value_t = 50)]
    pub retention_batch: u32,
}

impl Config {
    pub fn retention(&self) -> crate::retention::RetentionPolicy {
        crate::retention::RetentionPolicy {
            keep_days: self.retention_days,
            keep_per_service: self.retention_keep_per_service,
            batch: self.retention_batch.max(1),
            interval: std::time::Duration::from_secs(self.retention_interval_secs.max(1)),
        }
    }

    /// How much of each run's output is kept.
    pub fn log_limits(&self) -> crate::logs::LogLimits {
        crate::logs::LogLimits {
            max_lines: self.log_max_lines,
            max_bytes: self.log_max_bytes,
            max_line_bytes: self.log_max_line_bytes,
        }
        .sane()
    }

    pub fn database_url(&self) -> String {
        self.storage.database_url("deploy.db")
    }

    /// Scripts' working directory: `--project-root`, or the services directory's parent.
    pub fn project_root(&self) -> PathBuf {
        let services = std::path::absolute(&self.services_dir).unwrap_or_else(|_| self.services_dir.clone());
        match &self.project_root {
            Some(root) => std::path::absolute(root).unwrap_or_else(|_| root.clone()),
            None => services.parent().map(PathBuf::from).unwrap_or(services),
        }
    }

    /// What deploy scripts may not touch (with `--landlock`): the data dir, where the
    /// databases, other runs' config files and, under `slipway up`, every service's
    /// secrets are, the deploy service's credential and the gateway's.
    pub fn denied_to_scripts(&self) -> Vec<PathBuf> {
        if !self.landlock {
            return Vec::new();
        }
        let data = std::path::absolute(&self.storage.data_dir).unwrap_or_else(|_| self.storage.data_dir.clone());
        [
            Some(data),
            self.credential_file.clone(),
            self.gateway.gateway_credential_file.clone(),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// The private directory of the config files handed to deploy scripts.
    pub fn runs_dir(&self) -> PathBuf {
        if let Some(dir) = &self.runs_dir {
            return std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
        }
        let data = std::path::absolute(&self.storage.data_dir).unwrap_or_else(|_| self.storage.data_dir.clone());
        data.join("deploy-runs")
    }
}

//! Settings every backend service shares, flattened into each service's own config.

use std::path::PathBuf;

/// Where a service keeps its data: SQLite in the data dir by default, or a database URL.
#[derive(Debug, Clone, clap::Args)]
pub struct StorageArgs {
    /// Directory for the service's SQLite file and private files.
    #[arg(long, env = "SLIPWAY_DATA_DIR", default_value = "slipway-data")]
    pub data_dir: PathBuf,
    /// Database URL (`sqlite://…` or `postgres://…`); default: a SQLite file in the data dir.
    #[arg(long, env = "SLIPWAY_DATABASE_URL")]
    pub database_url: Option<String>,
}

impl StorageArgs {
    /// The configured URL, or the SQLite file `file` in the data dir.
    pub fn database_url(&self, file: &str) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| crate::db::sqlite_url(&self.data_dir, file))
    }

    /// Makes the data dir private to this user (mode 0700) at start: created when the
    /// service keeps its SQLite file there, narrowed whenever it exists.
    pub fn prepare_data_dir(&self) -> std::io::Result<()> {
        if self.database_url.is_none() || self.data_dir.exists() {
            crate::db::private_dir(&self.data_dir)?;
        }
        Ok(())
    }
}

/// How a backend service reaches the auth service to verify tokens itself.
#[derive(Debug, Clone, clap::Args)]
pub struct AuthArgs {
    /// The auth service (gRPC), for its public keys and revocation feed (several
    /// replicas: URLs separated by commas).
    #[arg(long, env = "SLIPWAY_AUTH_URL", default_value = "http://127.0.0.1:50051")]
    pub auth_url: String,
    /// Refuse every token once the revocation feed has been silent this long (seconds).
    #[arg(long, env = "SLIPWAY_REVOCATION_MAX_STALE_SECS", default_value_t = 30)]
    pub revocation_max_stale_secs: u64,
}

impl AuthArgs {
    pub fn max_stale(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.revocation_max_stale_secs)
    }
}

/// The deploy service's credential, for services that accept its calls.
#[derive(Debug, Clone, clap::Args)]
pub struct TrustArgs {
    /// File holding the deploy service's credential; calls presenting it may do what
    /// only the deploy service may (mint deployment tokens, publish deployed services).
    #[arg(long, env = "SLIPWAY_DEPLOY_CREDENTIAL_FILE")]
    pub deploy_credential_file: Option<PathBuf>,
}

impl TrustArgs {
    pub fn trusted(&self) -> Result<Vec<crate::identity::TrustedCaller>, crate::identity::IdentityError> {
        self.deploy_credential_file
            .iter()
            .map(|path| crate::identity::TrustedCaller::load(crate::identity::DEPLOY_SERVICE, path))
            .collect()
    }
}

/// The gateway's credential, for services that accept its calls: the auth service
/// (revocation feed, client addresses), the registry and the deploy service (the
/// read-only streams and lists behind the gateway's services cache and WebSocket hub).
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayTrustArgs {
    /// File holding the gateway's credential; calls presenting it may do what the scope
    /// table lets the gateway do on nobody's behalf.
    #[arg(long, env = "SLIPWAY_GATEWAY_CREDENTIAL_FILE")]
    pub gateway_credential_file: Option<PathBuf>,
}

impl GatewayTrustArgs {
    pub fn trusted(&self) -> Result<Option<crate::identity::TrustedCaller>, crate::identity::IdentityError> {
        self.gateway_credential_file
            .as_deref()
            .map(|path| crate::identity::TrustedCaller::load(crate::identity::GATEWAY, path))
            .transpose()
    }
}

/// A service's own credential, presented to the auth service when following its
/// revocation feed (see `identity`).
#[derive(Debug, Clone, clap::Args)]
pub struct CredentialArgs {
    /// File holding this service's credential (see `slipway up`); the auth service
    /// serves its revocation feed to callers that present it.
    #[arg(long, env = "SLIPWAY_CREDENTIAL_FILE")]
    pub credential_file: Option<PathBuf>,
}

impl CredentialArgs {
    /// The credential of `caller`, or `None` (with a warning: the auth service will
    /// refuse the revocation feed, so every token is refused) when no file is given.
    pub fn load(&self, caller: &str) -> Result<Option<crate::identity::Credential>, crate::identity::IdentityError> {
        match &self.credential_file {
            Some(path) => crate::identity::Credential::load(caller, path).map(Some),
            None => {
                tracing::warn!(
                    caller,
                    "no --credential-file: the auth service will not serve this service its revocation feed, \
                     so every token will be refused"
                );
                Ok(None)
            }
        }
    }
}

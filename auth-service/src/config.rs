//! Auth service configuration: flags, then `SLIPWAY_*` environment variables, then defaults.

use std::{net::SocketAddr, path::PathBuf};

use common::identity::{IdentityError, REGISTRY_SERVICE, TrustedCaller};
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
    /// The key-encryption key: a file holding 32 random bytes in base64 (`head -c 32
    /// /dev/urandom | base64`), e.g. a Kubernetes secret. It seals the private signing
    /// keys stored in the database; every replica needs the same one. Required.
    #[arg(long, env = "SLIPWAY_KEK_FILE")]
    pub key_encryption_key_file: Option<PathBuf>,
    /// Where signing keys lived before they moved to the database (default:
    /// `auth-keys` in the data dir): on the first start with no key in the database,
    /// the key files found here are imported, so the tokens they signed stay valid.
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
    /// The registry service, asked whether a service exists before a token is minted for it
    /// (several replicas: URLs separated by commas).
    #[arg(long, env = "SLIPWAY_REGISTRY_URL", default_value = "http://127.0.0.1:50052")]
    pub registry_url: String,
    #[command(flatten)]
    pub trust: common::config::TrustArgs,
    /// File holding the registry's credential; the registry presents it to follow the
    /// revocation feed.
    #[arg(long, env = "SLIPWAY_REGISTRY_CREDENTIAL_FILE")]
    pub registry_credential_file: Option<PathBuf>,
    /// The gateway's credential; the gateway presents it to follow the revocation feed
    /// and to name the address a login came from.
    #[command(flatten)]
    pub gateway: common::config::GatewayTrustArgs,
    /// Most revocation feeds (WatchRevocations) open at once, over all callers.
    #[arg(long, env = "SLIPWAY_MAX_REVOCATION_STREAMS", default_value_t = 256)]
    pub max_revocation_streams: usize,
    /// Most revocation feeds open at once per token subject (a user, whatever token
    /// of theirs is presented).
    #[arg(long, env = "SLIPWAY_MAX_REVOCATION_STREAMS_PER_TOKEN", default_value_t = 8)]
    pub max_revocation_streams_per_token: usize,
    /// Most revocation feeds open at once per internal service (the gateway, the
    /// registry, the deploy service: one per replica, plus reconnections).
    #[arg(long, env = "SLIPWAY_MAX_REVOCATION_STREAMS_PER_SERVICE", default_value_t = 64)]
    pub max_revocation_streams_per_service: usize,
    /// Password hashes computed at once (logins, password changes, new users);
    /// default: half the machine's cores, at least one.
    #[arg(long, env = "SLIPWAY_LOGIN_HASH_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    pub login_hash_threads: Option<u16>,
    /// Logins waiting for a hashing slot; more at once are refused UNAVAILABLE (the
    /// gateway answers 503 with `Retry-After`).
    #[arg(long, env = "SLIPWAY_LOGIN_QUEUE", default_value_t = 32)]
    pub login_queue: usize,
    /// Failed logins for one user name before its logins are barred for a while
    /// (`RESOURCE_EXHAUSTED`, 429 with `Retry-After` at the gateway).
    #[arg(long, env = "SLIPWAY_LOGIN_USER_FAILURES", default_value_t = 5)]
    pub login_user_failures: u32,
    /// Failed logins from one client address before its logins are barred for a while.
    #[arg(long, env = "SLIPWAY_LOGIN_ADDRESS_FAILURES", default_value_t = 20)]
    pub login_address_failures: u32,
    /// Failed logins are forgotten this many seconds after the last one.
    #[arg(long, env = "SLIPWAY_LOGIN_FAILURE_WINDOW_SECS", default_value_t = 900)]
    pub login_failure_window_secs: u64,
    /// The first bar, in seconds, once a limit is reached; it doubles with each
    /// further failure, up to `--login-backoff-max-secs`.
    #[arg(long, env = "SLIPWAY_LOGIN_BACKOFF_SECS", default_value_t = 1)]
    pub login_backoff_secs: u64,
    /// The longest bar, in seconds.
    #[arg(long, env = "SLIPWAY_LOGIN_BACKOFF_MAX_SECS", default_value_t = 300)]
    pub login_backoff_max_secs: u64,
    /// Migration from fastDeploy: a file holding its `SECRET_KEY`. With
    /// `--legacy-until`, fastDeploy's HS256 tokens are exchanged for Slipway tokens
    /// until that date (RFC 3339). Off unless both are given.
    #[arg(long, env = "SLIPWAY_LEGACY_SECRET_FILE", requires = "legacy_until")]
    pub legacy_secret_file: Option<PathBuf>,
    /// The cutoff after which legacy tokens are refused, e.g. 2027-03-01T00:00:00Z.
    #[arg(long, env = "SLIPWAY_LEGACY_UNTIL", requires = "legacy_secret_file")]
    pub legacy_until: Option<chrono::DateTime<chrono::Utc>>,
    /// Retention: token records are removed this many days after they expire (0:
    /// kept for ever); revocations go once their token has expired.
    #[arg(long, env = "SLIPWAY_TOKEN_RETENTION_DAYS", default_value_t = 30)]
    pub token_retention_days: u32,
    /// How often token retention runs (seconds).
    #[arg(long, env = "SLIPWAY_RETENTION_INTERVAL_SECS", default_value_t = 3600)]
    pub retention_interval_secs: u64,
}

impl Config {
    pub fn token_retention(&self) -> crate::retention::TokenRetention {
        crate::retention::TokenRetention {
            keep_days: self.token_retention_days,
            interval: std::time::Duration::from_secs(self.retention_interval_secs.max(1)),
        }
    }

    pub fn database_url(&self) -> String {
        self.storage.database_url("auth.db")
    }

    /// Every internal service whose credential file is given: the deploy service,
    /// the registry and the gateway.
    pub fn trusted(&self) -> Result<Vec<TrustedCaller>, IdentityError> {
        let mut trusted = self.trust.trusted()?;
        if let Some(path) = &self.registry_credential_file {
            trusted.push(TrustedCaller::load(REGISTRY_SERVICE, path)?);
        }
        trusted.extend(self.gateway.trusted()?);
        Ok(trusted)
    }

    pub fn stream_limits(&self) -> crate::stream_caps::Limits {
        crate::stream_caps::Limits {
            per_token_subject: self.max_revocation_streams_per_token,
            per_service: self.max_revocation_streams_per_service,
            total: self.max_revocation_streams,
        }
    }

    /// Hashing slots: `--login-hash-threads`, else half the cores (at least one).
    pub fn hash_threads(&self) -> usize {
        self.login_hash_threads
            .map_or_else(crate::passwords::default_slots, usize::from)
    }

    pub fn login_limits(&self) -> crate::login_limits::Limits {
        use std::time::Duration;
        crate::login_limits::Limits {
            user_failures: self.login_user_failures,
            address_failures: self.login_address_failures,
            window: Duration::from_secs(self.login_failure_window_secs),
            backoff: Duration::from_secs(self.login_backoff_secs),
            backoff_max: Duration::from_secs(self.login_backoff_max_secs.max(self.login_backoff_secs)),
            ..Default::default()
        }
    }

    /// The key-encryption key, which must be given.
    pub fn kek(&self) -> anyhow::Result<crate::kek::Kek> {
        let Some(path) = &self.key_encryption_key_file else {
            anyhow::bail!(
                "no key-encryption key: give --key-encryption-key-file or SLIPWAY_KEK_FILE (a file holding 32 random \
                 bytes in base64; `slipway up` makes one)"
            );
        };
        Ok(crate::kek::Kek::load(path)?)
    }

    pub fn keys_dir(&self) -> PathBuf {
        self.keys_dir
            .clone()
            .unwrap_or_else(|| self.storage.data_dir.join("auth-keys"))
    }
}

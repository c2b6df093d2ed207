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
}

//! `slipway users create NAME`: like fastDeploy's `createuser`, straight on the auth
//! service's database (whoever can read the data dir is an administrator anyway).

use std::{io::BufRead, path::PathBuf};

use anyhow::{Context, bail};
use auth_service::{accounts::Accounts, passwords::Hasher, storage::Store};
use secrecy::SecretString;

#[derive(Debug, clap::Subcommand)]
pub enum UsersCommand {
    /// Create a user; the password comes from SLIPWAY_PASSWORD or the first line of stdin.
    Create {
        name: String,
        /// The data directory of `slipway up`.
        #[arg(long, env = "SLIPWAY_DATA_DIR", default_value = "slipway-data")]
        data_dir: PathBuf,
        /// The auth service's database URL, instead of the data dir's SQLite file.
        #[arg(long)]
        database_url: Option<String>,
    },
}

pub async fn run(command: UsersCommand) -> anyhow::Result<()> {
    match command {
        UsersCommand::Create {
            name,
            data_dir,
            database_url,
        } => {
            let password = read_password()?;
            let url = database_url.unwrap_or_else(|| common::db::sqlite_url(&data_dir, "auth.db"));
            if url.starts_with("sqlite:") {
                common::db::private_dir(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
            }
            let store = Store::open(&url)
                .await
                .with_context(|| format!("opening {}", common::db::redacted(&url)))?;
            let accounts = Accounts::new(store, Hasher::new(1).await?);
            let user = accounts.create(&name, &password).await?;
            println!("user {} created (id {})", user.name, user.id);
            Ok(())
        }
    }
}

fn read_password() -> anyhow::Result<SecretString> {
    if let Ok(password) = std::env::var("SLIPWAY_PASSWORD") {
        return Ok(SecretString::from(password));
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    if password.is_empty() {
        bail!("no password: set SLIPWAY_PASSWORD or pipe it on stdin");
    }
    Ok(SecretString::from(password))
}

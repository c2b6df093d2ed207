//! `slipway users create NAME`: like fastDeploy's `createuser`, straight on the auth
//! service's database (whoever can read the data dir is an administrator anyway).
//! `slipway users disable|enable|delete NAME`: through the gateway, with a user token
//! that may `users:write`; `slipway users list` with one that may `users:read`.

use std::{io::BufRead, path::PathBuf};

use anyhow::{Context, bail};
use auth_service::{accounts::Accounts, passwords::Hasher, storage::Store};
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::client::{Client, GatewayArgs, print_json};

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
    /// List every user: name, created, disabled (needs a user token that may `users:read`).
    List {
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Disable a user (not yourself): logins are refused at once and every token the
    /// user holds or minted is revoked. The account is kept.
    Disable {
        name: String,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Let a disabled user log in again (revoked tokens stay revoked).
    Enable {
        name: String,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Delete a user (not yourself) and revoke every token the user holds or minted.
    Delete {
        name: String,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
}

/// A user name as one path segment.
fn user_path(name: &str, action: &str) -> String {
    let mut encoded = String::new();
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    format!("/v1/users/{encoded}{action}")
}

fn revoked(answer: &Value) -> u64 {
    // proto3 JSON leaves a zero count out.
    answer["revokedTokens"].as_u64().unwrap_or(0)
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
        UsersCommand::List { gateway } => {
            // Every page, so the list is whole however many users there are.
            let client = Client::new(&gateway)?;
            let mut users = Vec::new();
            let mut page_token = String::new();
            loop {
                let path = if page_token.is_empty() {
                    "/v1/users".to_owned()
                } else {
                    format!("/v1/users?page_token={page_token}")
                };
                let page = client.get(&path).await?;
                users.extend(page["users"].as_array().cloned().unwrap_or_default());
                match page["nextPageToken"].as_str() {
                    // Page tokens are URL-safe base64: no encoding needed.
                    Some(next) if !next.is_empty() && next != page_token => page_token = next.to_owned(),
                    _ => break,
                }
            }
            if gateway.json {
                return print_json(&json!({ "users": users }));
            }
            println!("{:<24} {:<22} DISABLED", "NAME", "CREATED");
            for user in &users {
                let text = |key: &str| user[key].as_str().unwrap_or_default().to_owned();
                let disabled = match (text("disabledAt"), text("disabledBy")) {
                    (at, _) if at.is_empty() => "-".to_owned(),
                    (at, by) => format!("{at} by {by}"),
                };
                println!("{:<24} {:<22} {disabled}", text("name"), text("createdAt"));
            }
            Ok(())
        }
        UsersCommand::Disable { name, gateway } => {
            let answer = Client::new(&gateway)?
                .post(&user_path(&name, "/disable"), &json!({}))
                .await?;
            if gateway.json {
                return print_json(&answer);
            }
            println!("user {name} disabled; {} tokens revoked", revoked(&answer));
            Ok(())
        }
        UsersCommand::Enable { name, gateway } => {
            let answer = Client::new(&gateway)?
                .post(&user_path(&name, "/enable"), &json!({}))
                .await?;
            if gateway.json {
                return print_json(&answer);
            }
            println!("user {name} enabled");
            Ok(())
        }
        UsersCommand::Delete { name, gateway } => {
            let answer = Client::new(&gateway)?.delete(&user_path(&name, "")).await?;
            if gateway.json {
                return print_json(&answer);
            }
            println!("user {name} deleted; {} tokens revoked", revoked(&answer));
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

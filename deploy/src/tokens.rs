//! `slipway tokens …` and `slipway keys rotate`: the token registry through the
//! gateway, in the manner of `flyctl tokens`. Text for people by default, `--json`
//! for scripts.

use std::io::Read;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::client::{Client, GatewayArgs, print_json};

#[derive(Debug, clap::Subcommand)]
pub enum TokensCommand {
    /// Mint a service or config token (needs a user token).
    Create {
        #[command(subcommand)]
        kind: CreateKind,
    },
    /// List tokens (needs a user token).
    List {
        /// Only tokens of this service.
        #[arg(long)]
        service: Option<String>,
        /// Only tokens of this type: user, service, deployment or config.
        #[arg(long = "type")]
        token_type: Option<String>,
        /// Only tokens minted by this user.
        #[arg(long)]
        created_by: Option<String>,
        /// Include revoked tokens.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Revoke tokens by id; tokens derived from them are revoked too.
    Revoke {
        #[arg(required = true)]
        ids: Vec<String>,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Derive a narrower token from the one given with --token / SLIPWAY_TOKEN.
    Attenuate {
        /// Keep only these permissions (repeatable).
        #[arg(long = "permission")]
        permissions: Vec<String>,
        /// Life of the new token in seconds (never beyond the presented token's).
        #[arg(long)]
        ttl: Option<u64>,
        /// Pin the origin.
        #[arg(long)]
        origin: Option<String>,
        /// A name to find the token by in listings.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Decode a token, explain its scope and say whether it is valid now.
    Debug {
        /// The token (default: --token / SLIPWAY_TOKEN, or stdin with "-").
        #[arg(value_name = "TOKEN")]
        jwt: Option<String>,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum CreateKind {
    /// A token CI uses to start deployments of one service.
    Service {
        service: String,
        /// Where the token will be used (e.g. github).
        #[arg(long, default_value = "cli")]
        origin: String,
        /// Days until it expires (1 to 180).
        #[arg(long, default_value_t = 30)]
        days: u32,
        /// Keep only these permissions (repeatable).
        #[arg(long = "permission")]
        permissions: Vec<String>,
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// A token that reads deployed-service configs (service discovery).
    Config {
        /// Limit the token to this service (repeatable; default: all services).
        #[arg(long = "service")]
        services: Vec<String>,
        /// Days until it expires (1 to 365).
        #[arg(long, default_value_t = 30)]
        days: u32,
        /// An extra claim KEY=VALUE carried in the token (repeatable).
        #[arg(long = "claim", value_parser = parse_claim)]
        claims: Vec<(String, String)>,
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Start signing with a new key; tokens of older keys stay valid until they expire.
    Rotate {
        #[command(flatten)]
        gateway: GatewayArgs,
    },
}

fn parse_claim(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

pub async fn run(command: TokensCommand) -> anyhow::Result<()> {
    match command {
        TokensCommand::Create { kind } => create(kind).await,
        TokensCommand::List {
            service,
            token_type,
            created_by,
            all,
            gateway,
        } => {
            let mut query = Vec::new();
            for (key, value) in [("service", service), ("type", token_type), ("created_by", created_by)] {
                if let Some(v) = value {
                    query.push(format!("{key}={}", encode(&v)));
                }
            }
            if all {
                query.push("include_revoked=true".into());
            }
            // Every page, so the list is whole however many tokens there are.
            let client = Client::new(&gateway)?;
            let mut tokens = Vec::new();
            let mut page_token = String::new();
            loop {
                let mut page_query = query.clone();
                if !page_token.is_empty() {
                    page_query.push(format!("page_token={}", encode(&page_token)));
                }
                let path = if page_query.is_empty() {
                    "/v1/tokens".to_owned()
                } else {
                    format!("/v1/tokens?{}", page_query.join("&"))
                };
                let page = client.get(&path).await?;
                tokens.extend(page["tokens"].as_array().cloned().unwrap_or_default());
                match page["nextPageToken"].as_str() {
                    Some(next) if !next.is_empty() && next != page_token => page_token = next.to_owned(),
                    _ => break,
                }
            }
            let listed = json!({ "tokens": tokens });
            if gateway.json {
                return print_json(&listed);
            }
            print_table(listed["tokens"].as_array().map(Vec::as_slice).unwrap_or_default());
            Ok(())
        }
        TokensCommand::Revoke { ids, gateway } => {
            let client = Client::new(&gateway)?;
            let mut revoked = Vec::new();
            for id in &ids {
                let response = client.delete(&format!("/v1/tokens/{}", encode(id))).await?;
                revoked.extend(response["revokedIds"].as_array().cloned().unwrap_or_default());
            }
            if gateway.json {
                return print_json(&json!({ "revokedIds": revoked }));
            }
            for id in &revoked {
                println!("revoked {}", id.as_str().unwrap_or_default());
            }
            if revoked.is_empty() {
                println!("nothing to revoke: already revoked");
            }
            Ok(())
        }
        TokensCommand::Attenuate {
            permissions,
            ttl,
            origin,
            name,
            gateway,
        } => {
            let body = json!({
                "permissions": permissions,
                "lifetimeSeconds": ttl.unwrap_or(0).to_string(),
                "origin": origin.unwrap_or_default(),
                "name": name.unwrap_or_default(),
            });
            let minted = Client::new(&gateway)?.post("/v1/tokens/attenuate", &body).await?;
            print_minted(&minted, gateway.json)
        }
        TokensCommand::Debug { jwt, gateway } => {
            let token = match jwt.as_deref() {
                Some("-") => {
                    let mut text = String::new();
                    std::io::stdin().read_to_string(&mut text).context("reading stdin")?;
                    text.trim().to_owned()
                }
                Some(t) => t.to_owned(),
                None => match &gateway.token {
                    Some(t) => secrecy::ExposeSecret::expose_secret(t).to_owned(),
                    None => bail!("give a token as argument, with --token, SLIPWAY_TOKEN, or \"-\" for stdin"),
                },
            };
            let report = Client::new(&gateway)?
                .post("/v1/tokens/debug", &json!({ "token": token }))
                .await?;
            if gateway.json {
                return print_json(&report);
            }
            print_debug(&report);
            Ok(())
        }
    }
}

pub async fn keys(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Rotate { gateway } => {
            let rotated = Client::new(&gateway)?.post("/v1/keys/rotate", &json!({})).await?;
            if gateway.json {
                return print_json(&rotated);
            }
            println!("now signing with key {}", rotated["kid"].as_str().unwrap_or_default());
            Ok(())
        }
    }
}

async fn create(kind: CreateKind) -> anyhow::Result<()> {
    let (gateway, path, body) = match kind {
        CreateKind::Service {
            service,
            origin,
            days,
            permissions,
            name,
            gateway,
        } => {
            let body = json!({
                "service": service,
                "origin": origin,
                "expirationInDays": days,
                "permissions": permissions,
                "name": name.unwrap_or_default(),
            });
            (gateway, "/v1/tokens/service", body)
        }
        CreateKind::Config {
            services,
            days,
            claims,
            name,
            gateway,
        } => {
            let extra: serde_json::Map<String, Value> =
                claims.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
            let body = json!({
                "services": services,
                "expirationInDays": days,
                "extraClaims": extra,
                "name": name.unwrap_or_default(),
            });
            (gateway, "/v1/tokens", body)
        }
    };
    let minted = Client::new(&gateway)?.post(path, &body).await?;
    print_minted(&minted, gateway.json)
}

/// The token on stdout (so `$(slipway tokens create …)` works), its details on stderr.
fn print_minted(minted: &Value, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(minted);
    }
    let info = &minted["info"];
    eprintln!(
        "minted {} token {} (expires {})",
        type_label(&info["type"]),
        text(&info["id"]),
        text(&info["expiresAt"])
    );
    println!("{}", text(&minted["token"]));
    Ok(())
}

fn print_table(tokens: &[Value]) {
    if tokens.is_empty() {
        println!("no tokens");
        return;
    }
    println!(
        "{:<36}  {:<10}  {:<16}  {:<12}  {:<10}  {:<20}  STATUS",
        "ID", "TYPE", "SERVICE", "ORIGIN", "BY", "EXPIRES"
    );
    for t in tokens {
        let status = if t["revokedAt"].is_string() {
            "revoked"
        } else {
            "active"
        };
        println!(
            "{:<36}  {:<10}  {:<16}  {:<12}  {:<10}  {:<20}  {status}",
            text(&t["id"]),
            type_label(&t["type"]),
            text(&t["service"]),
            text(&t["origin"]),
            text(&t["createdBy"]),
            text(&t["expiresAt"]),
        );
    }
}

fn print_debug(report: &Value) {
    let claims = &report["claims"];
    if report["valid"].as_bool() == Some(true) {
        println!("valid now");
    } else {
        println!("NOT valid: {}", text(&report["reason"]));
    }
    println!("type:        {}", text(&claims["type"]));
    for key in ["sub", "user", "service", "origin", "deployment", "jti", "parent"] {
        if !claims[key].is_null() {
            println!("{key:<12} {}", text(&claims[key]));
        }
    }
    let now = chrono::Utc::now();
    match claim_time(&claims["iat"]) {
        Some(issued) => println!("issued:      {} ({} ago)", issued.to_rfc3339(), span(now - issued)),
        None => println!("issued:      -"),
    }
    match claim_time(&claims["exp"]) {
        Some(expires) if expires > now => {
            println!("expires:     {} (in {})", expires.to_rfc3339(), span(expires - now));
        }
        Some(expires) => println!(
            "expires:     {} (expired {} ago)",
            expires.to_rfc3339(),
            span(now - expires)
        ),
        None => println!("expires:     -"),
    }
    if let Some(services) = claims["services"].as_array() {
        let names: Vec<String> = services.iter().map(text).collect();
        println!("services:    {}", names.join(", "));
    }
    let permissions: Vec<String> = report["permissions"]
        .as_array()
        .map(|p| p.iter().map(text).collect())
        .unwrap_or_default();
    println!("may:         {}", permissions.join(", "));
    if report["info"].is_object() {
        println!(
            "registered:  minted by {} at {}",
            text(&report["info"]["createdBy"]),
            text(&report["info"]["createdAt"])
        );
    } else {
        println!("registered:  not in this system's token registry");
    }
}

/// A JWT time claim (seconds since the epoch). The report carries the claims as a
/// protobuf `Struct`, whose numbers are doubles: `1767225600.0` as well as `1767225600`.
fn claim_time(value: &Value) -> Option<chrono::DateTime<chrono::Utc>> {
    let seconds = value.as_i64().or_else(|| {
        value
            .as_f64()
            .filter(|s| s.is_finite() && s.fract() == 0.0 && s.abs() < 1e15)
            // Whole and far inside i64: the cast is exact.
            .map(|s| s as i64)
    })?;
    chrono::DateTime::from_timestamp(seconds, 0)
}

/// A duration as `2d 3h 4m`, `3h 4m`, `4m 5s` or `5s`.
fn span(duration: chrono::TimeDelta) -> String {
    let total = duration.num_seconds().max(0);
    let (days, hours, minutes, seconds) = (total / 86_400, total / 3600 % 24, total / 60 % 60, total % 60);
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{seconds}s"),
        (0, 0, _) => format!("{minutes}m {seconds}s"),
        (0, _, _) => format!("{hours}h {minutes}m"),
        _ => format!("{days}d {hours}h {minutes}m"),
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn type_label(value: &Value) -> String {
    text(value).trim_start_matches("TOKEN_TYPE_").to_ascii_lowercase()
}

/// Percent-encodes a query or path value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

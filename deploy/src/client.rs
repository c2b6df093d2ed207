//! The HTTP client every `slipway` command that talks to a running system uses: the
//! gateway's URL and a token from flags or the environment, JSON in and out, and the
//! gateway's `{"detail": …}` errors turned into readable messages.

use anyhow::Context;
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

/// Where the system is and who is asking.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayArgs {
    /// The gateway's URL.
    #[arg(long, env = "SLIPWAY_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The token to call with (a user token for most commands).
    #[arg(long, env = "SLIPWAY_TOKEN", hide_env_values = true)]
    pub token: Option<SecretString>,
    /// Print JSON for scripts instead of text for people.
    #[arg(long)]
    pub json: bool,
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<SecretString>,
}

impl Client {
    pub fn new(args: &GatewayArgs) -> anyhow::Result<Client> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .context("building the HTTP client")?;
        Ok(Client {
            http,
            base: args.url.trim_end_matches('/').to_owned(),
            token: args.token.clone(),
        })
    }

    /// Sends a request and returns the JSON body of a success, or an error carrying
    /// the status and the gateway's detail.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method.clone(), &url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.expose_secret());
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.with_context(|| format!("{method} {url}"))?;
        let status = response.status();
        let text = response.text().await.context("reading the response")?;
        let json: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if !status.is_success() {
            let message = format!("{method} {path}: {}", describe(status, &json));
            return Err(HttpError { status, message }.into());
        }
        Ok(json)
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<Value> {
        self.call(Method::DELETE, path, None).await
    }
}

/// The gateway answered with an error status (callers may downcast to it to tell a
/// refusal from a connection failure).
#[derive(Debug)]
pub struct HttpError {
    pub status: StatusCode,
    pub message: String,
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HttpError {}

/// "401 Unauthorized: Could not validate credentials", with a hint when no token was given.
fn describe(status: StatusCode, body: &Value) -> String {
    let detail = match body.get("detail") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => body.to_string(),
    };
    let hint = if status == StatusCode::UNAUTHORIZED {
        " (give a valid token with --token or SLIPWAY_TOKEN)"
    } else {
        ""
    };
    format!("{status}: {detail}{hint}")
}

/// Prints `value` as pretty JSON.
pub fn print_json(value: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

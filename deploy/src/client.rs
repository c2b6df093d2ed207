//! The HTTP client every `slipway` command that talks to a running system uses: the
//! gateway's URL and a token from flags or the environment, JSON in and out, and the
//! gateway's `{"detail": …}` errors turned into readable messages.

use std::ops::ControlFlow;

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
    /// For streamed answers: no limit on the whole request, only on connecting.
    streams: reqwest::Client,
    base: String,
    token: Option<SecretString>,
}

impl Client {
    pub fn new(args: &GatewayArgs) -> anyhow::Result<Client> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .context("building the HTTP client")?;
        let streams = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .context("building the HTTP client")?;
        Ok(Client {
            http,
            streams,
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

    /// Follows an NDJSON stream (`/v1/…/watch`), handing each line to `each` as JSON
    /// as soon as it arrives; returns when the stream ends. A last line
    /// `{"error": {"status": …, "detail": …}}` is an error (an [`HttpError`] with that
    /// status).
    /// `each` may end the stream early (`ControlFlow::Break`).
    pub async fn stream(
        &self,
        path: &str,
        mut each: impl FnMut(Value) -> anyhow::Result<ControlFlow<()>>,
    ) -> anyhow::Result<()> {
        let url = format!("{}{path}", self.base);
        let mut request = self.streams.get(&url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.expose_secret());
        }
        let mut response = request.send().await.with_context(|| format!("GET {url}"))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
            let message = format!("GET {path}: {}", describe(status, &json));
            return Err(HttpError { status, message }.into());
        }
        let mut pending: Vec<u8> = Vec::new();
        while let Some(chunk) = response.chunk().await.context("reading the stream")? {
            pending.extend_from_slice(&chunk);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let value: Value = serde_json::from_slice(&line).context("a stream line that is not JSON")?;
                if let Some(error) = value.get("error") {
                    let status = error["status"]
                        .as_u64()
                        .and_then(|s| u16::try_from(s).ok())
                        .and_then(|s| StatusCode::from_u16(s).ok())
                        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                    let message = format!("GET {path}: {}", describe(status, error));
                    return Err(HttpError { status, message }.into());
                }
                if each(value)?.is_break() {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// `GET` of a plain-text answer, with its headers.
    pub async fn get_text(&self, path: &str) -> anyhow::Result<(reqwest::header::HeaderMap, String)> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.get(&url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.expose_secret());
        }
        let response = request.send().await.with_context(|| format!("GET {url}"))?;
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.context("reading the response")?;
        if !status.is_success() {
            let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
            let message = format!("GET {path}: {}", describe(status, &json));
            return Err(HttpError { status, message }.into());
        }
        Ok((headers, text))
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

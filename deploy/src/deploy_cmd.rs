//! `slipway deploy [SERVICE] [--env KEY=VALUE]… [--wait [--quiet]] [--json]`: start a
//! deployment with a service token as CI does (`POST /deployments/`), and with `--wait`
//! follow it to its end: its events (`/v1/deployments/watch`, each step printed as it
//! changes) and, unless `--quiet`, its script's output as it comes (`/log/watch`,
//! each line after `  | `). Exit codes: 0 started (or, with `--wait`, succeeded), 1
//! the deployment failed or was cancelled, 2 a usage, token or connection problem.

use std::{collections::HashMap, ops::ControlFlow, process::ExitCode, time::Duration};

use anyhow::{Context, bail};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use secrecy::ExposeSecret;
use serde_json::{Map, Value, json};

use crate::{
    client::{Client, GatewayArgs, HttpError, print_json},
    logs_cmd,
};

/// How long to wait before following the events again after the stream broke.
const RETRY_AFTER: Duration = Duration::from_millis(500);
/// Broken event streams in a row (gateway unreachable or 5xx) before giving up.
const MAX_FAILURES: u32 = 20;
/// How long the output may still take to arrive once the deployment has ended.
const OUTPUT_GRACE: Duration = Duration::from_secs(10);

const EXIT_FAILED: u8 = 1;
const EXIT_TROUBLE: u8 = 2;

#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// The service to deploy. The service token decides which service is deployed;
    /// when given, it is checked against the token's service first.
    service: Option<String>,
    /// An entry of the deployment's context env, KEY=VALUE (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Follow the deployment to its end; exit 0 if it succeeded, 1 if not.
    #[arg(long)]
    wait: bool,
    /// With --wait: print the steps only, not the script's output.
    #[arg(long, requires = "wait")]
    quiet: bool,
    /// The gateway, and the service token (SLIPWAY_TOKEN) to start with.
    #[command(flatten)]
    gateway: GatewayArgs,
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

/// How a followed deployment ended.
#[derive(Debug, PartialEq)]
enum Outcome {
    Succeeded,
    Failed,
}

pub async fn run(args: DeployArgs) -> ExitCode {
    match deploy(args).await {
        Ok(Outcome::Succeeded) => ExitCode::SUCCESS,
        Ok(Outcome::Failed) => ExitCode::from(EXIT_FAILED),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(EXIT_TROUBLE)
        }
    }
}

/// The claims of a JWT, read without verifying it (the gateway verifies); `None`
/// when it is not a JWT.
fn unverified_claims(token: &str) -> Option<Map<String, Value>> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// A clear error before any request when the token cannot start this deployment.
fn check_token(args: &DeployArgs) -> anyhow::Result<()> {
    let Some(token) = &args.gateway.token else {
        bail!("deploying needs a service token: give it with --token or SLIPWAY_TOKEN");
    };
    let Some(claims) = unverified_claims(token.expose_secret()) else {
        return Ok(());
    };
    let text = |key: &str| claims.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
    if text("type") != "service" {
        bail!(
            "the token is a {:?} token; deploying needs a service token (slipway tokens create service NAME)",
            text("type")
        );
    }
    if let Some(service) = &args.service
        && *service != text("service")
    {
        bail!("the token is for service {:?}, not {service:?}", text("service"));
    }
    Ok(())
}

async fn deploy(args: DeployArgs) -> anyhow::Result<Outcome> {
    check_token(&args)?;
    let client = Client::new(&args.gateway)?;
    let env: Map<String, Value> = args.env.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    let started = client.post("/deployments/", &json!({ "env": env })).await?;
    let id = started["id"]
        .as_i64()
        .context("the gateway answered without a deployment id")?;
    let json = args.gateway.json;
    if !args.wait {
        if json {
            print_json(&started)?;
        } else {
            println!(
                "deployment {id} started: {}",
                started["details"].as_str().unwrap_or_default()
            );
        }
        return Ok(Outcome::Succeeded);
    }
    // With --json, progress goes to stderr and only the final deployment to stdout.
    let say = |line: String| {
        if json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    say(format!("deployment {id} started; following it"));
    let deployment = if args.quiet {
        follow(&client, id, &say).await?
    } else {
        follow_with_output(&client, id, &say).await?
    };
    let outcome = outcome(&deployment);
    if json {
        print_json(&deployment)?;
    } else {
        let status = deployment["status"].as_str().unwrap_or("DEPLOYMENT_STATUS_UNSPECIFIED");
        let status = status.trim_start_matches("DEPLOYMENT_STATUS_").to_ascii_lowercase();
        match deployment["failureReason"].as_str() {
            Some(reason) if !reason.is_empty() => say(format!("deployment {id} {status}: {reason}")),
            _ => say(format!("deployment {id} {status}")),
        }
    }
    Ok(outcome)
}

/// Follows the deployment and its output together; returns the final deployment once
/// it has ended and its output is printed (or the output stopped coming).
async fn follow_with_output(client: &Client, id: i64, say: &impl Fn(String)) -> anyhow::Result<Value> {
    let output = logs_cmd::follow(client, id, |line| say(format!("  | {}", logs_cmd::text(line))));
    let events = follow(client, id, say);
    tokio::pin!(output, events);
    let mut output_done = false;
    let deployment = loop {
        tokio::select! {
            deployment = &mut events => break deployment?,
            followed = &mut output, if !output_done => {
                output_done = true;
                if let Err(error) = followed {
                    eprintln!("warning: {error:#}; the output is no longer printed");
                }
            }
        }
    };
    if !output_done {
        match tokio::time::timeout(OUTPUT_GRACE, &mut output).await {
            Ok(Err(error)) => eprintln!("warning: {error:#}"),
            Err(_) => eprintln!("warning: the rest of the output did not come in time"),
            Ok(Ok(())) => {}
        }
    }
    Ok(deployment)
}

/// An int64 of proto3 JSON (a string) or a number.
fn int(value: &Value) -> Option<i64> {
    match value {
        Value::String(s) => s.parse().ok(),
        other => other.as_i64(),
    }
}

/// Follows the deployment's events (`/v1/deployments/watch?deployment_id=…`, every
/// stored one from the first, then live ones; resumed after the last one seen if the
/// stream breaks) until it ends, printing every step that is new or changed; returns
/// the final deployment with its steps (proto3 JSON).
async fn follow(client: &Client, id: i64, say: &impl Fn(String)) -> anyhow::Result<Value> {
    let mut seen: HashMap<String, (String, String)> = HashMap::new();
    let mut after = -1_i64;
    let mut failures = 0;
    loop {
        let path = format!("/v1/deployments/watch?deployment_id={id}&after_sequence={after}");
        let mut over = false;
        let followed = client
            .stream(&path, |event| {
                failures = 0;
                if let Some(sequence) = int(&event["sequence"]) {
                    after = sequence;
                }
                if let Some(step) = event.get("step").filter(|_| event["deleted"] != true) {
                    let field = |k: &str| step[k].as_str().unwrap_or_default().to_owned();
                    let now = (field("state"), field("message"));
                    if seen.get(&field("id")) != Some(&now) {
                        let (state, message) = &now;
                        let name = field("name");
                        match message.as_str() {
                            "" => say(format!("  {state:<8} {name}")),
                            message => say(format!("  {state:<8} {name}: {message}")),
                        }
                        seen.insert(field("id"), now);
                    }
                }
                over = event.get("deployment").is_some_and(is_over);
                Ok(if over {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                })
            })
            .await;
        let error = match followed {
            Ok(()) if over => return client.get(&format!("/v1/deployments/{id}")).await,
            Ok(()) => anyhow::anyhow!("the event stream ended before the deployment did"),
            Err(error) => error,
        };
        let refused = error
            .downcast_ref::<HttpError>()
            .is_some_and(|e| e.status.is_client_error());
        failures += 1;
        if refused || failures >= MAX_FAILURES {
            return Err(error.context(format!("following deployment {id}")));
        }
        eprintln!("warning: {error:#}; retrying");
        tokio::time::sleep(RETRY_AFTER).await;
    }
}

fn status(deployment: &Value) -> &str {
    deployment["status"].as_str().unwrap_or_default()
}

fn is_over(deployment: &Value) -> bool {
    match status(deployment) {
        "DEPLOYMENT_STATUS_SUCCEEDED" | "DEPLOYMENT_STATUS_FAILED" | "DEPLOYMENT_STATUS_CANCELLED" => true,
        "DEPLOYMENT_STATUS_QUEUED" | "DEPLOYMENT_STATUS_RUNNING" => false,
        // No status: finished is the end, as fastDeploy's clients judge it.
        _ => deployment["finished"].is_string(),
    }
}

/// The status says; without one, fastDeploy's rule: no step in `failure`.
fn outcome(deployment: &Value) -> Outcome {
    match status(deployment) {
        "DEPLOYMENT_STATUS_SUCCEEDED" => Outcome::Succeeded,
        "" | "DEPLOYMENT_STATUS_UNSPECIFIED" => {
            let failed = deployment["steps"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| s["state"] == "failure");
            if failed { Outcome::Failed } else { Outcome::Succeeded }
        }
        _ => Outcome::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_entries_are_key_value() {
        assert_eq!(parse_env("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert_eq!(parse_env("A="), Ok(("A".into(), String::new())));
        assert!(parse_env("=b").is_err());
        assert!(parse_env("novalue").is_err());
    }

    #[test]
    fn the_status_decides_and_without_one_failure_steps_do() {
        let d = |v: Value| (is_over(&v), outcome(&v));
        assert_eq!(
            d(json!({"status": "DEPLOYMENT_STATUS_SUCCEEDED"})),
            (true, Outcome::Succeeded)
        );
        assert_eq!(
            d(json!({"status": "DEPLOYMENT_STATUS_CANCELLED"})),
            (true, Outcome::Failed)
        );
        assert!(!is_over(
            &json!({"status": "DEPLOYMENT_STATUS_RUNNING", "finished": "x"})
        ));
        assert_eq!(
            d(json!({"finished": "x", "steps": [{"state": "success"}, {"state": "failure"}]})),
            (true, Outcome::Failed)
        );
        assert_eq!(d(json!({"finished": "x", "steps": []})), (true, Outcome::Succeeded));
        assert!(!is_over(&json!({})));
    }

    #[test]
    fn claims_are_read_from_the_payload() {
        let payload = URL_SAFE_NO_PAD.encode(br#"{"type":"service","service":"hello"}"#);
        let claims = unverified_claims(&format!("h.{payload}.s")).unwrap();
        assert_eq!(claims["service"], "hello");
        assert!(unverified_claims("not a jwt").is_none());
    }
}

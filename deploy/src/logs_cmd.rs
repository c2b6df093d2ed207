//! `slipway logs DEPLOYMENT_ID [--follow]`: what a deployment's script printed
//! (`GET /v1/deployments/{id}/log`), or with `--follow` its lines as they come until
//! the run ends (`/log/watch`, resumed after the last line seen if the connection
//! drops). With `--json`, each line is a `LogLine` object (line, time, stream, text).

use std::{ops::ControlFlow, time::Duration};

use anyhow::bail;
use serde_json::Value;

use crate::client::{Client, GatewayArgs, HttpError};

/// Lost connections in a row before a follow gives up.
const MAX_FAILURES: u32 = 10;

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// The deployment whose output to print.
    deployment_id: i64,
    /// Keep printing lines as the script prints them, until the run ends.
    #[arg(long, short)]
    follow: bool,
    /// The gateway, and a token that may read the deployment (a user token, a service
    /// token of its service, or the run's deployment token).
    #[command(flatten)]
    gateway: GatewayArgs,
}

pub async fn run(args: LogsArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.gateway)?;
    let id = args.deployment_id;
    let json = args.gateway.json;
    if args.follow {
        return follow(&client, id, |line| {
            if json {
                println!("{line}");
            } else {
                println!("{}", text(line));
            }
        })
        .await;
    }
    if json {
        bail!("--json goes with --follow (each line a LogLine object)");
    }
    let (headers, body) = client.get_text(&format!("/v1/deployments/{id}/log")).await?;
    print!("{body}");
    let complete = headers.get("x-log-complete").is_some_and(|v| v == "true");
    if !complete {
        eprintln!("(the run has not ended: more output may come; --follow prints it as it does)");
    }
    Ok(())
}

/// A log line's text.
pub fn text(line: &Value) -> &str {
    line["text"].as_str().unwrap_or_default()
}

/// Follows deployment `id`'s output until the run ends, calling `each` with every
/// line (a `LogLine` as proto3 JSON) once, in order.
pub async fn follow(client: &Client, id: i64, mut each: impl FnMut(&Value)) -> anyhow::Result<()> {
    let mut after = 0_i64;
    let mut failures = 0;
    loop {
        let path = format!("/v1/deployments/{id}/log/watch?after_line={after}");
        let followed = client
            .stream(&path, |line| {
                // int64 is a string in proto3 JSON.
                let number = match &line["line"] {
                    Value::String(s) => s.parse().ok(),
                    other => other.as_i64(),
                };
                if let Some(number) = number {
                    after = number;
                }
                failures = 0;
                each(&line);
                Ok(ControlFlow::Continue(()))
            })
            .await;
        let Err(error) = followed else { return Ok(()) };
        let refused = error
            .downcast_ref::<HttpError>()
            .is_some_and(|e| e.status.is_client_error());
        failures += 1;
        if refused || failures >= MAX_FAILURES {
            return Err(error.context(format!("following the output of deployment {id}")));
        }
        eprintln!("warning: {error:#}; resuming after line {after}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

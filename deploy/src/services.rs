//! `slipway services sync|list`: the services directory as the registry sees it,
//! through the gateway's `/v1/services` API with a user token.

use reqwest::Method;
use serde_json::{Value, json};

use crate::client::{Client, GatewayArgs, print_json};

#[derive(Debug, clap::Subcommand)]
pub enum ServicesCommand {
    /// Re-read the services directory: print what was added, updated and deleted, and
    /// every folder that could not be synced with its reason.
    Sync {
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// List the synced services.
    List {
        #[command(flatten)]
        gateway: GatewayArgs,
    },
}

pub async fn run(command: ServicesCommand) -> anyhow::Result<()> {
    match command {
        ServicesCommand::Sync { gateway } => {
            let report = Client::new(&gateway)?
                .call(Method::POST, "/v1/services/sync", None)
                .await?;
            if gateway.json {
                print_json(&report)
            } else {
                print!("{}", sync_text(&report));
                Ok(())
            }
        }
        ServicesCommand::List { gateway } => {
            let services = list_all(&Client::new(&gateway)?).await?;
            if gateway.json {
                print_json(&json!({ "services": services }))
            } else {
                print!("{}", list_text(&services));
                Ok(())
            }
        }
    }
}

/// Every page of `GET /v1/services`.
async fn list_all(client: &Client) -> anyhow::Result<Vec<Value>> {
    let mut services = Vec::new();
    let mut path = "/v1/services".to_owned();
    loop {
        let page = client.get(&path).await?;
        services.extend(page["services"].as_array().cloned().unwrap_or_default());
        match page["nextPageToken"].as_str() {
            Some(token) if !token.is_empty() => path = format!("/v1/services?page_token={token}"),
            _ => return Ok(services),
        }
    }
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .map(|list| list.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn sync_text(report: &Value) -> String {
    let mut out = String::new();
    for (label, key) in [("added", "added"), ("updated", "updated"), ("deleted", "deleted")] {
        for name in strings(&report[key]) {
            out.push_str(&format!("{label:<8} {name}\n"));
        }
    }
    for (label, key) in [("problem", "problems"), ("warning", "warnings")] {
        for problem in report[key].as_array().map(Vec::as_slice).unwrap_or_default() {
            let service = problem["service"].as_str().unwrap_or_default();
            let reason = problem["reason"].as_str().unwrap_or_default();
            out.push_str(&format!("{label:<8} {service}: {reason}\n"));
        }
    }
    if out.is_empty() {
        out.push_str("services already in sync\n");
    }
    out
}

fn list_text(services: &[Value]) -> String {
    if services.is_empty() {
        return "no services (sync with `slipway services sync`)\n".into();
    }
    let width = services
        .iter()
        .filter_map(|s| s["name"].as_str())
        .map(str::len)
        .max()
        .unwrap_or(0);
    let mut out = format!("{:>5}  {:<width$}  STEPS  DESCRIPTION\n", "ID", "NAME");
    for service in services {
        let id = service["id"].as_str().unwrap_or_default();
        let name = service["name"].as_str().unwrap_or_default();
        let data = &service["data"];
        let steps = data["steps"].as_array().map_or(0, Vec::len);
        let description = data["description"].as_str().unwrap_or_default();
        out.push_str(&format!("{id:>5}  {name:<width$}  {steps:>5}  {description}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_output_names_every_change_and_problem() {
        let report = json!({
            "added": ["gamma"], "updated": ["alpha"], "deleted": ["beta"],
            "problems": [{"service": "bad", "reason": "config.json is missing"}],
            "warnings": [{"service": "alpha", "reason": "deploy script alpha/deploy.sh does not exist"}],
        });
        assert_eq!(
            sync_text(&report),
            "added    gamma\nupdated  alpha\ndeleted  beta\nproblem  bad: config.json is missing\n\
             warning  alpha: deploy script alpha/deploy.sh does not exist\n"
        );
        assert_eq!(sync_text(&json!({})), "services already in sync\n");
    }

    #[test]
    fn list_output_is_a_table() {
        let services = [json!({"id": "7", "name": "alpha", "data": {"description": "A", "steps": [{"name": "x"}]}})];
        assert_eq!(
            list_text(&services),
            "   ID  NAME   STEPS  DESCRIPTION\n    7  alpha      1  A\n"
        );
    }
}

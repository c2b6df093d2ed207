//! The deployment tests' fixture over gRPC: a stack whose services directory holds
//! real deploy scripts (most of them [`HOLD`] until released), the admin's token,
//! and helpers to start, watch and report on runs.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use proto::{
    auth::v1::{MintServiceTokenRequest, auth_service_client::AuthServiceClient},
    deploy::v1::{self as pb, DeploymentStatus, deploy_service_client::DeployServiceClient},
};
use serde_json::{Value, json};
use tonic::{Code, transport::Channel};

use crate::{
    Backend, Stack,
    grpc::{bearer, channel},
    wait_until,
};

/// Waits until the script's config file names a deployment, records what it needs,
/// then waits for `release-<id>` before going on.
pub const HOLD: &str = r#"here=$(cd "$(dirname "$0")" && pwd)
id=$(sed -n 's/^  "deployment_id": "\([0-9]*\)",$/\1/p' "$2")
cat "$2" > "$here/config-$id"
echo $$ > "$here/pid-$id"
while [ ! -e "$here/release-$id" ]; do sleep 0.05; done
"#;

/// A deploy script that, for each of `steps` in turn, reports it running, waits until
/// a file `go-<step>` appears beside the script, then reports it succeeded.
pub fn stepwise_script(steps: &[&str]) -> String {
    format!(
        r#"here=$(cd "$(dirname "$0")" && pwd)
for step in {}; do
  echo "{{\"name\": \"$step\", \"state\": \"running\", \"message\": \"$step running\"}}"
  while [ ! -e "$here/go-$step" ]; do sleep 0.05; done
  echo "{{\"name\": \"$step\", \"state\": \"success\", \"message\": \"$step done\"}}"
done
"#,
        steps.join(" ")
    )
}

pub fn write_service(services: &Path, name: &str, config: Value, script: &str) {
    let dir = services.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let script_path = dir.join("deploy.sh");
    std::fs::write(&script_path, format!("#!/bin/sh\n{script}")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script_path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

pub struct Fixture {
    pub stack: Stack,
    pub admin: String,
}

pub fn status(deployment: &pb::Deployment) -> DeploymentStatus {
    DeploymentStatus::try_from(deployment.status).unwrap()
}

pub fn steps_of(deployment: &pb::Deployment) -> Vec<(String, String)> {
    deployment
        .steps
        .iter()
        .map(|s| (s.name.clone(), s.state.clone()))
        .collect()
}

pub fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(a, b)| ((*a).into(), (*b).into())).collect()
}

pub fn env(value: Value) -> Option<proto::wkt::Struct> {
    Some(serde_json::from_value(value).unwrap())
}

impl Fixture {
    pub async fn start(backend: Backend, prepare: impl FnOnce(&Path)) -> Fixture {
        let stack = Stack::start_with(backend, prepare).await;
        let admin = stack.admin_token().await;
        Fixture { stack, admin }
    }

    pub fn services(&self) -> PathBuf {
        self.stack.services_dir()
    }

    pub async fn deploy(&self) -> DeployServiceClient<Channel> {
        DeployServiceClient::new(channel(self.stack.deploy).await)
    }

    /// A service token minted by the admin, as the frontend and CI get one.
    pub async fn service_token(&self, service: &str) -> String {
        let request = MintServiceTokenRequest {
            service: service.into(),
            origin: "ci".into(),
            expiration_in_days: 1,
            ..Default::default()
        };
        AuthServiceClient::new(channel(self.stack.auth).await)
            .mint_service_token(bearer(request, &self.admin))
            .await
            .unwrap_or_else(|e| panic!("minting a service token for {service}: {e:?}\n{}", self.stack.logs()))
            .into_inner()
            .token
    }

    pub async fn start_with(&self, token: &str, env_value: Value) -> Result<pb::Deployment, tonic::Status> {
        let request = pb::StartDeploymentRequest {
            env: env(env_value),
            ..Default::default()
        };
        self.deploy()
            .await
            .start_deployment(bearer(request, token))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn start_service(&self, service: &str) -> pb::Deployment {
        let token = self.service_token(service).await;
        self.start_with(&token, json!({}))
            .await
            .unwrap_or_else(|e| panic!("starting {service}: {e:?}\n{}", self.stack.logs()))
    }

    pub async fn get(&self, id: i64) -> pb::Deployment {
        self.deploy()
            .await
            .get_deployment(bearer(pb::GetDeploymentRequest { id }, &self.admin))
            .await
            .unwrap()
            .into_inner()
    }

    pub async fn wait_for(&self, id: i64, what: &str, done: impl Fn(&pb::Deployment) -> bool) -> pb::Deployment {
        wait_until(Duration::from_secs(30), async || {
            let deployment = self.get(id).await;
            if done(&deployment) {
                Ok(deployment)
            } else {
                Err(format!("deployment {id}: {what} not reached: {deployment:?}"))
            }
        })
        .await
    }

    pub async fn finished(&self, id: i64) -> pb::Deployment {
        self.wait_for(id, "finished", |d| d.finished.is_some()).await
    }

    /// Waits for a file the script writes and returns its content.
    pub async fn file(&self, service: &str, name: &str) -> String {
        let path = self.services().join(service).join(name);
        wait_until(Duration::from_secs(30), async || match std::fs::read_to_string(&path) {
            Ok(text) if !text.is_empty() => Ok(text),
            _ => Err(format!("{} never written", path.display())),
        })
        .await
    }

    pub fn release(&self, service: &str, id: i64) {
        std::fs::write(self.services().join(service).join(format!("release-{id}")), "").unwrap();
    }

    /// The deployment token the script of deployment `id` got (it must HOLD).
    pub async fn deployment_token(&self, service: &str, id: i64) -> String {
        let config: Value = serde_json::from_str(&self.file(service, &format!("config-{id}")).await).unwrap();
        config["access_token"].as_str().unwrap().to_owned()
    }

    pub fn runs_dir(&self) -> PathBuf {
        self.stack.dir.path().join("deploy-runs")
    }
}

pub fn process_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

pub async fn wait_gone(pid: i32) {
    wait_until(Duration::from_secs(10), async || match process_gone(pid) {
        true => Ok(()),
        false => Err(format!("process {pid} still running")),
    })
    .await
}

pub async fn report(
    fixture: &Fixture,
    token: &str,
    name: &str,
    state: &str,
    message: &str,
) -> Result<pb::Step, tonic::Status> {
    let request = pb::ReportStepRequest {
        name: name.into(),
        state: state.into(),
        message: message.into(),
        ..Default::default()
    };
    fixture
        .deploy()
        .await
        .report_step(bearer(request, token))
        .await
        .map(|r| r.into_inner())
}

/// Polls until a report with `token` is refused as unauthenticated (the revocation
/// reaches the deploy service through the auth service's feed).
pub async fn wait_token_refused(fixture: &Fixture, token: &str) {
    wait_until(Duration::from_secs(5), async || {
        let refused = report(fixture, token, "late", "success", "").await.unwrap_err();
        if refused.code() == Code::Unauthenticated {
            return Ok(());
        }
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
        Err("deployment token still accepted after its run".to_owned())
    })
    .await
}

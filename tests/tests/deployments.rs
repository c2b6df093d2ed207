//! Deployments end to end over gRPC to the deploy service, with real deploy scripts in
//! a real services directory: runs and their steps, the config file a script gets,
//! failures of every kind, cancel, the per-service queue, a restart of the deploy
//! service mid-run, the step state machine, the event stream, who may read what, and
//! deployment tokens that die with their run. On SQLite and PostgreSQL.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use common::token::{Claims, TokenType};
use proto::{
    auth::v1::{MintServiceTokenRequest, auth_service_client::AuthServiceClient},
    deploy::v1::{self as pb, DeploymentStatus, deploy_service_client::DeployServiceClient, event::Payload},
    registry::v1::{ListDeployedServicesRequest, registry_service_client::RegistryServiceClient},
};
use serde_json::{Value, json};
use tests::grpc::bearer;
use tests::{Backend, Stack, on_every_backend, user_claims};
use tonic::{Code, transport::Channel};

on_every_backend!(
    a_successful_run_reports_steps_and_hides_its_config,
    failures_end_with_a_failed_step_saying_why,
    cancel_stops_the_whole_process_group,
    one_run_per_service_and_the_rest_queued_in_order,
    a_restart_ends_the_interrupted_run_and_runs_the_queued_one,
    the_step_state_machine_over_rpc,
    events_replay_then_follow_live_without_gaps,
    who_may_start_and_read_what,
);

// ----- harness -----

/// Waits until the script's config file names a deployment, records what it needs,
/// then waits for `release-<id>` before going on.
const HOLD: &str = r#"here=$(cd "$(dirname "$0")" && pwd)
id=$(sed -n 's/^  "deployment_id": "\([0-9]*\)",$/\1/p' "$2")
cat "$2" > "$here/config-$id"
echo $$ > "$here/pid-$id"
while [ ! -e "$here/release-$id" ]; do sleep 0.05; done
"#;

fn write_service(services: &Path, name: &str, config: Value, script: &str) {
    let dir = services.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let script_path = dir.join("deploy.sh");
    std::fs::write(&script_path, format!("#!/bin/sh\n{script}")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script_path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

struct Fixture {
    stack: Stack,
    admin: String,
}

async fn channel(addr: std::net::SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn status(deployment: &pb::Deployment) -> DeploymentStatus {
    DeploymentStatus::try_from(deployment.status).unwrap()
}

fn steps_of(deployment: &pb::Deployment) -> Vec<(String, String)> {
    deployment
        .steps
        .iter()
        .map(|s| (s.name.clone(), s.state.clone()))
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(a, b)| ((*a).into(), (*b).into())).collect()
}

fn claims_of(token: &str) -> Value {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let payload = URL_SAFE_NO_PAD.decode(token.split('.').nth(1).unwrap()).unwrap();
    serde_json::from_slice(&payload).unwrap()
}

fn env(value: Value) -> Option<proto::wkt::Struct> {
    Some(serde_json::from_value(value).unwrap())
}

impl Fixture {
    async fn start(backend: Backend, prepare: impl FnOnce(&Path)) -> Fixture {
        let stack = Stack::start_with(backend, prepare).await;
        let admin = stack.admin_token().await;
        Fixture { stack, admin }
    }

    fn services(&self) -> PathBuf {
        self.stack.services_dir()
    }

    async fn deploy(&self) -> DeployServiceClient<Channel> {
        DeployServiceClient::new(channel(self.stack.deploy).await)
    }

    /// A service token minted by the admin, as the frontend and CI get one.
    async fn service_token(&self, service: &str) -> String {
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

    async fn start_with(&self, token: &str, env_value: Value) -> Result<pb::Deployment, tonic::Status> {
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

    async fn start_service(&self, service: &str) -> pb::Deployment {
        let token = self.service_token(service).await;
        self.start_with(&token, json!({}))
            .await
            .unwrap_or_else(|e| panic!("starting {service}: {e:?}\n{}", self.stack.logs()))
    }

    async fn get(&self, id: i64) -> pb::Deployment {
        self.deploy()
            .await
            .get_deployment(bearer(pb::GetDeploymentRequest { id }, &self.admin))
            .await
            .unwrap()
            .into_inner()
    }

    async fn wait_for(&self, id: i64, what: &str, done: impl Fn(&pb::Deployment) -> bool) -> pb::Deployment {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let deployment = self.get(id).await;
            if done(&deployment) {
                return deployment;
            }
            assert!(
                Instant::now() < deadline,
                "deployment {id}: {what} not reached: {deployment:?}\n{}",
                self.stack.logs()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn finished(&self, id: i64) -> pb::Deployment {
        self.wait_for(id, "finished", |d| d.finished.is_some()).await
    }

    /// Waits for a file the script writes and returns its content.
    async fn file(&self, service: &str, name: &str) -> String {
        let path = self.services().join(service).join(name);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(text) = std::fs::read_to_string(&path)
                && !text.is_empty()
            {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{} never written\n{}",
                path.display(),
                self.stack.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn release(&self, service: &str, id: i64) {
        std::fs::write(self.services().join(service).join(format!("release-{id}")), "").unwrap();
    }

    /// The deployment token the script of deployment `id` got (it must HOLD).
    async fn deployment_token(&self, service: &str, id: i64) -> String {
        let config: Value = serde_json::from_str(&self.file(service, &format!("config-{id}")).await).unwrap();
        config["access_token"].as_str().unwrap().to_owned()
    }

    fn runs_dir(&self) -> PathBuf {
        self.stack.dir.path().join("deploy-runs")
    }
}

fn process_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

async fn wait_gone(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !process_gone(pid) {
        assert!(Instant::now() < deadline, "process {pid} still running");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn report(
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
async fn wait_token_refused(fixture: &Fixture, token: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let refused = report(fixture, token, "late", "success", "").await.unwrap_err();
        if refused.code() == Code::Unauthenticated {
            return;
        }
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
        assert!(
            Instant::now() < deadline,
            "deployment token still accepted after its run"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ----- scenarios -----

async fn a_successful_run_reports_steps_and_hides_its_config(backend: Backend) {
    let script = r#"here=$(cd "$(dirname "$0")" && pwd)
echo "$1" > "$here/arg1"
echo "$2" > "$here/path"
stat -c %a "$2" > "$here/mode"
stat -c %a "$(dirname "$2")" > "$here/dirmode"
env | sort > "$here/env"
pwd > "$here/cwd"
cat "$2" > "$here/config"
echo '{"name": "one", "state": "success", "message": "first done"}'
echo 'plain log output'
echo '{"name": "two", "state": "success", "message": "m", "error_message": "replaced"}' >&2
echo '{"name": "three", "state": "success"}'
echo '{"deployed_service": {"domain": "a.example", "port": 8000}}'
"#;
    let f = Fixture::start(backend, |dir| {
        write_service(
            dir,
            "alpha",
            json!({"steps": [{"name": "one"}, {"name": "two"}]}),
            script,
        );
    })
    .await;
    let token = f.service_token("alpha").await;
    let before = chrono::Utc::now().timestamp();
    let started = f.start_with(&token, json!({"FOO": "bar", "N": 1})).await.unwrap();
    assert_eq!(status(&started), DeploymentStatus::Running);
    assert_eq!(
        (started.service.as_str(), started.origin.as_str(), started.user.as_str()),
        ("alpha", "ci", "admin")
    );
    assert!(
        started.started.as_ref().unwrap().seconds >= before - 1,
        "started = acceptance time"
    );
    assert_eq!(steps_of(&started)[0], ("one".to_owned(), "running".to_owned()));
    assert_eq!(started.steps[1].state, "pending");

    let done = f.finished(started.id).await;
    assert_eq!(
        status(&done),
        DeploymentStatus::Succeeded,
        "{done:?}\n{}",
        f.stack.logs()
    );
    assert_eq!(done.failure_reason, "");
    assert_eq!(
        steps_of(&done),
        pairs(&[("one", "success"), ("two", "success"), ("three", "success")])
    );
    assert_eq!(done.steps.iter().map(|s| s.sequence).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(done.steps[0].message, "first done");
    assert_eq!(done.steps[1].message, "replaced", "error_message replaces message");
    assert!(done.steps.iter().all(|s| s.started.is_some() && s.finished.is_some()));
    let context: Value = serde_json::to_value(done.context.as_ref().unwrap()).unwrap();
    assert_eq!(context, json!({"env": {"FOO": "bar", "N": 1.0}}));

    // What the script saw: argv, a private file with fastDeploy's keys, a minimal
    // environment, the project root as working directory.
    assert_eq!(f.file("alpha", "arg1").await.trim(), "--config");
    assert_eq!(f.file("alpha", "mode").await.trim(), "600");
    assert_eq!(f.file("alpha", "dirmode").await.trim(), "700");
    let path = f.file("alpha", "path").await;
    let path = Path::new(path.trim());
    assert!(path.starts_with(f.runs_dir()), "{}", path.display());
    assert!(!path.exists(), "the config file outlived its run");
    let config_text = f.file("alpha", "config").await;
    assert!(config_text.starts_with("{\n  \"deployment_id\": "), "{config_text}");
    let config: Value = serde_json::from_str(&config_text).unwrap();
    let keys: Vec<&str> = config.as_object().unwrap().keys().map(String::as_str).collect();
    let mut want = [
        "access_token",
        "context",
        "deploy_script",
        "deployment_finish_url",
        "deployment_id",
        "path_for_deploy",
        "steps_url",
    ];
    want.sort();
    assert_eq!(keys, want, "exactly fastDeploy's keys (no ssh_auth_sock when unset)");
    assert_eq!(config["deployment_id"], json!(started.id.to_string()));
    assert_eq!(config["deploy_script"], "alpha/deploy.sh");
    assert_eq!(config["steps_url"], json!(f.stack.url("/steps/")));
    assert_eq!(
        config["deployment_finish_url"],
        json!(f.stack.url("/deployments/finish/"))
    );
    assert_eq!(config["context"], json!({"env": {"FOO": "bar", "N": 1}}));
    let path_for_deploy = config["path_for_deploy"].as_str().unwrap();
    let deployment_token = config["access_token"].as_str().unwrap();
    let claims = claims_of(deployment_token);
    assert_eq!(claims["type"], "deployment");
    assert_eq!(claims["deployment"], json!(started.id));
    let env_text = f.file("alpha", "env").await;
    let names: Vec<&str> = env_text.lines().filter_map(|l| l.split('=').next()).collect();
    for name in &names {
        assert!(
            ["HOME", "LANG", "PATH", "PWD", "SHLVL", "_", "OLDPWD"].contains(name),
            "{name} leaked into the script's environment:\n{env_text}"
        );
    }
    assert!(env_text.contains(&format!("PATH={path_for_deploy}\n")), "{env_text}");
    assert!(!env_text.contains(deployment_token), "no secret in the environment");
    assert_eq!(
        Path::new(f.file("alpha", "cwd").await.trim()),
        f.services().parent().unwrap().canonicalize().unwrap()
    );
    assert_eq!(std::fs::read_dir(f.runs_dir()).unwrap().count(), 0);

    // The deployed service it reported is published.
    let published = RegistryServiceClient::new(channel(f.stack.registry).await)
        .list_deployed_services(bearer(ListDeployedServicesRequest {}, &f.admin))
        .await
        .unwrap()
        .into_inner()
        .deployed_services;
    assert_eq!(published.len(), 1, "{published:?}");
    assert_eq!(published[0].deployment_id, started.id);
    let published_config = serde_json::to_value(published[0].config.as_ref().unwrap()).unwrap();
    assert_eq!(published_config, json!({"domain": "a.example", "port": 8000.0}));

    // Its token died with the run.
    wait_token_refused(&f, deployment_token).await;

    // The next plan is the last success's steps, messages cleared.
    let next = f.start_with(&token, json!({})).await.unwrap();
    assert_eq!(
        steps_of(&next),
        pairs(&[("one", "running"), ("two", "pending"), ("three", "pending")])
    );
    assert!(next.steps.iter().all(|s| s.message.is_empty()));
    assert!(next.steps[0].id > done.steps[2].id, "step ids are never reused");
    f.finished(next.id).await;
}

async fn failures_end_with_a_failed_step_saying_why(backend: Backend) {
    let f = Fixture::start(backend, |dir| {
        write_service(
            dir,
            "exits",
            json!({}),
            "echo '{\"name\": \"one\", \"state\": \"success\"}'\necho 'it broke'\nexit 3\n",
        );
        write_service(dir, "missing", json!({}), "exit 0\n");
        write_service(dir, "nointerpreter", json!({}), "exit 0\n");
        write_service(dir, "noexec", json!({}), "exit 0\n");
        write_service(dir, "slow", json!({"timeout_seconds": 1}), "sleep 30\n");
        write_service(
            dir,
            "badline",
            json!({"steps": [{"name": "a"}, {"name": "b"}]}),
            "echo '{\"name\": \"a\", \"state\": \"skipped\"}'\nsleep 30\n",
        );
        write_service(
            dir,
            "longline",
            json!({}),
            "head -c 1100000 /dev/zero | tr '\\0' x\necho\nsleep 30\n",
        );
        write_service(dir, "leaky", json!({}), "tr -d '\\n' < \"$2\"\necho\nexit 1\n");
        write_service(
            dir,
            "stepfails",
            json!({}),
            "echo '{\"name\": \"a\", \"state\": \"failure\", \"message\": \"disk full\"}'\n",
        );
    })
    .await;
    // The registry has synced these; now break two of them on disk.
    std::fs::remove_file(f.services().join("missing/deploy.sh")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        f.services().join("noexec/deploy.sh"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::fs::write(
        f.services().join("nointerpreter/deploy.sh"),
        "#!/nonexistent/interpreter\n",
    )
    .unwrap();

    let cases = [
        ("exits", "the deploy script exited with status 3; last output: it broke"),
        ("missing", "the deploy script missing/deploy.sh does not exist"),
        ("noexec", "the deploy script noexec/deploy.sh is not executable"),
        (
            "nointerpreter",
            "could not start the deploy script nointerpreter/deploy.sh: No such file or directory",
        ),
        ("slow", "timed out after 1 s; the deploy script was stopped"),
        ("badline", "step report refused (unknown step state \"skipped\""),
        ("longline", "the deploy script printed a line longer than 1048576 bytes"),
    ];
    let mut ids = Vec::new();
    for (service, _) in cases {
        ids.push(f.start_service(service).await.id);
    }
    for ((service, why), id) in cases.iter().zip(ids) {
        let done = f.finished(id).await;
        assert_eq!(status(&done), DeploymentStatus::Failed, "{service}: {done:?}");
        assert!(
            done.failure_reason.starts_with(why),
            "{service}: {}",
            done.failure_reason
        );
        let last = done.steps.last().unwrap();
        assert_eq!(
            (last.name.as_str(), last.state.as_str()),
            ("failed step", "failure"),
            "{service}"
        );
        assert_eq!(last.message, done.failure_reason);
        assert!(
            done.steps.iter().all(|s| s.state == "success" || s.state == "failure"),
            "{service}: nothing left pending or running: {:?}",
            done.steps
        );
    }
    // Steps reported before the failure stay; unreported ones are gone.
    let exits = f.get(f.start_service("exits").await.id).await;
    let exits = f.finished(exits.id).await;
    assert_eq!(
        steps_of(&exits),
        pairs(&[("one", "success"), ("failed step", "failure")])
    );
    // A script that reports a failed step and exits 0 failed, without an extra step.
    let stepfails = f.finished(f.start_service("stepfails").await.id).await;
    assert_eq!(status(&stepfails), DeploymentStatus::Failed);
    assert_eq!(stepfails.failure_reason, "step \"a\" failed");
    assert_eq!(steps_of(&stepfails), pairs(&[("a", "failure")]));
    assert_eq!(stepfails.steps[0].message, "disk full");
    assert_eq!(
        std::fs::read_dir(f.runs_dir()).unwrap().count(),
        0,
        "no config file left"
    );
}

async fn cancel_stops_the_whole_process_group(backend: Backend) {
    let script = HOLD.replace(
        "while",
        "sleep 300 &\necho $! > \"$here/child-$id\"\necho '{\"name\": \"one\", \"state\": \"success\"}'\nwhile",
    );
    let f = Fixture::start(backend, |dir| {
        write_service(
            dir,
            "alpha",
            json!({"steps": [{"name": "one"}, {"name": "two"}]}),
            &script,
        );
    })
    .await;
    let running = f.start_service("alpha").await;
    let queued = f.start_service("alpha").await;
    assert_eq!(status(&queued), DeploymentStatus::Queued);
    let child: i32 = f
        .file("alpha", &format!("child-{}", running.id))
        .await
        .trim()
        .parse()
        .unwrap();
    let script_pid: i32 = f
        .file("alpha", &format!("pid-{}", running.id))
        .await
        .trim()
        .parse()
        .unwrap();
    f.wait_for(running.id, "step one reported", |d| d.steps[0].state == "success")
        .await;

    // A queued deployment is cancelled without ever running.
    let mut deploy = f.deploy().await;
    let cancelled = deploy
        .cancel_deployment(bearer(pb::CancelDeploymentRequest { id: queued.id }, &f.admin))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status(&cancelled), DeploymentStatus::Cancelled);
    assert_eq!(
        steps_of(&cancelled),
        pairs(&[("failed step", "failure")]),
        "its pending steps are gone"
    );
    assert_eq!(cancelled.steps[0].message, "cancelled by admin before it started");
    assert!(cancelled.run_started.is_none());

    // A running one: its script and everything it started are stopped.
    let cancelled = deploy
        .cancel_deployment(bearer(pb::CancelDeploymentRequest { id: running.id }, &f.admin))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status(&cancelled), DeploymentStatus::Cancelled, "{cancelled:?}");
    assert_eq!(cancelled.failure_reason, "cancelled by admin");
    assert_eq!(
        steps_of(&cancelled),
        pairs(&[("one", "success"), ("failed step", "failure")])
    );
    wait_gone(script_pid).await;
    wait_gone(child).await;
    assert!(
        !f.services().join(format!("alpha/config-{}", queued.id)).exists(),
        "never ran"
    );

    let again = deploy
        .cancel_deployment(bearer(pb::CancelDeploymentRequest { id: running.id }, &f.admin))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
    let unknown = deploy
        .cancel_deployment(bearer(pb::CancelDeploymentRequest { id: 999_999 }, &f.admin))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    let token = f.service_token("alpha").await;
    let refused = deploy
        .cancel_deployment(bearer(pb::CancelDeploymentRequest { id: running.id }, &token))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "a service token may not cancel");
}

async fn one_run_per_service_and_the_rest_queued_in_order(backend: Backend) {
    let f = Fixture::start(backend, |dir| {
        for name in ["alpha", "beta", "gamma", "delta", "epsilon"] {
            write_service(dir, name, json!({}), HOLD);
        }
    })
    .await;
    let a1 = f.start_service("alpha").await;
    let a2 = f.start_service("alpha").await;
    let a3 = f.start_service("alpha").await;
    let b1 = f.start_service("beta").await;
    assert_eq!(status(&a1), DeploymentStatus::Running);
    assert_eq!(status(&a2), DeploymentStatus::Queued);
    assert_eq!(status(&a3), DeploymentStatus::Queued);
    assert_eq!(status(&b1), DeploymentStatus::Running, "another service is not held up");
    assert!(a2.started.is_some(), "started is the acceptance time, also when queued");
    assert!(a2.steps.iter().all(|s| s.state == "pending"));

    f.file("alpha", &format!("pid-{}", a1.id)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(status(&f.get(a2.id).await), DeploymentStatus::Queued);
    assert!(!f.services().join(format!("alpha/pid-{}", a2.id)).exists());

    // First in, first out: a2 runs when a1 ends, a3 after a2.
    f.release("alpha", a1.id);
    let a1 = f.finished(a1.id).await;
    let a2_running = f
        .wait_for(a2.id, "running", |d| status(d) == DeploymentStatus::Running)
        .await;
    assert_eq!(a2_running.steps[0].state, "running");
    assert_eq!(status(&f.get(a3.id).await), DeploymentStatus::Queued);
    f.release("alpha", a2.id);
    let a2 = f.finished(a2.id).await;
    f.release("alpha", a3.id);
    let a3 = f.finished(a3.id).await;
    f.release("beta", b1.id);
    f.finished(b1.id).await;

    // At most 4 at once over all services (--max-running): the fifth waits.
    let mut others = Vec::new();
    for name in ["alpha", "beta", "gamma", "delta"] {
        let d = f.start_service(name).await;
        assert_eq!(status(&d), DeploymentStatus::Running, "{name}");
        others.push((name, d.id));
    }
    let fifth = f.start_service("epsilon").await;
    assert_eq!(status(&fifth), DeploymentStatus::Queued, "over the global limit");
    f.release("gamma", others[2].1);
    f.wait_for(fifth.id, "running", |d| status(d) == DeploymentStatus::Running)
        .await;
    for (name, id) in others.into_iter().chain([("epsilon", fifth.id)]) {
        f.release(name, id);
        f.finished(id).await;
    }
    let at = |t: &Option<proto::wkt::Timestamp>| {
        let t = t.as_ref().unwrap();
        (t.seconds, t.nanos)
    };
    assert!(at(&a2.run_started) >= at(&a1.finished));
    assert!(at(&a3.run_started) >= at(&a2.finished));
    for d in [&a1, &a2, &a3] {
        assert_eq!(status(d), DeploymentStatus::Succeeded);
    }
}

async fn a_restart_ends_the_interrupted_run_and_runs_the_queued_one(backend: Backend) {
    let mut f = Fixture::start(backend, |dir| {
        write_service(dir, "alpha", json!({"steps": [{"name": "one"}]}), HOLD);
    })
    .await;
    let running = f.start_service("alpha").await;
    let queued = f.start_service("alpha").await;
    assert_eq!(status(&queued), DeploymentStatus::Queued);
    let token = f.deployment_token("alpha", running.id).await;
    let script_pid: i32 = f
        .file("alpha", &format!("pid-{}", running.id))
        .await
        .trim()
        .parse()
        .unwrap();
    assert!(std::fs::read_dir(f.runs_dir()).unwrap().count() > 0);

    f.stack.proc("deploy").kill();
    f.stack.restart("deploy").await;

    let failed = f.finished(running.id).await;
    assert_eq!(status(&failed), DeploymentStatus::Failed);
    assert_eq!(
        failed.failure_reason,
        "the deploy service restarted during the run; the deploy script was stopped"
    );
    assert_eq!(steps_of(&failed), pairs(&[("failed step", "failure")]));
    wait_gone(script_pid).await;
    // The queued deployment was not lost: it runs now.
    let next = f
        .wait_for(queued.id, "running", |d| status(d) == DeploymentStatus::Running)
        .await;
    assert_eq!(next.steps[0].state, "running");
    f.file("alpha", &format!("pid-{}", queued.id)).await;
    f.release("alpha", queued.id);
    assert_eq!(status(&f.finished(queued.id).await), DeploymentStatus::Succeeded);
    assert_eq!(
        std::fs::read_dir(f.runs_dir()).unwrap().count(),
        0,
        "config files scrubbed"
    );
    wait_token_refused(&f, &token).await;
}

async fn the_step_state_machine_over_rpc(backend: Backend) {
    let f = Fixture::start(backend, |dir| {
        write_service(
            dir,
            "alpha",
            json!({"steps": [{"name": "one"}, {"name": "two"}, {"name": "three"}]}),
            HOLD,
        );
    })
    .await;
    let d = f.start_service("alpha").await;
    let token = f.deployment_token("alpha", d.id).await;
    let steps = |d: pb::Deployment| steps_of(&d);

    // An unknown state is refused and nothing is stored.
    let before = f.get(d.id).await;
    let refused = report(&f, &token, "one", "done", "").await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    let refused = report(&f, &token, &"n".repeat(256), "success", "").await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(f.get(d.id).await, before);

    // Out of order: two is done, one still runs; then one hands over to three.
    report(&f, &token, "two", "success", "early").await.unwrap();
    assert_eq!(
        steps(f.get(d.id).await),
        pairs(&[("one", "running"), ("two", "success"), ("three", "pending")])
    );
    let one = report(&f, &token, "one", "success", "").await.unwrap();
    assert_eq!((one.name.as_str(), one.sequence), ("one", 1));
    assert_eq!(
        steps(f.get(d.id).await),
        pairs(&[("one", "success"), ("two", "success"), ("three", "running")])
    );
    // A finished step reported again is a new step (contract 4.10 step 6): a retry
    // shows every attempt; an unknown name is appended.
    let again = report(&f, &token, "one", "failure", "retried").await.unwrap();
    assert_ne!(again.id, one.id);
    assert_eq!(again.sequence, 4);
    let extra = report(&f, &token, "extra", "running", "").await.unwrap();
    assert_eq!(extra.sequence, 5);
    let now = f.get(d.id).await;
    assert_eq!(
        steps_of(&now),
        pairs(&[
            ("one", "success"),
            ("two", "success"),
            ("three", "running"),
            ("one", "failure"),
            ("extra", "running")
        ])
    );
    assert_eq!(now.steps[3].message, "retried");

    // Only its own deployment, only with a deployment token.
    let user = report(&f, &f.admin, "x", "success", "").await.unwrap_err();
    assert_eq!(user.code(), Code::PermissionDenied);
    let mut deploy = f.deploy().await;
    let other = deploy
        .finish_deployment(bearer(pb::FinishDeploymentRequest { id: d.id + 100 }, &token))
        .await
        .unwrap_err();
    assert_eq!(other.code(), Code::PermissionDenied);

    // Finish: finished at once (contract 2.13), failed as a step failed, unfinished
    // steps removed; no more reports; the script's later exit changes nothing.
    let finishing = deploy
        .finish_deployment(bearer(pb::FinishDeploymentRequest { id: 0 }, &token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status(&finishing), DeploymentStatus::Failed, "step one failed");
    assert!(finishing.finished.is_some());
    assert_eq!(finishing.failure_reason, "step \"one\" failed");
    assert_eq!(
        steps_of(&finishing),
        pairs(&[("one", "success"), ("two", "success"), ("one", "failure")]),
        "unfinished steps are removed at finish"
    );
    let late = report(&f, &token, "three", "success", "").await.unwrap_err();
    assert!(
        matches!(late.code(), Code::FailedPrecondition | Code::Unauthenticated),
        "{late:?}"
    );
    f.release("alpha", d.id);
    let done = f.finished(d.id).await;
    assert_eq!(done, finishing, "the script's exit changes nothing");
    let steps = deploy
        .list_steps(bearer(pb::ListStepsRequest { deployment_id: d.id }, &f.admin))
        .await
        .unwrap()
        .into_inner()
        .steps;
    assert_eq!(steps, done.steps);
    let missing = deploy
        .list_steps(bearer(pb::ListStepsRequest { deployment_id: 999_999 }, &f.admin))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    // A user finishing an ended deployment changes nothing.
    let unchanged = deploy
        .finish_deployment(bearer(pb::FinishDeploymentRequest { id: d.id }, &f.admin))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unchanged, done);
    wait_token_refused(&f, &token).await;
}

/// Reads events until one satisfies `last`.
async fn events_until(stream: &mut tonic::Streaming<pb::Event>, last: impl Fn(&pb::Event) -> bool) -> Vec<pb::Event> {
    let mut events = Vec::new();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .expect("an event within 30 s")
            .unwrap()
            .expect("the stream is open");
        let done = last(&event);
        events.push(event);
        if done {
            return events;
        }
    }
}

fn finished_event(id: i64) -> impl Fn(&pb::Event) -> bool {
    move |e| matches!(&e.payload, Some(Payload::Deployment(d)) if d.id == id && d.finished.is_some())
}

async fn watch(f: &Fixture, token: &str, request: pb::WatchEventsRequest) -> tonic::Streaming<pb::Event> {
    f.deploy()
        .await
        .watch_events(bearer(request, token))
        .await
        .unwrap()
        .into_inner()
}

async fn events_replay_then_follow_live_without_gaps(backend: Backend) {
    let many: String = (0..1500)
        .map(|i| format!("echo '{{\"name\": \"s{i}\", \"state\": \"success\"}}'\n"))
        .collect();
    let f = Fixture::start(backend, |dir| {
        write_service(
            dir,
            "alpha",
            json!({"steps": [{"name": "one"}, {"name": "two"}]}),
            "echo '{\"name\": \"one\", \"state\": \"success\"}'\necho '{\"name\": \"two\", \"state\": \"success\"}'\n",
        );
        write_service(dir, "beta", json!({}), &many);
    })
    .await;
    // A live watcher from before anything happened, and one that never reads until the end.
    let mut live = watch(&f, &f.admin, pb::WatchEventsRequest::default()).await;
    let mut slow = watch(&f, &f.admin, pb::WatchEventsRequest::default()).await;
    let first = f.start_service("alpha").await;
    let seen = events_until(&mut live, finished_event(first.id)).await;
    let kinds: Vec<String> = seen
        .iter()
        .map(|e| match &e.payload {
            Some(Payload::Deployment(d)) => format!("deployment {:?}", DeploymentStatus::try_from(d.status).unwrap()),
            Some(Payload::Step(s)) => format!("step {} {}{}", s.name, s.state, if e.deleted { " deleted" } else { "" }),
            None => "none".into(),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            // Started at once: announced once, already running (contract 2.11).
            "deployment Running",
            "step one running",
            "step two pending",
            "step one success",
            "step two running",
            "step two success",
            "deployment Succeeded",
        ]
    );
    assert!(seen.windows(2).all(|w| w[0].sequence < w[1].sequence));

    // Replay from the start, and resume after any event: the same events, in order.
    let mut replay = watch(
        &f,
        &f.admin,
        pb::WatchEventsRequest {
            after_sequence: -1,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(events_until(&mut replay, finished_event(first.id)).await, seen);
    let mut resumed = watch(
        &f,
        &f.admin,
        pb::WatchEventsRequest {
            after_sequence: seen[3].sequence,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(events_until(&mut resumed, finished_event(first.id)).await, seen[4..]);

    // A service token sees its own service only, replay then live, across a burst
    // that overruns the broadcast; the slow watcher misses nothing either.
    let beta = f.service_token("beta").await;
    let mut beta_watch = watch(
        &f,
        &beta,
        pb::WatchEventsRequest {
            after_sequence: -1,
            ..Default::default()
        },
    )
    .await;
    let burst = f.start_service("beta").await;
    let beta_events = events_until(&mut beta_watch, finished_event(burst.id)).await;
    assert!(beta_events.len() > 1500, "{}", beta_events.len());
    assert!(beta_events.windows(2).all(|w| w[0].sequence < w[1].sequence));
    for event in &beta_events {
        let deployment_id = match &event.payload {
            Some(Payload::Deployment(d)) => d.id,
            Some(Payload::Step(s)) => s.deployment_id,
            None => 0,
        };
        assert_eq!(deployment_id, burst.id, "only beta's events");
    }
    let everything = events_until(&mut slow, finished_event(burst.id)).await;
    let mut replay_all = watch(
        &f,
        &f.admin,
        pb::WatchEventsRequest {
            after_sequence: -1,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        events_until(&mut replay_all, finished_event(burst.id)).await,
        everything
    );
    let done = f.finished(burst.id).await;
    assert_eq!(done.steps.len(), 1500, "the never-reported placeholder is gone");

    let refused = f
        .deploy()
        .await
        .watch_events(bearer(
            pb::WatchEventsRequest {
                service: "alpha".into(),
                ..Default::default()
            },
            &beta,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
}

async fn who_may_start_and_read_what(backend: Backend) {
    let f = Fixture::start(backend, |dir| {
        write_service(
            dir,
            "alpha",
            json!({}),
            "echo '{\"name\": \"done\", \"state\": \"success\"}'\n",
        );
        write_service(dir, "beta", json!({}), "exit 0\n");
    })
    .await;
    let (alpha, beta) = (f.service_token("alpha").await, f.service_token("beta").await);
    let d = f.start_with(&alpha, json!({})).await.unwrap();
    f.finished(d.id).await;
    let mut deploy = f.deploy().await;
    let get = |id: i64, token: &str| bearer(pb::GetDeploymentRequest { id }, token);

    // Another service's deployment and a missing one look the same to a service token.
    let other = deploy.get_deployment(get(d.id, &beta)).await.unwrap_err();
    let missing = deploy.get_deployment(get(999_999, &beta)).await.unwrap_err();
    assert_eq!(
        (other.code(), other.message()),
        (Code::PermissionDenied, "Wrong service token")
    );
    assert_eq!((missing.code(), missing.message()), (other.code(), other.message()));
    let own = deploy.get_deployment(get(d.id, &alpha)).await.unwrap().into_inner();
    assert_eq!(own.id, d.id);
    assert_eq!(own.steps.len(), 1, "with its steps");
    let by_user = deploy.get_deployment(get(999_999, &f.admin)).await.unwrap_err();
    assert_eq!(by_user.code(), Code::NotFound);

    // Starting: a service token for an unknown service is not a valid token (as
    // fastDeploy's 401); a user names the service; a service token only its own.
    let mut ghost = user_claims("admin");
    ghost.token_type = TokenType::Service;
    ghost.service = Some("ghost".into());
    ghost.user = Some("admin".into());
    ghost.sub = "service:ghost".into();
    let ghost = f.stack.sign_with_real_key(&ghost);
    assert_eq!(
        f.start_with(&ghost, json!({})).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let start = |service: &str, token: &str| {
        bearer(
            pb::StartDeploymentRequest {
                env: None,
                service: service.into(),
            },
            token,
        )
    };
    assert_eq!(
        deploy
            .start_deployment(start("ghost", &f.admin))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert_eq!(
        deploy.start_deployment(start("", &f.admin)).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(
        deploy.start_deployment(start("beta", &alpha)).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    let by_admin = deploy
        .start_deployment(start("beta", &f.admin))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((by_admin.service.as_str(), by_admin.user.as_str()), ("beta", "admin"));
    assert_eq!(
        serde_json::to_value(by_admin.context.unwrap()).unwrap(),
        json!({"env": {}})
    );
    f.finished(by_admin.id).await;
    let _third = f.start_with(&alpha, json!({})).await.unwrap();

    // Listing: a user sees all, by pages in id order; a service token its own only.
    let list = |service: &str, size: u32, page: &str, token: &str| {
        bearer(
            pb::ListDeploymentsRequest {
                service: service.into(),
                page_size: size,
                page_token: page.into(),
                ..Default::default()
            },
            token,
        )
    };
    let mut ids = Vec::new();
    let mut page = String::new();
    loop {
        let answer = deploy
            .list_deployments(list("", 1, &page, &f.admin))
            .await
            .unwrap()
            .into_inner();
        ids.extend(answer.deployments.iter().map(|d| d.id));
        if answer.next_page_token.is_empty() {
            break;
        }
        page = answer.next_page_token;
    }
    assert_eq!(ids.len(), 3);
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    let as_beta = deploy
        .list_deployments(list("", 0, "", &beta))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        as_beta.deployments.iter().map(|d| d.id).collect::<Vec<_>>(),
        [by_admin.id]
    );
    let refused = deploy.list_deployments(list("alpha", 0, "", &beta)).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let bad = deploy.list_deployments(list("", 0, "x", &f.admin)).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let alpha_only = deploy
        .list_deployments(list("alpha", 0, "", &f.admin))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(alpha_only.deployments.len(), 2);

    // No token, a forged one, a config token: refused.
    let none = deploy
        .get_deployment(tonic::Request::new(pb::GetDeploymentRequest { id: d.id }))
        .await
        .unwrap_err();
    assert_eq!(none.code(), Code::Unauthenticated);
    let mut config: Claims = user_claims("admin");
    config.token_type = TokenType::Config;
    let config = f.stack.sign_with_real_key(&config);
    let refused = deploy.get_deployment(get(d.id, &config)).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
}

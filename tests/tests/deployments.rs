//! Deployments end to end over gRPC to the deploy service, with real deploy scripts in
//! a real services directory: runs and their steps, the config file a script gets,
//! failures of every kind, cancel, the per-service queue and a restart of the deploy
//! service mid-run. On SQLite and PostgreSQL. (The fixture: `tests::deploy_rpc`.)

use std::{path::Path, time::Duration};

use proto::{
    deploy::v1::{self as pb, DeploymentStatus},
    registry::v1::{ListDeployedServicesRequest, registry_service_client::RegistryServiceClient},
};
use serde_json::{Value, json};
use tests::deploy_rpc::*;
use tests::grpc::{bearer, channel, claims_of};
use tests::{Backend, on_every_backend};
use tonic::Code;

on_every_backend!(
    a_successful_run_reports_steps_and_hides_its_config,
    failures_end_with_a_failed_step_saying_why,
    cancel_stops_the_whole_process_group,
    one_run_per_service_and_the_rest_queued_in_order,
    a_restart_ends_the_interrupted_run_and_runs_the_queued_one,
);

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

//! Deploy service figures, with the real auth, registry and deploy services running
//! in this process on loopback (SQLite files in a temp dir) and real shell scripts:
//!
//! * start-to-spawn: `StartDeployment` sent → the script's first command (`date`)
//!   runs, p50/p99 (target: p50 under 10 ms); also the `StartDeployment` round trip;
//! * step reports ingested per second on SQLite: from a script's stdout (batched per
//!   transaction), and through the `ReportStep` RPC (8 concurrent callers) (target:
//!   5,000/s);
//! * event delivery: a step report committed → the `Event` reaching a watcher, p50/p99;
//! * output: a script printing 1,000,000 lines (`seq`), run start to deployment end,
//!   against the same `seq` with its output thrown away (issue 14: not slowed).
//!
//! `cargo bench -p deploy-service --bench deploy`

use std::{
    path::Path,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context;
use clap::Parser;
use common::identity::Credential;
use proto::{
    auth::v1::{LoginRequest, auth_service_client::AuthServiceClient},
    deploy::v1::{self as pb, deploy_service_client::DeployServiceClient, event::Payload},
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

const SPAWNS: usize = 200;
const WARMUP: usize = 10;
const STDOUT_REPORTS: usize = 20_000;
/// Deployments of different services reporting at once, and reports each.
const PARALLEL: usize = 8;
const PARALLEL_REPORTS: usize = 2_500;
const RPC_SECONDS: u64 = 3;
const RPC_CALLERS: usize = 8;
const EVENTS: usize = 1_000;
const OUTPUT_LINES: usize = 1_000_000;

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(bench())
}

fn write_service(services: &Path, name: &str, script: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = services.join(name);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("config.json"), r#"{"timeout_seconds": 600}"#)?;
    std::fs::write(dir.join("deploy.sh"), format!("#!/bin/sh\n{script}"))?;
    std::fs::set_permissions(dir.join("deploy.sh"), std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// The deployment id, from the config file's name (`deploy_<id>_<random>.json`),
/// with shell builtins only.
const ID: &str = "f=${2##*/}; id=${f#deploy_}; id=${id%%_*}\n";

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

fn bearer<T>(message: T, token: &str) -> anyhow::Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    Ok(request)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn summary(name: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    println!(
        "{name}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (n = {})",
        percentile(&ms, 0.5),
        percentile(&ms, 0.99),
        ms.last().copied().unwrap_or(f64::NAN),
        ms.len()
    );
}

struct System {
    deploy: DeployServiceClient<Channel>,
    user: String,
    services: std::path::PathBuf,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

async fn start_system() -> anyhow::Result<System> {
    let dir = tempfile::tempdir()?;
    let services = dir.path().join("services");
    std::fs::create_dir_all(&services)?;
    write_service(&services, "spawn", &format!("{ID}date +%s%N > \"${{0%/*}}/t-$id\"\n"))?;
    write_service(&services, "output", &format!("seq 1 {OUTPUT_LINES}\n"))?;
    write_service(
        &services,
        "stdout",
        &format!(
            "i=0\nwhile [ $i -lt {STDOUT_REPORTS} ]; do echo \"{{\\\"name\\\": \\\"s$i\\\", \\\"state\\\": \\\"success\\\"}}\"; i=$((i+1)); done\n"
        ),
    )?;
    for n in 0..PARALLEL {
        write_service(
            &services,
            &format!("par{n}"),
            &format!(
                "i=0\nwhile [ $i -lt {PARALLEL_REPORTS} ]; do echo \"{{\\\"name\\\": \\\"s$i\\\", \\\"state\\\": \\\"success\\\"}}\"; i=$((i+1)); done\n"
            ),
        )?;
    }
    write_service(
        &services,
        "hold",
        &format!(
            "{ID}cat \"$2\" > \"${{0%/*}}/config-$id\"\nwhile [ ! -e \"${{0%/*}}/release-$id\" ]; do sleep 0.05; done\n"
        ),
    )?;
    let credential = dir.path().join("deploy.key");
    Credential::create_if_missing(&credential)?;
    let registry_credential = dir.path().join("registry.key");
    Credential::create_if_missing(&registry_credential)?;
    let registry_credential = registry_credential.to_string_lossy().into_owned();
    let [auth, registry, deploy] = [
        TcpListener::bind("127.0.0.1:0").await?,
        TcpListener::bind("127.0.0.1:0").await?,
        TcpListener::bind("127.0.0.1:0").await?,
    ];
    let url = |l: &TcpListener| l.local_addr().map(|a| format!("http://{a}"));
    let (auth_url, registry_url, deploy_url) = (url(&auth)?, url(&registry)?, url(&deploy)?);
    let data = dir.path().to_string_lossy().into_owned();
    let credential = credential.to_string_lossy().into_owned();
    let services_arg = services.to_string_lossy().into_owned();
    let shutdown = CancellationToken::new();

    let auth_config = auth_service::Config::try_parse_from([
        "auth-service",
        "--data-dir",
        &data,
        "--registry-url",
        &registry_url,
        "--deploy-credential-file",
        &credential,
        "--registry-credential-file",
        &registry_credential,
        "--admin-user",
        "admin",
        "--admin-password",
        "bench-password",
    ])?;
    let registry_config = registry_service::Config::try_parse_from([
        "registry-service",
        "--data-dir",
        &data,
        "--services-dir",
        &services_arg,
        "--auth-url",
        &auth_url,
        "--deploy-credential-file",
        &credential,
        "--credential-file",
        &registry_credential,
    ])?;
    let deploy_config = deploy_service::Config::try_parse_from([
        "deploy-service",
        "--data-dir",
        &data,
        "--services-dir",
        &services_arg,
        "--auth-url",
        &auth_url,
        "--registry-url",
        &registry_url,
        "--credential-file",
        &credential,
        "--max-running",
        "8",
    ])?;
    tokio::spawn(auth_service::run(auth_config, auth, shutdown.clone()));
    tokio::spawn(registry_service::run(registry_config, registry, shutdown.clone()));
    tokio::spawn(deploy_service::run(deploy_config, deploy, shutdown.clone()));

    let connect = |url: String| async move {
        for _ in 0..500 {
            if let Ok(channel) = tonic::transport::Endpoint::from_shared(url.clone())?.connect().await {
                return Ok(channel);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        anyhow::bail!("{url} did not start")
    };
    let mut auth_client = AuthServiceClient::new(connect(auth_url).await?);
    let mut user = None;
    for _ in 0..500 {
        let login = LoginRequest {
            username: "admin".into(),
            password: "bench-password".into(),
        };
        if let Ok(answer) = auth_client.login(login).await {
            user = Some(answer.into_inner().access_token);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let user = user.context("no login")?;
    let deploy = DeployServiceClient::new(connect(deploy_url).await?);
    // The backend verifies tokens with keys it fetches; wait until it accepts ours.
    let mut probe = deploy.clone();
    for _ in 0..500 {
        let request = bearer(pb::ListDeploymentsRequest::default(), &user)?;
        if probe.list_deployments(request).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(System {
        deploy,
        user,
        services,
        shutdown,
        _dir: dir,
    })
}

impl System {
    async fn start(&self, service: &str) -> anyhow::Result<pb::Deployment> {
        let request = pb::StartDeploymentRequest {
            env: None,
            service: service.into(),
        };
        Ok(self
            .deploy
            .clone()
            .start_deployment(bearer(request, &self.user)?)
            .await?
            .into_inner())
    }

    async fn finished(&self, id: i64) -> anyhow::Result<pb::Deployment> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let request = bearer(pb::GetDeploymentRequest { id }, &self.user)?;
            let deployment = self.deploy.clone().get_deployment(request).await?.into_inner();
            if deployment.finished.is_some() {
                return Ok(deployment);
            }
            anyhow::ensure!(Instant::now() < deadline, "deployment {id} did not finish");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    async fn wait_file(&self, path: &Path) -> anyhow::Result<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(text) = std::fs::read_to_string(path)
                && text.ends_with('\n')
            {
                return Ok(text);
            }
            anyhow::ensure!(Instant::now() < deadline, "{} never written", path.display());
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
}

async fn bench() -> anyhow::Result<()> {
    let system = start_system().await?;
    println!("deploy service benchmark (in-process auth, registry and deploy services; SQLite)");

    // Start-to-spawn.
    let mut spawn_ms = Vec::new();
    let mut answer_ms = Vec::new();
    for i in 0..WARMUP + SPAWNS {
        let sent = now_ns();
        let clock = Instant::now();
        let deployment = system.start("spawn").await?;
        let answered = clock.elapsed();
        let ran: i128 = system
            .wait_file(&system.services.join("spawn").join(format!("t-{}", deployment.id)))
            .await?
            .trim()
            .parse()?;
        let done = system.finished(deployment.id).await?;
        anyhow::ensure!(
            done.status == pb::DeploymentStatus::Succeeded as i32,
            "spawn run failed: {done:?}"
        );
        if i >= WARMUP {
            spawn_ms.push((ran - sent) as f64 / 1e6);
            answer_ms.push(answered.as_secs_f64() * 1e3);
        }
    }
    summary("StartDeployment round trip", answer_ms);
    summary(
        "start-to-spawn (StartDeployment sent -> script's first command ran)",
        spawn_ms,
    );

    // Step reports from a script's stdout.
    let deployment = system.start("stdout").await?;
    let done = system.finished(deployment.id).await?;
    anyhow::ensure!(done.steps.len() == STDOUT_REPORTS, "{} steps", done.steps.len());
    let span = |a: &Option<proto::wkt::Timestamp>, b: &Option<proto::wkt::Timestamp>| {
        let (a, b) = (a.unwrap_or_default(), b.unwrap_or_default());
        (b.seconds - a.seconds) as f64 + f64::from(b.nanos - a.nanos) / 1e9
    };
    let seconds = span(&done.run_started, &done.finished);
    println!(
        "step reports from stdout: {STDOUT_REPORTS} in {seconds:.2} s = {:.0} reports/s (script start to deployment end)",
        STDOUT_REPORTS as f64 / seconds
    );

    // Output lines: the run against `seq` alone.
    let alone = std::time::Instant::now();
    std::process::Command::new("seq")
        .arg(OUTPUT_LINES.to_string())
        .stdout(std::process::Stdio::null())
        .status()?;
    let alone = alone.elapsed().as_secs_f64();
    let deployment = system.start("output").await?;
    let done = system.finished(deployment.id).await?;
    let seconds = span(&done.run_started, &done.finished);
    println!(
        "output: {OUTPUT_LINES} lines in {seconds:.2} s = {:.0} lines/s (script start to deployment end, \
         its log stored); the same seq alone {alone:.2} s",
        OUTPUT_LINES as f64 / seconds
    );

    // Step reports from several scripts at once.
    let mut started = Vec::new();
    for n in 0..PARALLEL {
        started.push(system.start(&format!("par{n}")).await?);
    }
    let mut first_start = f64::MAX;
    let mut last_end = f64::MIN;
    let seconds_of = |t: &Option<proto::wkt::Timestamp>| {
        let t = t.unwrap_or_default();
        t.seconds as f64 + f64::from(t.nanos) / 1e9
    };
    for deployment in &started {
        let done = system.finished(deployment.id).await?;
        anyhow::ensure!(done.steps.len() == PARALLEL_REPORTS, "{} steps", done.steps.len());
        first_start = first_start.min(seconds_of(&done.run_started));
        last_end = last_end.max(seconds_of(&done.finished));
    }
    let total = (PARALLEL * PARALLEL_REPORTS) as f64;
    println!(
        "step reports from stdout, {PARALLEL} deployments at once: {total} in {:.2} s = {:.0} reports/s",
        last_end - first_start,
        total / (last_end - first_start)
    );

    // Step reports through ReportStep, and event delivery to a watcher.
    let hold = system.start("hold").await?;
    let config = system
        .wait_file(&system.services.join("hold").join(format!("config-{}", hold.id)))
        .await;
    // The config file ends with "}\n"; wait_file waits for the final newline.
    let config: serde_json::Value = serde_json::from_str(&config?)?;
    let token = config["access_token"].as_str().context("access_token")?.to_owned();
    let report = |name: String| pb::ReportStepRequest {
        name,
        state: "success".into(),
        ..Default::default()
    };
    let clock = Instant::now();
    let mut callers = Vec::new();
    for c in 0..RPC_CALLERS {
        let (mut client, token) = (system.deploy.clone(), token.clone());
        callers.push(tokio::spawn(async move {
            let mut sent = 0usize;
            while clock.elapsed() < Duration::from_secs(RPC_SECONDS) {
                let request = bearer(report(format!("rpc-{c}-{sent}")), &token)?;
                client.report_step(request).await?;
                sent += 1;
            }
            anyhow::Ok(sent)
        }));
    }
    let mut total = 0;
    for caller in callers {
        total += caller.await??;
    }
    let elapsed = clock.elapsed().as_secs_f64();
    println!(
        "step reports through ReportStep ({RPC_CALLERS} callers): {total} in {elapsed:.2} s = {:.0} reports/s",
        total as f64 / elapsed
    );

    let watch = pb::WatchEventsRequest {
        deployment_id: hold.id,
        ..Default::default()
    };
    let mut stream = system
        .deploy
        .clone()
        .watch_events(bearer(watch, &system.user)?)
        .await?
        .into_inner();
    let receiver = tokio::spawn(async move {
        let mut latencies = Vec::new();
        while latencies.len() < EVENTS {
            let Some(event) = stream.message().await? else { break };
            let arrived = now_ns();
            if let Some(Payload::Step(step)) = event.payload
                && step.name.starts_with("event-")
                && let Some(at) = step.finished
            {
                let committed = i128::from(at.seconds) * 1_000_000_000 + i128::from(at.nanos);
                latencies.push((arrived - committed) as f64 / 1e6);
            }
        }
        anyhow::Ok(latencies)
    });
    let mut client = system.deploy.clone();
    for i in 0..EVENTS {
        client
            .report_step(bearer(report(format!("event-{i}")), &token)?)
            .await?;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    summary("event delivery (step stored -> watcher received)", receiver.await??);
    std::fs::write(system.services.join("hold").join(format!("release-{}", hold.id)), "")?;
    system.finished(hold.id).await?;
    system.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}

//! `slipway up --database-url postgres://… --replicas N`: every part as N processes
//! on loopback sharing one PostgreSQL database, the gateways printed, a deployment
//! started through one gateway seen through the other, a killed replica started
//! again; and `--replicas` above 1 refused without PostgreSQL.

use std::{
    net::SocketAddr,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use tests::{
    Backend, TestDatabase,
    process::{Proc, bin_dir},
    up_fixture::{login, proc_log, wait_for},
    wait_until,
};

const PASSWORD: &str = "replicas-admin-password";

fn addr_of(data_dir: &Path, name: &str) -> Option<SocketAddr> {
    let file = data_dir.join("run").join(format!("{name}.addr"));
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn up_runs_replicas_of_every_part_on_one_postgres_database() {
    if !Backend::Postgres.available().await {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let database = TestDatabase::create(Backend::Postgres, dir.path(), "up").await.unwrap();
    let args = ["up", "--http", "127.0.0.1:0", "--replicas", "2", "--data-dir"]
        .map(String::from)
        .into_iter()
        .chain([data_dir.to_string_lossy().into_owned()])
        .collect::<Vec<_>>();
    let envs = [
        ("SLIPWAY_DATABASE_URL", database.url.clone()),
        ("SLIPWAY_ADMIN_PASSWORD", PASSWORD.to_owned()),
    ];
    let mut up = Proc::spawn("up", "slipway", &args, &envs, dir.path());
    wait_for("slipway is up", &mut up, || {
        proc_log(dir.path(), "up").contains("slipway is up").then_some(())
    });
    let log = proc_log(dir.path(), "up");
    for part in ["auth", "registry", "deploy", "gateway"] {
        for n in 1..=2 {
            let name = format!("{part}-{n}");
            assert!(log.contains(&format!("  {name:<10} ")), "{name} not printed:\n{log}");
            assert!(data_dir.join("run").join(format!("{name}.pid")).exists(), "{name}.pid");
        }
    }
    assert!(!log.contains("auth.db"), "SQLite in a PostgreSQL run:\n{log}");
    let gateways = [
        addr_of(&data_dir, "gateway-1").unwrap(),
        addr_of(&data_dir, "gateway-2").unwrap(),
    ];

    // A deployment started through one gateway is seen through the other.
    let token = login(gateways[0], "admin", PASSWORD).await.expect("admin login");
    let client = reqwest::Client::new();
    let started: Value = client
        .post(format!("http://{}/v1/deployments", gateways[1]))
        .bearer_auth(&token)
        .json(&serde_json::json!({"service": "hello"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = started["id"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| started["id"].to_string());
    wait_until(Duration::from_secs(60), async || {
        let got: Value = client
            .get(format!("http://{}/v1/deployments/{id}", gateways[0]))
            .bearer_auth(&token)
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        match got["status"].as_str() {
            Some("DEPLOYMENT_STATUS_SUCCEEDED") => Ok(()),
            _ => Err(format!("deployment {id}: {got}\n{}", up.log_text())),
        }
    })
    .await;

    // A replica killed is started again on its address while the rest serve.
    let pid: i32 = std::fs::read_to_string(data_dir.join("run").join("deploy-1.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    wait_for("deploy-1 restarted", &mut up, || {
        proc_log(dir.path(), "up")
            .contains("deploy-1 restarted on")
            .then_some(())
    });
    assert!(
        up.stop(Duration::from_secs(30)),
        "slipway up needed SIGKILL:\n{}",
        up.log_text()
    );
}

#[test]
fn replicas_without_postgres_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(bin_dir().join("slipway"))
        .args(["up", "--replicas", "2", "--http", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env_remove("SLIPWAY_DATABASE_URL")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let text = String::from_utf8_lossy(&output.stderr).into_owned() + &String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("--replicas 2 needs --database-url postgres://"), "{text}");
}

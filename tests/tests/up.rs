//! `slipway up` as a newcomer runs it: the whole system from one command, the admin
//! bootstrap, `slipway users create`, a clean stop on SIGTERM, and a second `up` on
//! the same data dir keeping everything.

use std::{
    net::SocketAddr,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use tests::process::{Proc, bin_dir};

fn wait_for<T>(what: &str, proc: &mut Proc, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(value) = check() {
            return value;
        }
        if let Ok(Some(status)) = proc.child.try_wait() {
            panic!(
                "slipway up exited ({status}) while waiting for {what}:\n{}",
                proc.log_text()
            );
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}:\n{}",
            proc.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start_up(data_dir: &Path, log_dir: &Path, name: &str, envs: &[(&str, String)]) -> (Proc, SocketAddr) {
    let addr_file = data_dir.join("run").join("gateway.addr");
    let _ = std::fs::remove_file(&addr_file);
    let args = ["up", "--data-dir", &data_dir.to_string_lossy(), "--http", "127.0.0.1:0"].map(String::from);
    let mut proc = Proc::spawn(name, "slipway", &args, envs, log_dir);
    let addr = wait_for("the gateway address", &mut proc, || {
        std::fs::read_to_string(&addr_file)
            .ok()
            .and_then(|t| t.trim().parse().ok())
    });
    wait_for("slipway is up", &mut proc, || {
        proc_log(log_dir, name).contains("slipway is up").then_some(())
    });
    (proc, addr)
}

fn proc_log(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default()
}

async fn login(addr: SocketAddr, user: &str, password: &str) -> Option<String> {
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/token"))
        .form(&[("username", user), ("password", password)])
        .send()
        .await
        .ok()?;
    if response.status() != 200 {
        return None;
    }
    let body: Value = response.json().await.ok()?;
    body["access_token"].as_str().map(str::to_owned)
}

async fn me(addr: SocketAddr, token: &str) -> Value {
    reqwest::Client::new()
        .get(format!("http://{addr}/users/me"))
        .bearer_auth(token)
        .send()
        .await
        .expect("GET /users/me")
        .json()
        .await
        .expect("json")
}

#[tokio::test(flavor = "multi_thread")]
async fn up_runs_the_whole_system_and_keeps_data_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");

    // First start: no password given, so one is generated and printed once.
    let (mut up, addr) = start_up(&data_dir, dir.path(), "up-1", &[]);
    let log = proc_log(dir.path(), "up-1");
    let password = log
        .lines()
        .find_map(|l| l.split("with password ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no generated password printed:\n{log}"))
        .to_owned();
    let token = login(addr, "admin", &password)
        .await
        .expect("admin login with the printed password");
    assert_eq!(me(addr, &token).await["name"], "admin");

    // SIGTERM stops up and every process it started.
    assert!(
        up.stop(Duration::from_secs(20)),
        "slipway up needed SIGKILL:\n{}",
        up.log_text()
    );
    assert!(up.child.wait().unwrap().success(), "{}", up.log_text());
    assert!(
        reqwest::get(format!("http://{addr}/healthz")).await.is_err(),
        "gateway still answers after stop"
    );
    let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    let data = data_dir.to_string_lossy();
    let leftovers: Vec<_> = String::from_utf8_lossy(&ps.stdout)
        .lines()
        .filter(|l| l.contains("serve") && l.contains(&*data))
        .map(String::from)
        .collect();
    assert!(leftovers.is_empty(), "processes left running: {leftovers:?}");

    // `slipway users create` on the same data dir, password from the environment.
    let status = Command::new(bin_dir().join("slipway"))
        .args(["users", "create", "bob", "--data-dir", &data])
        .env("SLIPWAY_PASSWORD", "bobs-password")
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    // A second create of the same name fails without changing anything.
    let status = Command::new(bin_dir().join("slipway"))
        .args(["users", "create", "bob", "--data-dir", &data])
        .env("SLIPWAY_PASSWORD", "another-password")
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success());

    // Second start on the same data dir: the admin and bob are still there, and the
    // admin password given now does not replace the existing one.
    let envs = [("SLIPWAY_ADMIN_PASSWORD", "ignored-because-admin-exists".to_owned())];
    let (mut up, addr) = start_up(&data_dir, dir.path(), "up-2", &envs);
    assert!(login(addr, "admin", &password).await.is_some(), "{}", up.log_text());
    assert!(login(addr, "admin", "ignored-because-admin-exists").await.is_none());
    let bob = login(addr, "bob", "bobs-password").await.expect("bob logs in");
    assert_eq!(me(addr, &bob).await["name"], "bob");
    assert!(login(addr, "bob", "another-password").await.is_none());
    assert!(!up.log_text().contains(&password), "the password was printed again");
    assert!(up.stop(Duration::from_secs(20)));
}

//! `slipway up` started as a user starts it (`slipway up --http 127.0.0.1:0 …`), with
//! helpers to wait on its output and log in through its gateway.

use std::{
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::process::Proc;

pub fn wait_for<T>(what: &str, proc: &mut Proc, mut check: impl FnMut() -> Option<T>) -> T {
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

pub fn start_up(data_dir: &Path, log_dir: &Path, name: &str, envs: &[(&str, String)]) -> (Proc, SocketAddr) {
    let args = ["--data-dir", &data_dir.to_string_lossy()].map(String::from);
    start_up_with(data_dir, log_dir, name, &args, envs, None)
}

/// `slipway up --http 127.0.0.1:0 <args>` in `cwd`; `data_dir` is where it is expected
/// to put its data (and so the gateway's address file).
pub fn start_up_with(
    data_dir: &Path,
    log_dir: &Path,
    name: &str,
    args: &[String],
    envs: &[(&str, String)],
    cwd: Option<&Path>,
) -> (Proc, SocketAddr) {
    let addr_file = data_dir.join("run").join("gateway.addr");
    let _ = std::fs::remove_file(&addr_file);
    let mut all = ["up", "--http", "127.0.0.1:0"].map(String::from).to_vec();
    all.extend_from_slice(args);
    let mut proc = Proc::spawn_in(name, "slipway", &all, envs, log_dir, cwd);
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

pub fn proc_log(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default()
}

pub async fn login(addr: SocketAddr, user: &str, password: &str) -> Option<String> {
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

pub async fn me(addr: SocketAddr, token: &str) -> Value {
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

//! `slipway up` supervises what it starts: a service killed with SIGKILL is started
//! again on its address while the others keep serving, and one that keeps dying
//! stops `up` with the reason.

use std::{net::SocketAddr, path::Path, process::Command, time::Duration};

use tests::{
    process::Proc,
    up_fixture::{login, proc_log, start_up, wait_for},
    wait_until,
};

const PASSWORD: &str = "supervised-admin-password";

fn pid_of(data_dir: &Path, service: &str) -> String {
    let file = data_dir.join("run").join(format!("{service}.pid"));
    let pid = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    pid.trim().to_owned()
}

fn kill_9(pid: &str) {
    let status = Command::new("kill").args(["-9", pid]).status().unwrap();
    assert!(status.success(), "kill -9 {pid}");
}

/// Kills `service` and waits until `up` has started it again (its `restarted` line
/// seen for the `nth` time).
fn kill_and_wait_for_restart(up: &mut Proc, dir: &Path, data_dir: &Path, service: &str, nth: usize) {
    let before = pid_of(data_dir, service);
    kill_9(&before);
    let restarted = format!("{service} restarted on");
    wait_for(&format!("{service} restarted ({nth})"), up, || {
        (proc_log(dir, "up").matches(&restarted).count() >= nth).then_some(())
    });
    assert_ne!(pid_of(data_dir, service), before, "a new process");
}

async fn services_status(addr: SocketAddr, token: &str) -> Result<(), String> {
    let response = reqwest::Client::new()
        .get(format!("http://{addr}/v1/services"))
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    match response.status().as_u16() {
        200 => Ok(()),
        status => Err(format!("GET /v1/services: {status}")),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_service_is_restarted_and_the_others_keep_serving() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let envs = [("SLIPWAY_ADMIN_PASSWORD", PASSWORD.to_owned())];
    let (mut up, addr) = start_up(&data_dir, dir.path(), "up", &envs);
    let token = login(addr, "admin", PASSWORD).await.expect("admin logs in");
    services_status(addr, &token).await.unwrap();

    // The registry dies: up says so and starts it again; reads through the gateway
    // come back, and the auth service never stopped answering.
    kill_9(&pid_of(&data_dir, "registry"));
    assert!(login(addr, "admin", PASSWORD).await.is_some(), "auth still serves");
    wait_for("the registry restarted", &mut up, || {
        proc_log(dir.path(), "up")
            .contains("registry restarted on")
            .then_some(())
    });
    let log = proc_log(dir.path(), "up");
    assert!(log.contains("registry exited unexpectedly"), "{log}");
    wait_until(Duration::from_secs(10), async || services_status(addr, &token).await).await;

    // The auth service and the gateway too; the gateway comes back on its address.
    kill_and_wait_for_restart(&mut up, dir.path(), &data_dir, "auth", 1);
    wait_until(Duration::from_secs(10), async || {
        match login(addr, "admin", PASSWORD).await {
            Some(_) => Ok(()),
            None => Err("no login yet".to_owned()),
        }
    })
    .await;
    kill_and_wait_for_restart(&mut up, dir.path(), &data_dir, "gateway", 1);
    wait_until(Duration::from_secs(10), async || services_status(addr, &token).await).await;
    assert!(up.child.try_wait().unwrap().is_none(), "up still runs");
    assert!(up.stop(Duration::from_secs(20)), "{}", up.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_that_keeps_dying_stops_up_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let envs = [("SLIPWAY_ADMIN_PASSWORD", PASSWORD.to_owned())];
    let (mut up, _) = start_up(&data_dir, dir.path(), "up", &envs);
    // Four exits are restarted (250 ms, 500 ms, 1 s, 2 s later); the fifth within a
    // minute is one too many.
    for nth in 1..=4 {
        kill_and_wait_for_restart(&mut up, dir.path(), &data_dir, "registry", nth);
    }
    kill_9(&pid_of(&data_dir, "registry"));
    wait_until(Duration::from_secs(30), async || match up.child.try_wait() {
        Ok(Some(status)) => Ok(status),
        _ => Err("up still runs".to_owned()),
    })
    .await;
    let status = up.child.wait().unwrap();
    assert!(!status.success(), "up fails");
    let log = proc_log(dir.path(), "up");
    assert!(
        log.contains("registry exited 5 times within 60 s"),
        "the reason:\n{log}"
    );
    // And stopped the others.
    for service in ["auth", "deploy", "gateway"] {
        let pid = pid_of(&data_dir, service);
        let alive = Path::new("/proc").join(&pid).exists()
            && !std::fs::read_to_string(Path::new("/proc").join(&pid).join("stat"))
                .unwrap_or_default()
                .contains(") Z ");
        assert!(!alive, "{service} ({pid}) still runs");
    }
}

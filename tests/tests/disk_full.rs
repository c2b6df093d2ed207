//! A full disk and a read-only data directory under the deploy service (its data
//! directory and SQLite database on a tmpfs of 8 MiB the test mounts, fills and
//! remounts read-only). With the disk full, starting a deployment and reporting a step
//! are refused with a 503 that says why (never a 500), reads keep working, nothing is
//! half-written, and once space returns writes succeed again with no restart. On a
//! read-only data dir the service stops at start saying why, the others keep serving,
//! and it recovers when restarted on a writable one. SQLite only: a PostgreSQL
//! server's disk is not the test's to fill. Needs root on Linux: skipped with a notice
//! elsewhere, required in CI (`small_fs`).

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tests::{
    Backend, Process, Stack,
    small_fs::SmallFs,
    support::{self, call, gated_config, gated_script, passing_script, release, spool, steps_config, write_service},
    wait_until,
};

/// A step report as fastDeploy's scripts send it.
fn step(message: &str) -> Value {
    json!({"name": "build", "state": "running", "started": "2026-01-01T00:00:00Z", "finished": "2026-01-01T00:00:01Z", "message": message})
}

struct Fixture {
    stack: Stack,
    quick: String,
    admin: String,
    /// The deployment token of a running `gated` deployment, its id and the service
    /// token that started it.
    deployment: String,
    gated: i64,
    gated_token: String,
}

async fn fixture(fs: &SmallFs) -> Fixture {
    let stack = Stack::builder(Backend::Sqlite)
        .services(|root| {
            let spool = spool(root.parent().unwrap());
            write_service(root, "quick", steps_config(), &passing_script());
            write_service(root, "gated", steps_config(), &gated_script(&spool, "gated"));
        })
        .data_dir(Process::Deploy, fs.path())
        .start()
        .await;
    let admin = stack.admin_token().await;
    let quick = support::service_token(&stack, &admin, "quick").await;
    let id = support::start(&stack, &quick, None).await["id"].as_i64().unwrap();
    support::wait_finished(&stack, &quick, id).await;
    let gated_token = support::service_token(&stack, &admin, "gated").await;
    let gated = support::start(&stack, &gated_token, None).await["id"].as_i64().unwrap();
    let config = gated_config(&stack, &spool(stack.dir.path()), "gated").await;
    let deployment = config["access_token"].as_str().unwrap().to_owned();
    Fixture {
        stack,
        quick,
        admin,
        deployment,
        gated,
        gated_token,
    }
}

/// Writes are refused with a 503 whose detail says why; reads are answered.
async fn writes_refused_reads_served(f: &Fixture, why: &str) -> Vec<(u16, String)> {
    let mut refusals = Vec::new();
    for (token, path, body) in [
        (&f.quick, "/deployments/", None),
        (&f.deployment, "/steps/", Some(step("while refused"))),
    ] {
        let (status, _, answer) = call(&f.stack, Method::POST, path, Some(token), body).await;
        let detail = answer["detail"].as_str().unwrap_or_default().to_owned();
        assert_eq!(status, 503, "POST {path} with {why}: {answer}\n{}", f.stack.logs());
        assert!(detail.contains("storage"), "POST {path} with {why}: {detail}");
        refusals.push((status, detail));
    }
    let (status, list) = support::get(&f.stack, "/deployments/", &f.admin).await;
    assert_eq!(status, 200, "listing with {why}: {list}");
    let (status, steps) = support::get(&f.stack, &format!("/steps/?deployment_id={}", f.gated), &f.admin).await;
    assert_eq!(status, 200, "reading steps with {why}: {steps}");
    refusals
}

/// Writes succeed again without a restart, the gated run finishes, and every stored
/// deployment is whole: finished with both steps, or the gated one.
async fn recovered(f: &Fixture) {
    let id = wait_until(Duration::from_secs(10), async || {
        match call(&f.stack, Method::POST, "/deployments/", Some(&f.quick), None).await {
            (200, _, started) => Ok(started["id"].as_i64().unwrap()),
            (status, _, answer) => Err(format!("start still refused: {status} {answer}")),
        }
    })
    .await;
    support::wait_finished(&f.stack, &f.quick, id).await;
    let (status, _, answer) = call(
        &f.stack,
        Method::POST,
        "/steps/",
        Some(&f.deployment),
        Some(step("after")),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let (_, list) = support::get(&f.stack, "/deployments/", &f.admin).await;
    for deployment in list.as_array().unwrap() {
        let id = deployment["id"].as_i64().unwrap();
        let (_, steps) = support::get(&f.stack, &format!("/steps/?deployment_id={id}"), &f.admin).await;
        assert_eq!(
            support::steps_of(&steps).len(),
            2,
            "deployment {id} is half-written: {steps}"
        );
        if id != f.gated {
            assert!(
                !deployment["finished"].is_null(),
                "deployment {id} never finished: {deployment}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_refuses_writes_cleanly_and_recovers_when_space_returns() {
    let Some(fs) = SmallFs::mount("8m") else { return };
    let mut f = fixture(&fs).await;
    let filler = fs.fill();
    let refusals = writes_refused_reads_served(&f, "a full disk").await;
    std::fs::remove_file(&filler).unwrap();
    recovered(&f).await;
    assert!(
        f.stack.proc("deploy").child.try_wait().unwrap().is_none(),
        "the deploy service exited"
    );
    release(&spool(f.stack.dir.path()), "gated");
    support::wait_finished(&f.stack, &f.gated_token, f.gated).await;
    println!("disk full: refused {refusals:?}; recovered once the filler was deleted");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_only_data_dir_stops_the_service_with_its_reason_and_others_serve() {
    let Some(fs) = SmallFs::mount("8m") else { return };
    let mut f = fixture(&fs).await;
    // A file system cannot be made read-only while a file on it is open for writing
    // (the kernel refuses the remount), so the service restarts on the read-only one,
    // as after a reboot on a volume that came back read-only. SQLite in WAL mode cannot
    // even read there: the service must say why it cannot start.
    assert!(
        f.stack.proc("deploy").stop(Duration::from_secs(10)),
        "the deploy service did not stop"
    );
    fs.remount(true);
    let deploy = f.stack.proc("deploy");
    deploy.restart();
    let exit = wait_until(Duration::from_secs(30), async || {
        deploy
            .child
            .try_wait()
            .unwrap()
            .ok_or("the deploy service still runs on a read-only data dir".to_owned())
    })
    .await;
    assert!(!exit.success());
    let log = f.stack.log("deploy");
    // Which write fails first depends on what SQLite left beside the database at the
    // clean stop (its WAL files): the database's open, or the runs directory's creation.
    assert!(
        log.contains("service failed") && log.contains("Read-only file system"),
        "{log}"
    );
    // The rest of the system serves; the deploy service's routes are 503.
    let (status, _, answer) = call(&f.stack, Method::POST, "/deployments/", Some(&f.quick), None).await;
    assert_eq!(status, 503, "{answer}");
    let (status, services) = support::get(&f.stack, "/services/", &f.admin).await;
    assert_eq!(status, 200, "{services}");
    // Writable again: the restarted service takes writes, and what it stored before is whole.
    fs.remount(false);
    f.stack.restart("deploy").await;
    let (status, _, answer) = call(&f.stack, Method::POST, "/deployments/", Some(&f.quick), None).await;
    assert_eq!(status, 200, "{answer}");
    let id = answer["id"].as_i64().unwrap();
    support::wait_finished(&f.stack, &f.quick, id).await;
    println!(
        "read-only data dir: the deploy service stopped with {exit} saying why; others served; recovered on restart"
    );
}

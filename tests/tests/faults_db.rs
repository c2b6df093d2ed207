//! The database under load (issue 16, item 3). PostgreSQL restarts: the test's own
//! server (never the machine's shared one) is stopped (`pg_ctl stop -m fast`, then
//! `-m immediate`) and started again while logins, reads, deployment starts, scripts
//! reporting steps and watchers go on: requests fail cleanly while it is down (503,
//! never 500 or a hang), connections recover by themselves, nothing acknowledged is
//! lost. A slow database: a lock held on the deployments for 5 s makes requests time
//! out cleanly (503) while the runner keeps its scripts, whose reports are stored once
//! the lock is released. `SLIPWAY_FAULTS_LONG=1` restarts more often.

use std::time::Duration;

use tests::{Backend, fault_fixture::*, private_postgres::PrivatePostgres};

#[tokio::test(flavor = "multi_thread")]
async fn postgres_restarts_under_load() {
    let Some(postgres) = PrivatePostgres::start() else {
        return;
    };
    let stack = builder(Backend::Postgres).postgres(postgres.base_url()).start().await;
    let mut faults = Faults::start(&stack).await;
    faults.steady(steady_time()).await;
    let rounds = if long() { 3 } else { 1 };
    for _ in 0..rounds {
        for mode in ["fast", "immediate"] {
            faults.restart_database(&postgres, mode).await;
            faults.steady(steady_time()).await;
        }
    }
    let problems = faults.finish(&stack, RECOVERY).await;
    assert!(
        problems.is_empty(),
        "{}\n{}\n{}",
        problems.join("\n"),
        stack.logs(),
        postgres.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_locked_table_times_out_cleanly_and_the_runner_keeps_its_scripts() {
    if !Backend::Postgres.available().await {
        return;
    }
    let stack = builder(Backend::Postgres).start().await;
    let mut faults = Faults::start(&stack).await;
    faults.steady(steady_time()).await;
    faults
        .lock_table(&stack.database_url("deploy"), "deployments", Duration::from_secs(5))
        .await;
    faults.steady(steady_time()).await;
    let target = faults.target.clone();
    let mut problems = faults.finish(&stack, RECOVERY).await;
    // Nothing failed: the runs that waited on the lock went on and ended well, with
    // the step their script printed last stored.
    for d in wait_all_ended(&target).await {
        let id = d["id"].as_str().unwrap();
        if d["status"] != "DEPLOYMENT_STATUS_SUCCEEDED" {
            problems.push(format!("a deployment did not succeed: {d}"));
        }
        let path = format!("/v1/deployments/{id}/steps");
        let (_, body) = target
            .call(reqwest::Method::GET, &path, Some(&target.admin), None)
            .await;
        let four = body["body"]["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| s["name"] == "four" && s["state"] == "success" && s["message"] == format!("four of {id}"));
        if !four {
            problems.push(format!(
                "deployment {id}: the step its script printed is not stored: {body}"
            ));
        }
    }
    assert!(problems.is_empty(), "{}\n{}", problems.join("\n"), stack.logs());
}

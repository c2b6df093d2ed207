//! Deploy-service replicas on one PostgreSQL database (issue 15, items 1-3): the
//! queue is claimed in the database, so runs of one service never overlap and start
//! in order of acceptance whichever replica accepted or runs them; a replica killed
//! with SIGKILL has its runs failed by another ("the runner was lost") within 30 s,
//! their tokens revoked and the next queued run started, and once restarted on its
//! data dir it stops its orphaned scripts; step reports, finishes and cancels sent to
//! a replica that does not run the deployment are applied. PostgreSQL only (SQLite is
//! one replica); required in CI.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use proto::deploy::v1::{self as pb, DeploymentStatus, deploy_service_client::DeployServiceClient};
use sea_orm::{ConnectionTrait, Database};
use serde_json::json;
use tests::{
    Backend, Stack,
    deploy_rpc::{Fixture, HOLD, process_gone, report, status, wait_gone, wait_token_refused, write_service},
    grpc::{bearer, channel},
    wait_until,
};
use tonic::transport::Channel;

/// A short run: one step reported running, then success.
const SHORT: &str = r#"echo '{"name": "one", "state": "running", "message": "working"}'
sleep 0.2
echo '{"name": "one", "state": "success", "message": "done"}'
"#;

async fn client(addr: SocketAddr) -> DeployServiceClient<Channel> {
    DeployServiceClient::new(channel(addr).await)
}

/// A stack on PostgreSQL whose services directory `prepare` fills, with the deploy
/// replicas named `replicas` beside "deploy" (the one the gateway talks to).
async fn fixture(prepare: impl FnOnce(&std::path::Path), replicas: &[&str]) -> (Fixture, Vec<SocketAddr>) {
    let mut stack = Stack::start_with(Backend::Postgres, prepare).await;
    let mut addrs = vec![stack.deploy];
    for name in replicas {
        addrs.push(stack.add_deploy_replica(name));
    }
    let admin = stack.admin_token().await;
    (Fixture { stack, admin }, addrs)
}

async fn start_on(f: &Fixture, addr: SocketAddr, token: &str) -> pb::Deployment {
    let request = pb::StartDeploymentRequest {
        env: tests::deploy_rpc::env(json!({})),
        ..Default::default()
    };
    client(addr)
        .await
        .start_deployment(bearer(request, token))
        .await
        .unwrap_or_else(|e| panic!("starting on {addr}: {e:?}\n{}", f.stack.logs()))
        .into_inner()
}

fn at(t: &Option<proto::wkt::Timestamp>) -> (i64, i32) {
    let t = t.as_ref().expect("a timestamp");
    (t.seconds, t.nanos)
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_of_one_service_never_overlap_across_replicas() {
    if !Backend::Postgres.available().await {
        return;
    }
    let services = ["alpha", "beta", "gamma"];
    let (f, addrs) = fixture(
        |dir| {
            for name in services {
                write_service(dir, name, json!({"steps": [{"name": "one"}]}), SHORT);
            }
        },
        &["deploy-b", "deploy-c"],
    )
    .await;
    let mut tokens = HashMap::new();
    for name in services {
        tokens.insert(name, f.service_token(name).await);
    }
    // 30 deployments, each accepted by the next replica in turn, one after another:
    // acceptance order is id order.
    let mut accepted: Vec<(&str, i64)> = Vec::new();
    for i in 0..30 {
        let service = services[i % services.len()];
        let d = start_on(&f, addrs[i % addrs.len()], &tokens[service]).await;
        accepted.push((service, d.id));
    }
    let mut ended = HashMap::new();
    for (_, id) in &accepted {
        let d = wait_until(Duration::from_secs(120), async || {
            let d = f.get(*id).await;
            match d.finished {
                Some(_) => Ok(d),
                None => Err(format!("deployment {id} not finished: {d:?}\n{}", f.stack.logs())),
            }
        })
        .await;
        assert_eq!(status(&d), DeploymentStatus::Succeeded, "{d:?}\n{}", f.stack.logs());
        ended.insert(*id, d);
    }
    for service in services {
        let runs: Vec<&pb::Deployment> = accepted
            .iter()
            .filter(|(s, _)| *s == service)
            .map(|(_, id)| &ended[id])
            .collect();
        for pair in runs.windows(2) {
            assert!(
                at(&pair[1].run_started) >= at(&pair[0].finished),
                "{service}: run {} started before run {} ended (or out of acceptance order)",
                pair[1].id,
                pair[0].id
            );
        }
    }
    // The runs were spread over the replicas (each runs what it can start at once).
    let db = Database::connect(f.stack.database_url("deploy")).await.unwrap();
    let owners = db
        .query_all_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT DISTINCT runner_id FROM deployments",
        ))
        .await
        .unwrap();
    assert!(owners.len() >= 2, "runs on {} replica(s) only", owners.len());
    let left = db
        .query_all_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT deployment_id FROM run_queue",
        ))
        .await
        .unwrap();
    assert!(left.is_empty(), "finished runs leave the run queue");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_replica_s_run_is_failed_by_another_and_its_script_stopped_on_restart() {
    if !Backend::Postgres.available().await {
        return;
    }
    let (mut f, addrs) = fixture(|dir| write_service(dir, "alpha", json!({}), HOLD), &["deploy-b"]).await;
    let token = f.service_token("alpha").await;
    // Started at once on B, so B runs it; the next one waits (limit 1).
    let lost = start_on(&f, addrs[1], &token).await;
    assert_eq!(status(&lost), DeploymentStatus::Running);
    let run_token = f.deployment_token("alpha", lost.id).await;
    let pid: i32 = f
        .file("alpha", &format!("pid-{}", lost.id))
        .await
        .trim()
        .parse()
        .unwrap();
    let next = start_on(&f, addrs[0], &token).await;
    assert_eq!(status(&next), DeploymentStatus::Queued);

    f.stack.proc("deploy-b").kill();
    let killed = std::time::Instant::now();
    let failed = wait_until(Duration::from_secs(30), async || {
        let d = f.get(lost.id).await;
        match d.finished {
            Some(_) => Ok(d),
            None => Err(format!("the lost run is still running: {d:?}\n{}", f.stack.logs())),
        }
    })
    .await;
    assert!(killed.elapsed() < Duration::from_secs(30));
    assert_eq!(status(&failed), DeploymentStatus::Failed);
    assert!(
        failed.failure_reason.contains("the runner was lost"),
        "{}",
        failed.failure_reason
    );
    wait_token_refused(&f, &run_token).await;
    // The slot is free: the next one runs now (on the replica left).
    f.wait_for(next.id, "running", |d| status(d) == DeploymentStatus::Running)
        .await;
    f.file("alpha", &format!("pid-{}", next.id)).await;
    f.release("alpha", next.id);
    assert_eq!(status(&f.finished(next.id).await), DeploymentStatus::Succeeded);

    // B's script is an orphan now; B restarted on its data dir stops it.
    assert!(
        !process_gone(pid),
        "the orphaned script should still run until B is back"
    );
    f.stack.respawn("deploy-b").await;
    wait_gone(pid).await;
    let runs_dir = f.stack.dir.path().join("deploy-b-data").join("deploy-runs");
    wait_until(Duration::from_secs(10), async || {
        match std::fs::read_dir(&runs_dir).map(|d| d.count()) {
            Ok(0) => Ok(()),
            other => Err(format!("config files left in {}: {other:?}", runs_dir.display())),
        }
    })
    .await;
    // It did not touch the (ended) run again.
    assert_eq!(f.get(lost.id).await.failure_reason, failed.failure_reason);
}

#[tokio::test(flavor = "multi_thread")]
async fn reports_finishes_and_cancels_reach_a_run_on_another_replica() {
    if !Backend::Postgres.available().await {
        return;
    }
    let (f, addrs) = fixture(
        |dir| {
            write_service(dir, "alpha", json!({"steps": [{"name": "build"}]}), HOLD);
            write_service(dir, "beta", json!({}), HOLD);
        },
        &["deploy-b"],
    )
    .await;
    let (on_a, on_b) = (addrs[0], addrs[1]);
    let alpha = f.service_token("alpha").await;
    let run = start_on(&f, on_b, &alpha).await;
    assert_eq!(status(&run), DeploymentStatus::Running);
    let run_token = f.deployment_token("alpha", run.id).await;

    // A step report sent to A (the fixture's deploy client) is applied to B's run.
    let step = report(&f, &run_token, "build", "success", "built elsewhere")
        .await
        .unwrap();
    assert_eq!(step.state, "success");
    let seen_on_b = client(on_b)
        .await
        .get_deployment(bearer(pb::GetDeploymentRequest { id: run.id }, &f.admin))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(seen_on_b.steps[0].message, "built elsewhere");

    // A finish sent to A ends it at once; its script still holds the slot until it
    // exits on B.
    let finished = client(on_a)
        .await
        .finish_deployment(bearer(pb::FinishDeploymentRequest { id: 0 }, &run_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status(&finished), DeploymentStatus::Succeeded);
    let next = start_on(&f, on_a, &alpha).await;
    assert_eq!(status(&next), DeploymentStatus::Queued, "the script still runs on B");
    f.release("alpha", run.id);
    f.wait_for(next.id, "running", |d| status(d) == DeploymentStatus::Running)
        .await;
    assert_eq!(status(&f.get(run.id).await), DeploymentStatus::Succeeded);

    // A cancel sent to A stops the script of a run on B.
    let beta = f.service_token("beta").await;
    let held = start_on(&f, on_b, &beta).await;
    assert_eq!(status(&held), DeploymentStatus::Running);
    let pid: i32 = f
        .file("beta", &format!("pid-{}", held.id))
        .await
        .trim()
        .parse()
        .unwrap();
    let cancelled = client(on_a)
        .await
        .cancel_deployment(bearer(pb::CancelDeploymentRequest { id: held.id }, &f.admin))
        .await
        .unwrap_or_else(|e| panic!("cancel: {e:?}\n{}", f.stack.logs()))
        .into_inner();
    assert_eq!(status(&cancelled), DeploymentStatus::Cancelled, "{cancelled:?}");
    assert_eq!(
        cancelled.failure_reason,
        format!("cancelled by {}", tests::stack::ADMIN)
    );
    wait_gone(pid).await;

    f.file("alpha", &format!("pid-{}", next.id)).await;
    f.release("alpha", next.id);
    assert_eq!(status(&f.finished(next.id).await), DeploymentStatus::Succeeded);
}

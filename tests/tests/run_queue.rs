//! The deploy service's run queue in the database (issue 15), at the storage level,
//! with two `Store`s standing for two replicas on one database: claims in order of
//! acceptance within the limits, the limits refused by the database itself (unique
//! slots), a run whose lease expired ended by the other replica ("the runner was
//! lost") with its slot freed, and the late owner's writes refused by the fence. On
//! PostgreSQL, replicas claiming at once never start a second run of a service at
//! limit 1.

use deploy_service::{
    model::{DeploymentId, Outcome, Report, ServiceId, Status},
    storage::{Fenced, Limits, NewDeployment, RUNNER_LOST, ReportRefused, Store},
};
use sea_orm::ConnectionTrait;
use serde_json::json;
use tests::{Backend, TestDatabase, on_every_backend};

on_every_backend!(claims_leases_and_fences);

#[tokio::test(flavor = "multi_thread")]
async fn replicas_claiming_at_once_never_pass_the_limits() {
    if Backend::Postgres.available().await {
        claiming_at_once().await;
    }
}

const LIMITS: Limits = Limits {
    max_running: 3,
    max_running_per_service: 1,
};

fn new(service: &str) -> NewDeployment {
    NewDeployment {
        service_id: ServiceId(1),
        service: service.into(),
        origin: "ci".into(),
        user: "alice".into(),
        context: json!({"env": {}}),
        deploy_script: format!("{service}/deploy.sh"),
        timeout_secs: 60,
        steps: vec!["one".into()],
    }
}

async fn claims_leases_and_fences(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::create(backend, dir.path(), "deploy").await.unwrap();
    let a = Store::open(&db.url).await.unwrap();
    let b = Store::open(&db.url).await.unwrap();

    // Accepted on A: the first starts at once, claimed by A; the next two wait.
    let (first, _, claim) = a.accept(new("alpha"), "replica-a", LIMITS).await.unwrap();
    let claim = claim.expect("the first starts at once");
    assert_eq!((first.status, claim.owner.as_str()), (Status::Running, "replica-a"));
    let (second, _, none) = a.accept(new("alpha"), "replica-a", LIMITS).await.unwrap();
    assert!(none.is_none() && second.status == Status::Queued);
    let (third, _, _) = b.accept(new("alpha"), "replica-b", LIMITS).await.unwrap();
    assert_eq!(third.status, Status::Queued, "FIFO: not past the one waiting");
    // Another service passes the one at its limit.
    let (beta, _, beta_claim) = b.accept(new("beta"), "replica-b", LIMITS).await.unwrap();
    assert_eq!(beta.status, Status::Running);
    assert!(
        b.claim_next("replica-b", LIMITS).await.unwrap().is_none(),
        "alpha is at its limit"
    );

    // The database itself refuses a second running alpha in slot 0, and a second run
    // in the same global slot.
    let conn = b.connection();
    let refused = conn
        .execute_unprepared(&format!(
            "UPDATE run_queue SET state = 'running', slot = 0, global_slot = 7 WHERE deployment_id = {}",
            second.id
        ))
        .await;
    assert!(refused.is_err(), "a second alpha in slot 0 must be refused");
    let refused = conn
        .execute_unprepared(&format!(
            "UPDATE run_queue SET state = 'running', slot = 5, global_slot = 0 WHERE deployment_id = {}",
            second.id
        ))
        .await;
    assert!(refused.is_err(), "a second run in global slot 0 must be refused");

    // A renews; a cancel asked for on B reaches A's next heartbeat.
    assert!(b.request_cancel(first.id, "bob").await.unwrap().is_some());
    let renewed = a.renew("replica-a", &[first.id]).await.unwrap();
    assert_eq!(renewed.len(), 1);
    assert_eq!(renewed[0].cancel_by.as_deref(), Some("bob"));
    assert!(b.renew("replica-b", &[first.id]).await.unwrap().is_empty(), "not B's");

    // A dies: its lease runs out. B sweeps it: failed, the run gone, the slot free.
    assert!(b.expired_runs().await.unwrap().is_empty());
    conn.execute_unprepared(&format!(
        "UPDATE run_queue SET lease_expires = 0 WHERE deployment_id = {}",
        first.id
    ))
    .await
    .unwrap();
    let expired = b.expired_runs().await.unwrap();
    assert_eq!(expired.iter().map(|r| r.deployment_id).collect::<Vec<_>>(), [first.id]);
    let ended = b.end_orphaned(&expired[0], RUNNER_LOST, true).await.unwrap().unwrap();
    assert_eq!(ended.status, Status::Failed);
    assert_eq!(ended.failure_reason.as_deref(), Some(RUNNER_LOST));
    assert!(
        b.end_orphaned(&expired[0], RUNNER_LOST, true).await.unwrap().is_none(),
        "once"
    );
    assert!(b.run_row(first.id).await.unwrap().is_none());

    // A comes back late: every write of its run is refused.
    assert!(a.renew("replica-a", &[first.id]).await.unwrap().is_empty());
    assert!(matches!(
        a.set_process(first.id, &claim, 42, Some(1)).await,
        Err(Fenced::Lost)
    ));
    assert!(matches!(a.set_token(first.id, &claim, "jti").await, Err(Fenced::Lost)));
    let report = Report::new("one", "success", "late", None).unwrap();
    assert!(matches!(
        a.apply_reports(first.id, &[report], Some(&claim)).await,
        Err(ReportRefused::Lost | ReportRefused::Finished)
    ));
    assert!(matches!(
        a.end_run(first.id, &claim, &Outcome::Exited, Some(0)).await,
        Err(Fenced::Lost)
    ));
    assert_eq!(b.get_deployment(first.id).await.unwrap().unwrap(), ended);

    // The next alpha, in order of acceptance, is B's to run now.
    let (next, next_claim) = b.claim_next("replica-b", LIMITS).await.unwrap().unwrap();
    assert_eq!((next.id, next.status), (second.id, Status::Running));
    assert_eq!(next_claim.owner, "replica-b");
    assert!(b.claim_next("replica-b", LIMITS).await.unwrap().is_none());
    // Its end frees the slot for the third.
    b.end_run(second.id, &next_claim, &Outcome::Exited, Some(0))
        .await
        .unwrap();
    let (last, last_claim) = a.claim_next("replica-a", LIMITS).await.unwrap().unwrap();
    assert_eq!(last.id, third.id);
    // A queued deployment cancelled leaves the queue.
    let (fourth, _, _) = a.accept(new("alpha"), "replica-a", LIMITS).await.unwrap();
    let cancelled = Outcome::Cancelled("cancelled by bob before it started".into());
    a.end_deployment(fourth.id, &cancelled, None, true)
        .await
        .unwrap()
        .unwrap();
    assert!(a.run_row(fourth.id).await.unwrap().is_none());
    for (store, id, claim) in [(&a, last.id, last_claim), (&b, beta.id, beta_claim.unwrap())] {
        store.end_run(id, &claim, &Outcome::Exited, Some(0)).await.unwrap();
    }
    for id in [first.id, second.id, third.id, fourth.id, beta.id] {
        assert!(
            a.run_row(id).await.unwrap().is_none(),
            "finished runs leave the hot table: {id}"
        );
    }
}

/// Three replicas claim 30 queued deployments of three services at once (one at a
/// time, and in batches of 2 and 3), each ending its runs as it goes: never two runs of one service at once, each service's in
/// order of acceptance, and every one ran.
async fn claiming_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::create(Backend::Postgres, dir.path(), "deploy")
        .await
        .unwrap();
    let seed = Store::open(&db.url).await.unwrap();
    let mut accepted = Vec::new();
    for i in 0..30 {
        let service = ["alpha", "beta", "gamma"][i % 3];
        let (d, _) = seed.create_deployment(new(service)).await.unwrap();
        accepted.push((d.id, service));
    }
    let running = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::<String, i64>::new()));
    let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut replicas = Vec::new();
    for r in 0..3 {
        let store = Store::open(&db.url).await.unwrap();
        let (running, order) = (running.clone(), order.clone());
        replicas.push(tokio::spawn(async move {
            let owner = format!("replica-{r}");
            let mut idle = 0;
            while idle < 20 {
                // One replica claims one at a time, the others in batches.
                let claimed = store.claim_batch(&owner, LIMITS, [1, 2, 3][r]).await.unwrap();
                if claimed.is_empty() {
                    idle += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    continue;
                }
                idle = 0;
                for (d, _) in &claimed {
                    let mut now = running.lock().unwrap();
                    let count = now.entry(d.service.clone()).or_default();
                    *count += 1;
                    assert_eq!(*count, 1, "two runs of {} at once", d.service);
                    order.lock().unwrap().push((d.service.clone(), d.id));
                }
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                for (d, claim) in claimed {
                    *running.lock().unwrap().get_mut(&d.service).unwrap() -= 1;
                    store.end_run(d.id, &claim, &Outcome::Exited, Some(0)).await.unwrap();
                }
            }
        }));
    }
    for replica in replicas {
        replica.await.unwrap();
    }
    let order = order.lock().unwrap().clone();
    assert_eq!(order.len(), accepted.len(), "every deployment ran once: {order:?}");
    for service in ["alpha", "beta", "gamma"] {
        let started: Vec<DeploymentId> = order.iter().filter(|(s, _)| s == service).map(|(_, id)| *id).collect();
        let expected: Vec<DeploymentId> = accepted
            .iter()
            .filter(|(_, s)| *s == service)
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(started, expected, "{service} in order of acceptance");
    }
}

//! Deployment and service events fanned out across replicas (issue 15, item 4): two
//! deploy and two registry replicas on one PostgreSQL database. A watcher on the
//! first replica sees every event of changes made through the second exactly once,
//! in sequence order; a watcher resumes from a sequence; and a watcher keeps getting
//! events after its replica's listening connection is cut (the replica reads the
//! table until it listens again). PostgreSQL only (SQLite is one replica); required
//! when CI=true.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use proto::{
    deploy::v1::{self as dep, deploy_service_client::DeployServiceClient},
    registry::v1::{self as reg, registry_service_client::RegistryServiceClient},
};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
use serde_json::json;
use tests::{
    Backend,
    deploy_rpc::Fixture,
    grpc::{bearer, channel},
    support::{reporting_script, write_service},
    wait_until,
};
use tokio_stream::StreamExt;

#[tokio::test(flavor = "multi_thread")]
async fn deployment_events_reach_watchers_on_every_replica() {
    if Backend::Postgres.available().await {
        deployment_events().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn service_events_reach_watchers_on_every_replica() {
    if Backend::Postgres.available().await {
        service_events().await;
    }
}

/// What a watcher has received so far: (sequence, what) in arrival order.
type Seen = Arc<Mutex<Vec<(i64, String)>>>;

fn seen(log: &Seen) -> Vec<(i64, String)> {
    log.lock().unwrap().clone()
}

/// Every stored sequence of `table` after `after`, in order.
async fn stored(db: &DatabaseConnection, table: &str, after: i64) -> Vec<i64> {
    let sql = format!("SELECT sequence FROM {table} WHERE sequence > {after} ORDER BY sequence");
    db.query_all_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get::<i64>("", "sequence").unwrap())
        .collect()
}

/// Waits until the watcher has received exactly the stored events after `after`, in
/// order, and nothing twice.
async fn sees_all(db: &DatabaseConnection, table: &str, after: i64, log: &Seen, logs: impl Fn() -> String) {
    let expected = stored(db, table, after).await;
    assert!(!expected.is_empty(), "nothing stored in {table}");
    wait_until(Duration::from_secs(30), async || {
        let got: Vec<i64> = seen(log).iter().map(|(s, _)| *s).collect();
        match got.len() >= expected.len() {
            true => Ok(()),
            false => Err(format!(
                "the watcher has {} of {} events: {got:?}\n{}",
                got.len(),
                expected.len(),
                logs()
            )),
        }
    })
    .await;
    // Anything extra (a duplicate) would have arrived with the rest.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got: Vec<i64> = seen(log).iter().map(|(s, _)| *s).collect();
    assert_eq!(got, expected, "every event exactly once, in order");
}

/// Cuts every listening connection of the database (both replicas'), as a network
/// fault would.
async fn cut_listeners(db: &DatabaseConnection) {
    let cut = db
        .execute_unprepared(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name LIKE 'slipway-feed %' \
             AND pid <> pg_backend_pid()",
        )
        .await
        .unwrap();
    assert!(cut.rows_affected() >= 2, "both replicas listen");
}

fn watch_deploy(addr: SocketAddr, token: String, after: i64) -> Seen {
    let log = Seen::default();
    let into = log.clone();
    tokio::spawn(async move {
        let request = dep::WatchEventsRequest {
            after_sequence: after,
            ..Default::default()
        };
        let mut stream = DeployServiceClient::new(channel(addr).await)
            .watch_events(bearer(request, &token))
            .await
            .unwrap()
            .into_inner();
        while let Some(Ok(event)) = stream.next().await {
            let what = match &event.payload {
                Some(dep::event::Payload::Deployment(d)) => format!("deployment {} {}", d.id, d.status),
                Some(dep::event::Payload::Step(s)) => format!("step {} {}", s.name, s.state),
                None => "nothing".into(),
            };
            into.lock().unwrap().push((event.sequence, what));
        }
    });
    log
}

async fn deploy_all(fixture: &Fixture, on: SocketAddr, services: &[&str]) {
    let mut client = DeployServiceClient::new(channel(on).await);
    let mut ids = Vec::new();
    for service in services {
        let token = fixture.service_token(service).await;
        let started = client
            .start_deployment(bearer(dep::StartDeploymentRequest::default(), &token))
            .await
            .unwrap_or_else(|e| panic!("starting {service}: {e:?}\n{}", fixture.stack.logs()));
        ids.push(started.into_inner().id);
    }
    for id in ids {
        wait_until(Duration::from_secs(30), async || {
            let deployment = client
                .get_deployment(bearer(dep::GetDeploymentRequest { id }, &fixture.admin))
                .await
                .unwrap()
                .into_inner();
            match deployment.finished {
                Some(_) => Ok(()),
                None => Err(format!("deployment {id} not finished\n{}", fixture.stack.logs())),
            }
        })
        .await;
    }
}

async fn deployment_events() {
    let names = ["alpha", "beta", "gamma"];
    let mut fixture = Fixture::start(Backend::Postgres, |services| {
        let script = reporting_script(
            &[
                json!({"name": "build", "state": "running", "message": "building"}),
                json!({"name": "build", "state": "success", "message": "built"}),
            ],
            0,
        );
        for name in names {
            write_service(services, name, json!({"steps": [{"name": "build"}]}), &script);
        }
    })
    .await;
    let first = fixture.stack.deploy;
    let second = fixture.stack.add_replica("deploy", "deploy-b");
    let db = Database::connect(fixture.stack.database_url("deploy")).await.unwrap();
    let logs = || fixture.stack.logs();

    // Changes through the second replica, watched on the first (and on the second).
    let on_first = watch_deploy(first, fixture.admin.clone(), 0);
    let on_second = watch_deploy(second, fixture.admin.clone(), 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    deploy_all(&fixture, second, &names).await;
    sees_all(&db, "events", 0, &on_first, logs).await;
    sees_all(&db, "events", 0, &on_second, logs).await;

    // A watcher resumes after a sequence, on either replica.
    let all = stored(&db, "events", 0).await;
    let middle = all[all.len() / 2];
    sees_all(
        &db,
        "events",
        middle,
        &watch_deploy(first, fixture.admin.clone(), middle),
        logs,
    )
    .await;
    sees_all(
        &db,
        "events",
        middle,
        &watch_deploy(second, fixture.admin.clone(), middle),
        logs,
    )
    .await;

    // With its listening connection cut, the first replica still delivers what the
    // second commits (it reads the table until it listens again).
    for round in 0..3 {
        cut_listeners(&db).await;
        deploy_all(&fixture, second, &names[round..round + 1]).await;
        sees_all(&db, "events", 0, &on_first, logs).await;
    }
    let log = fixture.stack.log("deploy");
    assert!(log.contains("the listening connection was lost"), "{log}");
    wait_until(Duration::from_secs(10), async || {
        match fixture.stack.log("deploy").contains("listening again") {
            true => Ok(()),
            false => Err("the first deploy replica does not listen again".to_owned()),
        }
    })
    .await;
    deploy_all(&fixture, second, &names[..1]).await;
    sees_all(&db, "events", 0, &on_first, logs).await;
}

fn watch_registry(addr: SocketAddr, token: String, after: i64) -> Seen {
    let log = Seen::default();
    let into = log.clone();
    tokio::spawn(async move {
        let request = reg::WatchServicesRequest { after_sequence: after };
        let mut stream = RegistryServiceClient::new(channel(addr).await)
            .watch_services(bearer(request, &token))
            .await
            .unwrap()
            .into_inner();
        while let Some(Ok(event)) = stream.next().await {
            let name = event.service.map(|s| s.name).unwrap_or_default();
            into.lock()
                .unwrap()
                .push((event.sequence, format!("{name} deleted={}", event.deleted)));
        }
    });
    log
}

async fn sync_on(addr: SocketAddr, token: &str) {
    RegistryServiceClient::new(channel(addr).await)
        .sync_services(bearer(reg::SyncServicesRequest {}, token))
        .await
        .unwrap();
}

async fn service_events() {
    let mut fixture = Fixture::start(Backend::Postgres, |_| {}).await;
    let first = fixture.stack.registry;
    let second = fixture.stack.add_replica("registry", "registry-b");
    let db = Database::connect(fixture.stack.database_url("registry")).await.unwrap();
    let admin = fixture.admin.clone();
    let services = fixture.stack.services_dir();
    let add = |name: &str| write_service(&services, name, json!({"description": name}), "#!/bin/sh\n");
    let logs = || fixture.stack.logs();

    let on_first = watch_registry(first, admin.clone(), 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    for name in ["one", "two", "three"] {
        add(name);
    }
    sync_on(second, &admin).await;
    std::fs::remove_dir_all(services.join("two")).unwrap();
    add("four");
    sync_on(second, &admin).await;
    let three = RegistryServiceClient::new(channel(second).await)
        .get_service(bearer(
            reg::GetServiceRequest {
                key: Some(reg::get_service_request::Key::Name("three".into())),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    RegistryServiceClient::new(channel(second).await)
        .delete_service(bearer(reg::DeleteServiceRequest { id: three.id }, &admin))
        .await
        .unwrap();
    sees_all(&db, "service_events", 0, &on_first, logs).await;
    let got: Vec<String> = seen(&on_first).into_iter().map(|(_, what)| what).collect();
    for expected in [
        "one deleted=false",
        "two deleted=true",
        "four deleted=false",
        "three deleted=true",
    ] {
        assert!(got.iter().any(|g| g == expected), "{expected} in {got:?}");
    }

    // Resuming after a sequence, on either replica.
    let all = stored(&db, "service_events", 0).await;
    let middle = all[all.len() / 2];
    sees_all(
        &db,
        "service_events",
        middle,
        &watch_registry(first, admin.clone(), middle),
        logs,
    )
    .await;
    sees_all(
        &db,
        "service_events",
        middle,
        &watch_registry(second, admin.clone(), middle),
        logs,
    )
    .await;

    // A watcher keeps getting changes while its replica's listening connection is cut.
    for round in 0..3 {
        cut_listeners(&db).await;
        add(&format!("late-{round}"));
        sync_on(second, &admin).await;
        sees_all(&db, "service_events", 0, &on_first, logs).await;
    }
    let log = fixture.stack.log("registry");
    assert!(log.contains("the listening connection was lost"), "{log}");
}

//! `cargo bench -p tests --bench fastdeploy_lists`: fastDeploy's unpaged lists at
//! scale (issue 12.7). Seeds the registry with 10,000 services and the deploy database
//! with 1,000,000 deployments (copies of one real deployment, inserted with SQL), then
//! reads `GET /deployments/` and `GET /services/` through the real gateway and prints
//! time to first byte, total time, bytes and the gateway's resident memory (sampled
//! while reading, and its peak from `/proc/PID/status`). Prints figures; asserts only
//! that the answers are whole. `SLIPWAY_BENCH_BACKEND=postgres` runs on PostgreSQL,
//! `SLIPWAY_BENCH_DEPLOYMENTS=N` and `SLIPWAY_BENCH_SERVICES=N` change the counts.
//! `SLIPWAY_BENCH_COMPARE_WITH=<gateway binary>` (e.g. one built from an earlier commit)
//! also reads the three lists through that gateway, against the same backends, and
//! prints whether its bytes are the same.

use std::{
    os::unix::fs::PermissionsExt,
    time::{Duration, Instant},
};

use sea_orm::{ConnectionTrait, Database, Statement};
use serde_json::{Value, json};
use tests::{Backend, Stack, raw_http::memory_kib};

async fn post(stack: &Stack, path: &str, token: &str, body: Value) -> Value {
    let response = stack
        .http
        .post(stack.url(path))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "POST {path}");
    response.json().await.unwrap_or(Value::Null)
}

async fn scalar(db: &impl ConnectionTrait, sql: &str) -> i64 {
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), sql.to_owned()))
        .await
        .unwrap()
        .unwrap();
    row.try_get_by_index::<i64>(0).unwrap()
}

/// Reads one list, printing its figures; returns the items.
async fn measure(stack: &Stack, pid: u32, path: &str, token: &str) -> usize {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3600))
        .build()
        .unwrap();
    let (before, _) = memory_kib(pid);
    let started = Instant::now();
    let mut response = client.get(stack.url(path)).bearer_auth(token).send().await.unwrap();
    assert_eq!(response.status(), 200, "GET {path}");
    let mut first_byte = None;
    let mut body = Vec::new();
    let mut peak = before;
    let mut chunks = 0u64;
    while let Some(chunk) = response.chunk().await.unwrap() {
        first_byte.get_or_insert_with(|| started.elapsed());
        body.extend_from_slice(&chunk);
        chunks += 1;
        if chunks.is_multiple_of(16) {
            peak = peak.max(memory_kib(pid).0);
        }
    }
    let total = started.elapsed();
    let (after, high_water) = memory_kib(pid);
    let items = serde_json::from_slice::<Vec<Value>>(&body).unwrap().len();
    println!(
        "GET {path}: {items} items, {} bytes; first byte {:.1} ms, total {:.2} s; \
         gateway RSS {:.1} MiB before, {:.1} MiB sampled peak, {:.1} MiB after, VmHWM {:.1} MiB",
        body.len(),
        first_byte.unwrap_or_default().as_secs_f64() * 1000.0,
        total.as_secs_f64(),
        before as f64 / 1024.0,
        peak.max(after) as f64 / 1024.0,
        after as f64 / 1024.0,
        high_water as f64 / 1024.0,
    );
    items
}

fn main() {
    let backend = match std::env::var("SLIPWAY_BENCH_BACKEND").as_deref() {
        Ok("postgres") => Backend::Postgres,
        _ => Backend::Sqlite,
    };
    let deployments: u64 = std::env::var("SLIPWAY_BENCH_DEPLOYMENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let services: u64 = std::env::var("SLIPWAY_BENCH_SERVICES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut stack = Stack::start_with(backend, |dir| {
            let folder = dir.join("template");
            std::fs::create_dir_all(&folder).unwrap();
            std::fs::write(folder.join("config.json"), r#"{"description": "template"}"#).unwrap();
            let script = folder.join("deploy.sh");
            let steps = ["build", "test", "ship"]
                .map(|s| format!("echo '{{\"name\": \"{s}\", \"state\": \"success\", \"message\": \"{s} done\"}}'\n"))
                .concat();
            std::fs::write(&script, format!("#!/bin/sh\n{steps}")).unwrap();
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        })
        .await;
        let admin = stack.admin_token().await;
        post(&stack, "/services/sync", &admin, Value::Null).await;
        let minted = post(
            &stack,
            "/service-token",
            &admin,
            json!({"service": "template", "origin": "bench", "expiration_in_days": 1}),
        )
        .await;
        let service_token = minted["service_token"].as_str().unwrap().to_owned();
        let started = post(&stack, "/deployments/", &service_token, json!({"env": {"tag": "v1"}})).await;
        let template = started["id"].as_i64().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let response = stack
                .http
                .get(stack.url(&format!("/deployments/{template}")))
                .bearer_auth(&service_token)
                .send()
                .await
                .unwrap();
            let deployment: Value = response.json().await.unwrap();
            if !deployment["finished"].is_null() {
                break;
            }
            assert!(Instant::now() < deadline, "the template deployment did not finish");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        let seeding = Instant::now();
        let registry = Database::connect(stack.database_url("registry")).await.unwrap();
        let first_service = scalar(&registry, "SELECT MIN(id) FROM services").await;
        registry
            .execute_unprepared(&format!(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {})
                 INSERT INTO services (name, data, created_at, updated_at)
                 SELECT 'service-' || i, t.data, t.created_at, t.updated_at FROM n, services t WHERE t.id = {first_service}",
                services - 1
            ))
            .await
            .unwrap();
        let last_service = scalar(&registry, "SELECT MAX(id) FROM services").await;
        assert_eq!(
            scalar(&registry, "SELECT COUNT(*) FROM services").await,
            services as i64
        );
        assert_eq!(last_service - first_service + 1, services as i64, "contiguous ids");
        registry.close().await.unwrap();

        let deploy = Database::connect(stack.database_url("deploy")).await.unwrap();
        deploy
            .execute_unprepared(&format!(
                r#"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {})
                INSERT INTO deployments (service_id, service, origin, "user", context, status, started, finished,
                                         failure_reason, finish_requested)
                SELECT {first_service} + (i % {services}), t.service, t.origin, t."user", t.context, t.status,
                       t.started, t.finished, t.failure_reason, t.finish_requested
                FROM n, deployments t WHERE t.id = {template}"#,
                deployments - 1
            ))
            .await
            .unwrap();
        deploy.close().await.unwrap();
        println!(
            "seeded {services} services and {deployments} deployments on {backend:?} in {:.1} s",
            seeding.elapsed().as_secs_f64()
        );

        let pid = stack.proc("gateway").child.id();
        let listed = measure(&stack, pid, "/deployments/", &admin).await;
        assert_eq!(listed as u64, deployments);
        let listed = measure(&stack, pid, "/services/", &admin).await;
        assert_eq!(listed as u64, services);
        measure(&stack, pid, &format!("/steps/?deployment_id={template}"), &admin).await;
        if let Ok(other) = std::env::var("SLIPWAY_BENCH_COMPARE_WITH") {
            compare(&stack, &other, &admin, template).await;
        }
        stack.stop();
    });
}

/// Reads the lists through this stack's gateway and through the gateway binary
/// `other` started against the same backends; prints whether the bytes agree.
async fn compare(stack: &Stack, other: &str, token: &str, template: i64) {
    let dir = stack.dir.path();
    let addr_file = dir.join("other-gateway.addr");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = std::fs::File::create(dir.join("other-gateway.log")).unwrap();
    let mut child = std::process::Command::new(other)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--addr-file"])
        .arg(&addr_file)
        .args(["--auth-url", &format!("http://{}", stack.auth)])
        .args(["--registry-url", &format!("http://{}", stack.registry)])
        .args(["--deploy-url", &format!("http://{}", stack.deploy)])
        .arg("--credential-file")
        .arg(dir.join("gateway.key"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(&addr_file).map_or(true, |t| t.trim().is_empty()) {
        assert!(Instant::now() < deadline, "the other gateway did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3600))
        .build()
        .unwrap();
    for path in [
        "/deployments/".to_owned(),
        "/services/".to_owned(),
        format!("/steps/?deployment_id={template}"),
    ] {
        let mut bodies = Vec::new();
        for base in [stack.url(""), format!("http://127.0.0.1:{port}")] {
            let response = client
                .get(format!("{base}{path}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            let status = response.status();
            let content_type = response.headers().get("content-type").cloned();
            bodies.push((status, content_type, response.bytes().await.unwrap()));
        }
        println!(
            "GET {path}: this gateway {} {:?} {} bytes, {other}: {} {:?} {} bytes; identical: {}",
            bodies[0].0,
            bodies[0].1,
            bodies[0].2.len(),
            bodies[1].0,
            bodies[1].1,
            bodies[1].2.len(),
            bodies[0] == bodies[1]
        );
    }
    let _ = child.kill();
    let _ = child.wait();
}

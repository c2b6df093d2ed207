//! fastDeploy's unpaged lists (`GET /deployments/`, `GET /services/`, `GET /steps/`)
//! are streamed page by page from the backends (issue 12.7): the same bytes as the
//! whole array serialized at once (compact, keys in order), the same items as the
//! paged `/v1` lists, and bounded gateway memory however long the list. Deployments
//! beyond the few real ones are copied in the deploy database with SQL. On SQLite and
//! PostgreSQL. Time to first byte and totals at 1,000,000 deployments are in
//! `benches/fastdeploy_lists.rs`, not here.

use std::{
    os::unix::fs::PermissionsExt,
    path::Path,
    time::{Duration, Instant},
};

use sea_orm::{ConnectionTrait, Database};
use serde_json::{Value, json};
use tests::{Backend, Stack, on_every_backend, raw_http::memory_kib};

on_every_backend!(
    lists_stream_the_same_bytes_and_items_as_the_paged_v1_lists,
    a_long_deployments_list_streams_in_bounded_memory
);

const SERVICES: [&str; 2] = ["alpha", "beta"];

fn write_services(root: &Path) {
    let script = "#!/bin/sh\necho '{\"name\": \"build\", \"state\": \"success\", \"message\": \"built\"}'\n\
                  echo '{\"name\": \"ship\", \"state\": \"success\", \"message\": \"shipped\"}'\n";
    for name in SERVICES {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.json"), json!({"ratio": 0.5, "n": 3}).to_string()).unwrap();
        let path = dir.join("deploy.sh");
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// GET with a bearer token: status and raw body.
async fn get_raw(stack: &Stack, path: &str, token: &str) -> (u16, Vec<u8>) {
    let response = stack.http.get(stack.url(path)).bearer_auth(token).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.bytes().await.unwrap().to_vec())
}

async fn get_json(stack: &Stack, path: &str, token: &str) -> Value {
    let (status, body) = get_raw(stack, path, token).await;
    let body: Value =
        serde_json::from_slice(&body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()));
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

async fn post(stack: &Stack, path: &str, token: &str, body: Value) -> Value {
    let response = stack
        .http
        .post(stack.url(path))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 200, "POST {path}: {body}\n{}", stack.logs());
    body
}

/// A stack with two synced services, one finished real deployment of each (whose rows
/// are the templates of the copies), and `copies` more deployments of each service
/// inserted with SQL. Returns the stack, the admin token and the real deployments' ids.
async fn seeded(backend: Backend, copies: u64) -> (Stack, String, Vec<i64>) {
    let stack = Stack::start_with(backend, write_services).await;
    let admin = stack.admin_token().await;
    post(&stack, "/services/sync", &admin, Value::Null).await;
    let mut templates = Vec::new();
    for service in SERVICES {
        let minted = post(
            &stack,
            "/service-token",
            &admin,
            json!({"service": service, "origin": "ci", "expiration_in_days": 1}),
        )
        .await;
        let token = minted["service_token"].as_str().unwrap().to_owned();
        let started = post(&stack, "/deployments/", &token, json!({"env": {"tag": service}})).await;
        let id = started["id"].as_i64().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let deployment = get_json(&stack, &format!("/deployments/{id}"), &token).await;
            if !deployment["finished"].is_null() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "deployment {id} not finished\n{}",
                stack.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        templates.push(id);
    }
    let db = Database::connect(stack.database_url("deploy")).await.unwrap();
    for template in &templates {
        copy_deployment(&db, *template, copies).await;
    }
    db.close().await.unwrap();
    (stack, admin, templates)
}

/// Inserts `copies` copies of deployment `template` (same service, context, times).
async fn copy_deployment(db: &impl ConnectionTrait, template: i64, copies: u64) {
    let sql = format!(
        r#"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {copies})
        INSERT INTO deployments (service_id, service, origin, "user", context, status, started, finished,
                                 failure_reason, finish_requested)
        SELECT t.service_id, t.service, t.origin, t."user", t.context, t.status, t.started, t.finished,
               t.failure_reason, t.finish_requested
        FROM n, deployments t WHERE t.id = {template}"#
    );
    db.execute_unprepared(&sql).await.unwrap();
}

/// Whether `body` is exactly the compact serialization of the array it holds, keys
/// in order: the bytes fastDeploy's lists were answered with before they streamed.
fn assert_whole_array_bytes(body: &[u8]) -> Vec<Value> {
    let parsed: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(
        serde_json::to_vec(&parsed).unwrap(),
        body,
        "the streamed body differs from the array serialized at once"
    );
    parsed.as_array().unwrap().clone()
}

/// Every page of a `/v1` list, by `nextPageToken`.
async fn v1_all(stack: &Stack, path: &str, field: &str, token: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut page_token = String::new();
    let mut pages = 0;
    loop {
        let body = get_json(stack, &format!("{path}?page_size=50&page_token={page_token}"), token).await;
        items.extend(body[field].as_array().cloned().unwrap_or_default());
        pages += 1;
        match body["nextPageToken"].as_str() {
            Some(next) => page_token = next.to_owned(),
            None => break,
        }
    }
    assert!(pages > 1 || items.len() <= 50);
    items
}

fn instant(value: &Value) -> Option<chrono::DateTime<chrono::Utc>> {
    value.as_str().map(|s| s.parse().unwrap())
}

async fn lists_stream_the_same_bytes_and_items_as_the_paged_v1_lists(backend: Backend) {
    let (stack, admin, templates) = seeded(backend, 150).await;

    // Deployments: several deploy-service pages (the gateway reads 100, then 1000).
    let (status, body) = get_raw(&stack, "/deployments/", &admin).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let deployments = assert_whole_array_bytes(&body);
    assert_eq!(deployments.len(), 302);
    let v1 = v1_all(&stack, "/v1/deployments", "deployments", &admin).await;
    assert_eq!(v1.len(), deployments.len());
    for (fast, paged) in deployments.iter().zip(&v1) {
        assert_eq!(fast["id"].as_i64().unwrap().to_string(), paged["id"].as_str().unwrap());
        assert_eq!(
            fast["service_id"].as_i64().unwrap().to_string(),
            paged["serviceId"].as_str().unwrap()
        );
        assert_eq!(fast["origin"], paged["origin"]);
        assert_eq!(fast["user"], paged["user"]);
        assert_eq!(fast["context"], paged["context"]);
        assert_eq!(instant(&fast["started"]), instant(&paged["started"]));
        assert_eq!(instant(&fast["finished"]), instant(&paged["finished"]));
        assert_eq!(
            fast.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["context", "finished", "id", "origin", "service_id", "started", "user"]
        );
    }
    let ids: Vec<i64> = deployments.iter().map(|d| d["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "in id order, each once");
    assert_eq!(ids[..2], templates[..]);

    // Services.
    let (status, body) = get_raw(&stack, "/services/", &admin).await;
    assert_eq!(status, 200);
    let services = assert_whole_array_bytes(&body);
    let v1 = v1_all(&stack, "/v1/services", "services", &admin).await;
    assert_eq!(services.len(), SERVICES.len());
    for (fast, paged) in services.iter().zip(&v1) {
        assert_eq!(fast["id"].as_i64().unwrap().to_string(), paged["id"].as_str().unwrap());
        assert_eq!(fast["name"], paged["name"]);
        assert_eq!(fast["data"]["n"], json!(3), "whole numbers stay integers");
        assert_eq!(fast["data"]["ratio"], json!(0.5));
    }
    // A second read (maybe from the services cache) answers the same bytes.
    let (_, again) = get_raw(&stack, "/services/", &admin).await;
    assert_eq!(again, body);

    // Steps of a real deployment.
    let (status, body) = get_raw(&stack, &format!("/steps/?deployment_id={}", templates[0]), &admin).await;
    assert_eq!(status, 200);
    let steps = assert_whole_array_bytes(&body);
    let v1 = get_json(&stack, &format!("/v1/deployments/{}/steps", templates[0]), &admin).await;
    let v1 = v1["steps"].as_array().unwrap();
    assert_eq!(
        steps.iter().map(|s| s["name"].clone()).collect::<Vec<_>>(),
        [json!("build"), json!("ship")]
    );
    assert_eq!(steps.len(), v1.len());
    for (fast, paged) in steps.iter().zip(v1) {
        assert_eq!(fast["name"], paged["name"]);
        assert_eq!(fast["message"], paged["message"]);
        assert_eq!(fast["id"].as_i64().unwrap().to_string(), paged["id"].as_str().unwrap());
    }
    // Errors before the first byte are answered as before.
    let (status, body) = get_raw(&stack, "/steps/?deployment_id=999999", &admin).await;
    assert_eq!(
        (status, serde_json::from_slice::<Value>(&body).unwrap()),
        (404, json!({"detail": "Deployment not found"}))
    );
    let (status, _) = get_raw(&stack, "/deployments/", "not-a-token").await;
    assert_eq!(status, 401);
}

async fn a_long_deployments_list_streams_in_bounded_memory(backend: Backend) {
    const COPIES: u64 = 100_000;
    let (mut stack, admin, _) = seeded(backend, COPIES).await;
    let pid = stack.proc("gateway").child.id();
    let (before, _) = memory_kib(pid);

    // The stack's client gives up after 30 s; a loaded machine may take longer here.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap();
    let started = Instant::now();
    let mut response = client
        .get(stack.url("/deployments/"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = Vec::new();
    let mut peak = before;
    while let Some(chunk) = response.chunk().await.unwrap() {
        body.extend_from_slice(&chunk);
        peak = peak.max(memory_kib(pid).0);
    }
    let elapsed = started.elapsed();
    let (_, high_water) = memory_kib(pid);
    let deployments: Vec<Value> = serde_json::from_slice(&body).unwrap();
    assert_eq!(deployments.len() as u64, 2 * (COPIES + 1));
    eprintln!(
        "{backend:?}: {} deployments, {} bytes in {elapsed:?}; gateway RSS {before} KiB before, sampled peak {peak} KiB, VmHWM {high_water} KiB",
        deployments.len(),
        body.len()
    );
    assert!(
        high_water < 100 * 1024,
        "gateway peak RSS {high_water} KiB over 100 MiB for a {} byte list",
        body.len()
    );
}

//! What fastDeploy's WebSocket feed carries to authenticated sockets: events despite
//! bad clients, resumption after a deploy service restart, a start announced once,
//! retries and finish. On SQLite and PostgreSQL.

use tests::support;

use std::time::{Duration, Instant};

use futures::SinkExt;
use reqwest::Method;
use serde_json::{Value, json};
use support::*;
use tests::websocket_fixture::send;
use tests::websocket_fixture::*;
use tests::{Backend, Stack, on_every_backend};
use tokio_tungstenite::tungstenite::{Message, protocol::frame::coding::CloseCode};

on_every_backend!(
    feed_reaches_authenticated_sockets_despite_bad_clients,
    feed_resumes_after_a_deploy_service_restart,
    a_start_is_announced_once,
    retries_and_finish_over_the_feed,
);

/// Frames of `kind` until `done` holds for one of them (others are skipped).
async fn frames_until(socket: &mut Socket, kind: &str, done: impl Fn(&Value) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match next(socket, left).await {
            Next::Frame(value) if value["type"] == kind => {
                let finished = done(&value);
                seen.push(value);
                if finished {
                    return seen;
                }
            }
            Next::Frame(_) => {}
            other => panic!("waiting for {kind} frames: {other:?} after {seen:?}"),
        }
    }
}

/// Contract 5.4 frames reach every authenticated socket, whatever other clients do;
/// unauthenticated sockets and sockets whose re-auth failed get nothing.
async fn feed_reaches_authenticated_sockets_despite_bad_clients(backend: Backend) {
    let stack = Stack::start_with(backend, |root| {
        let script = reporting_script(&[json!({"name": "build", "state": "success", "message": "built"})], 0);
        write_service(
            root,
            "alpha",
            json!({"steps": [{"name": "build"}, {"name": "never"}]}),
            &script,
        );
    })
    .await;
    let admin = stack.admin_token().await;
    let mut good = authenticated(&stack, &admin).await;
    let mut rude = authenticated(&stack, &admin).await;
    let abrupt = authenticated(&stack, &admin).await;
    let mut lapsed = authenticated(&stack, &admin).await;
    let mut anonymous = connect(&stack).await;
    // A user token narrowed to services:read sees services but no deployments.
    let attenuate = json!({"permissions": ["services:read"]});
    let (status, _, minted) = call(
        &stack,
        Method::POST,
        "/v1/tokens/attenuate",
        Some(&admin),
        Some(attenuate),
    )
    .await;
    assert_eq!(status, 200, "{minted}");
    let mut narrow = authenticated(&stack, minted["token"].as_str().unwrap()).await;

    rude.send(Message::text("this is not json")).await.unwrap();
    assert_eq!(
        next(&mut rude, Duration::from_secs(5)).await,
        Next::Closed(Some(CloseCode::Invalid))
    );
    drop(abrupt); // gone without a close frame
    send(&mut lapsed, json!({"access_token": "garbage"})).await;
    assert_eq!(frame(&mut lapsed).await, failure());

    // A service appears: sync it.
    let script = reporting_script(&[json!({"name": "only", "state": "success", "message": ""})], 0);
    write_service(&stack.services_dir(), "beta", json!({"description": "new"}), &script);
    let (status, _, body) = call(&stack, Method::POST, "/services/sync", Some(&admin), None).await;
    assert_eq!(status, 200, "{body}");
    let services = frames_until(&mut good, "service", |f| f["name"] == "beta").await;
    let beta = services.last().unwrap();
    assert_eq!(keys(beta), ["data", "deleted", "id", "name", "type"]);
    assert_eq!(
        (beta["data"]["description"].as_str(), beta["deleted"].as_bool()),
        (Some("new"), Some(false))
    );

    // A deployment runs: its deployment and step frames arrive, the deployment first.
    let alpha = service_token(&stack, &admin, "alpha").await;
    let id = start(&stack, &alpha, None).await["id"].as_i64().unwrap();
    let deployments = frames_until(&mut good, "deployment", |f| f["id"] == id).await;
    let first = deployments.last().unwrap();
    assert_eq!(
        keys(first),
        [
            "context",
            "finished",
            "id",
            "origin",
            "service_id",
            "started",
            "type",
            "user"
        ]
    );
    assert!(is_utc_micros(&first["started"]), "{first}");
    let steps = frames_until(&mut good, "step", |f| f["name"] == "build" && f["state"] == "success").await;
    for step in &steps {
        assert_eq!(
            keys(step),
            [
                "deleted",
                "deployment_id",
                "finished",
                "id",
                "message",
                "name",
                "started",
                "state",
                "type"
            ]
        );
        assert_eq!(step["deployment_id"], id);
    }
    let end = frames_until(&mut good, "deployment", |f| f["id"] == id && f["finished"].is_string()).await;
    assert!(is_utc_micros(&end.last().unwrap()["finished"]));
    wait_finished(&stack, &alpha, id).await;

    let mut seen = Vec::new();
    while let Next::Frame(frame) = next(&mut narrow, Duration::from_millis(500)).await {
        seen.push(frame);
    }
    assert!(
        seen.iter().any(|f| f["type"] == "service" && f["name"] == "beta"),
        "{seen:?}"
    );
    assert!(
        seen.iter().all(|f| f["type"] == "service"),
        "a services:read token got {seen:?}"
    );
    for (name, socket) in [("unauthenticated", &mut anonymous), ("failed re-auth", &mut lapsed)] {
        assert_eq!(
            next(socket, Duration::from_millis(500)).await,
            Next::Silent,
            "{name} socket got a frame"
        );
    }
}

/// The shared upstream is reopened when the deploy service comes back, resuming after
/// the last event seen, so a deployment started meanwhile is not missed.
async fn feed_resumes_after_a_deploy_service_restart(backend: Backend) {
    let mut stack = Stack::start_with(backend, |root| {
        let script = reporting_script(&[json!({"name": "build", "state": "success", "message": "built"})], 0);
        write_service(root, "alpha", json!({"steps": [{"name": "build"}]}), &script);
    })
    .await;
    let admin = stack.admin_token().await;
    let alpha = service_token(&stack, &admin, "alpha").await;
    let mut socket = authenticated(&stack, &admin).await;
    let first = start(&stack, &alpha, None).await["id"].as_i64().unwrap();
    frames_until(&mut socket, "deployment", |f| {
        f["id"] == first && f["finished"].is_string()
    })
    .await;

    stack.proc("deploy").kill();
    stack.restart("deploy").await;
    // Until the restarted service has heard the revocation feed it answers 503, as a
    // client would, try again.
    let deadline = Instant::now() + Duration::from_secs(10);
    let second = loop {
        let (status, _, body) = call(&stack, Method::POST, "/deployments/", Some(&alpha), None).await;
        match status {
            200 => break body["id"].as_i64().unwrap(),
            503 if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            _ => panic!("start after the restart: {status} {body}\n{}", stack.logs()),
        }
    };
    let frames = frames_until(&mut socket, "deployment", |f| {
        f["id"] == second && f["finished"].is_string()
    })
    .await;
    assert!(
        frames.iter().any(|f| f["id"] == second && f["finished"].is_null()),
        "start missed: {frames:?}"
    );
}

/// A frame of deployment `id` in short: `deployment finished=…` or `step NAME STATE`
/// (`deleted` when so); None for any other frame.
fn frame_of(frame: &Value, id: i64) -> Option<String> {
    match frame["type"].as_str() {
        Some("deployment") if frame["id"] == id => {
            Some(format!("deployment finished={}", frame["finished"].is_string()))
        }
        Some("step") if frame["deployment_id"] == id => Some(format!(
            "step {} {}{}",
            frame["name"].as_str().unwrap_or_default(),
            frame["state"].as_str().unwrap_or_default(),
            if frame["deleted"] == true { " deleted" } else { "" }
        )),
        _ => None,
    }
}

/// The next `count` frames of deployment `id`, in short, and the frames themselves.
async fn frames_of(socket: &mut Socket, id: i64, count: usize) -> (Vec<String>, Vec<Value>) {
    let (mut short, mut frames) = (Vec::new(), Vec::new());
    while short.len() < count {
        let value = frame(socket).await;
        if let Some(s) = frame_of(&value, id) {
            short.push(s);
            frames.push(value);
        }
    }
    (short, frames)
}

/// Asserts that no frame of deployment `id` arrives for a while.
async fn no_more_frames_of(socket: &mut Socket, id: i64) {
    let deadline = Instant::now() + Duration::from_millis(800);
    while let Next::Frame(value) = next(socket, deadline.saturating_duration_since(Instant::now())).await {
        assert_eq!(frame_of(&value, id), None, "an extra frame: {value}");
    }
}

/// Contract 2.11: a deployment that starts at once is announced once: one `deployment`
/// frame, then one `step` frame per planned step, the first already running; for a
/// plan from config.json, for `Unknown step`, and for a plan from the last success.
async fn a_start_is_announced_once(backend: Backend) {
    let stack = Stack::start_with(backend, |root| {
        let spool = spool(root.parent().unwrap());
        let steps = json!({"steps": [{"name": "build"}, {"name": "deploy"}]});
        write_service(root, "alpha", steps, &gated_script(&spool, "alpha"));
        write_service(root, "gamma", json!({}), &gated_script(&spool, "gamma"));
    })
    .await;
    let spool = spool(stack.dir.path());
    let admin = stack.admin_token().await;
    let mut socket = authenticated(&stack, &admin).await;
    let alpha = service_token(&stack, &admin, "alpha").await;
    let gamma = service_token(&stack, &admin, "gamma").await;
    let announced = ["deployment finished=false", "step build running", "step deploy pending"];

    let first = start(&stack, &alpha, None).await["id"].as_i64().unwrap();
    assert_eq!(frames_of(&mut socket, first, 3).await.0, announced);
    no_more_frames_of(&mut socket, first).await;

    let unknown = start(&stack, &gamma, None).await["id"].as_i64().unwrap();
    assert_eq!(
        frames_of(&mut socket, unknown, 2).await.0,
        ["deployment finished=false", "step Unknown step running"]
    );
    no_more_frames_of(&mut socket, unknown).await;

    // The first run succeeds (deploy never reported); the next plan comes from it.
    release(&spool, "alpha");
    frames_until(&mut socket, "deployment", |f| {
        f["id"] == first && f["finished"].is_string()
    })
    .await;
    wait_finished(&stack, &alpha, first).await;
    std::fs::remove_file(spool.join("alpha.go")).unwrap();
    let second = start(&stack, &alpha, None).await["id"].as_i64().unwrap();
    assert_eq!(frames_of(&mut socket, second, 3).await.0, announced);
    no_more_frames_of(&mut socket, second).await;
    release(&spool, "alpha");
    release(&spool, "gamma");
    wait_finished(&stack, &alpha, second).await;
    wait_finished(&stack, &gamma, unknown).await;
}

/// Contract 4.10 step 6 and 2.13 over the live feed: a retried step is a new step
/// (its own id); finish sends the `deployment` frame with `finished`, then one
/// `deleted` step frame per unfinished step, and nothing follows when the script ends.
async fn retries_and_finish_over_the_feed(backend: Backend) {
    let stack = Stack::start_with(backend, |root| {
        let spool = spool(root.parent().unwrap());
        let retry = reporting_script(
            &[
                json!({"name": "migrate", "state": "failure", "message": "locked"}),
                json!({"name": "migrate", "state": "success", "message": "migrated"}),
            ],
            0,
        );
        write_service(root, "alpha", json!({"steps": [{"name": "migrate"}]}), &retry);
        let steps = json!({"steps": [{"name": "build"}, {"name": "deploy"}]});
        write_service(root, "beta", steps, &gated_script(&spool, "beta"));
    })
    .await;
    let spool = spool(stack.dir.path());
    let admin = stack.admin_token().await;
    let mut socket = authenticated(&stack, &admin).await;

    let alpha = service_token(&stack, &admin, "alpha").await;
    let id = start(&stack, &alpha, None).await["id"].as_i64().unwrap();
    let (short, frames) = frames_of(&mut socket, id, 5).await;
    assert_eq!(
        short,
        [
            "deployment finished=false",
            "step migrate running",
            "step migrate failure",
            "step migrate success",
            "deployment finished=true"
        ]
    );
    assert_eq!(frames[1]["id"], frames[2]["id"]);
    assert_ne!(frames[2]["id"], frames[3]["id"], "a retry is a new step");

    let beta = service_token(&stack, &admin, "beta").await;
    let id = start(&stack, &beta, None).await["id"].as_i64().unwrap();
    assert_eq!(frames_of(&mut socket, id, 3).await.0.len(), 3);
    let token = gated_config(&stack, &spool, "beta").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _, body) = call(&stack, Method::PUT, "/deployments/finish/", Some(&token), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        frames_of(&mut socket, id, 3).await.0,
        [
            "deployment finished=true",
            "step build running deleted",
            "step deploy pending deleted"
        ]
    );
    release(&spool, "beta");
    no_more_frames_of(&mut socket, id).await;
}

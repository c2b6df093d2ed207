//! The gateway's own identity towards the backends: its services cache and its
//! WebSocket hub follow the registry and the deploy service with the gateway's
//! credential from the start (no user's token borrowed, no first request awaited),
//! two gateways on the same backends both see a change, and when the registry replica
//! a gateway streams from is killed (SIGKILL), the gateway reconnects to another
//! replica, reads the list again and misses nothing: neither its cache nor its
//! WebSockets.
//!
//! That an answer came from the cache is shown by renaming a row in the registry's
//! database behind everyone's back (no event): only a cache keeps the old name.

use std::{net::SocketAddr, path::Path, time::Duration};

use proto::registry::v1::{self as pb, registry_service_client::RegistryServiceClient};
use reqwest::Method;
use serde_json::{Value, json};
use tests::{
    Backend, Stack,
    balancer::Balancer,
    grpc::bearer,
    registry_fixture::rename_behind_the_back,
    replica_fixture::Extras,
    support::{self, call, write_service},
    wait_until,
    websocket_fixture::{Next, Socket, next, send, success},
};
use tokio_tungstenite::connect_async;

const CACHE_ON: &str = "services cache on";
const CACHE_FILLED: &str = "services cache filled";

fn services(root: &Path) {
    let script = support::reporting_script(&[json!({"name": "build", "state": "success"})], 0);
    for name in ["alpha", "beta"] {
        write_service(root, name, json!({"steps": [{"name": "build"}]}), &script);
    }
}

/// `GET /services/` at the gateway `gateway`: the names, sorted.
async fn listed(stack: &Stack, gateway: SocketAddr, token: &str) -> Result<Vec<String>, String> {
    let response = stack
        .http
        .get(format!("http://{gateway}/services/"))
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body: Value = response.json().await.map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("{status}: {body}"));
    }
    let mut names: Vec<String> = body
        .as_array()
        .ok_or_else(|| format!("not a list: {body}"))?
        .iter()
        .map(|s| s["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    names.sort();
    Ok(names)
}

/// Polls `GET /services/` at `gateway` until it lists exactly `want` (at most 20 s).
async fn until_listed(stack: &Stack, gateway: SocketAddr, token: &str, want: &[&str]) {
    wait_until(Duration::from_secs(20), async || {
        match listed(stack, gateway, token).await {
            Ok(names) if names == want => Ok(()),
            other => Err(format!("{gateway} lists {other:?}, not {want:?}")),
        }
    })
    .await
}

/// Waits until `log()` holds `line` at least `n` times.
async fn until_logged(log: impl Fn() -> String, line: &str, n: usize) {
    wait_until(Duration::from_secs(20), async || match log() {
        text if text.matches(line).count() >= n => Ok(()),
        text => Err(format!("never logged {line:?} {n} times:\n{text}")),
    })
    .await
}

async fn registry_at(addr: SocketAddr) -> RegistryServiceClient<tonic::transport::Channel> {
    RegistryServiceClient::new(tests::grpc::channel(addr).await)
}

/// A WebSocket at `gateway`, authenticated as the admin.
async fn socket_at(gateway: SocketAddr, token: &str) -> Socket {
    let url = format!("ws://{gateway}/deployments/ws/{}", uuid::Uuid::new_v4());
    let mut socket = connect_async(url).await.unwrap().0;
    send(&mut socket, json!({"access_token": token})).await;
    match next(&mut socket, Duration::from_secs(10)).await {
        Next::Frame(frame) => assert_eq!(frame, success("admin")),
        other => panic!("no authentication answer: {other:?}"),
    }
    socket
}

/// Frames until one matches `want` (at most 20 s); returns every frame seen.
async fn frames_until(socket: &mut Socket, what: &str, want: impl Fn(&Value) -> bool) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match next(socket, left).await {
            Next::Frame(frame) => {
                let done = want(&frame);
                seen.push(frame);
                if done {
                    return seen;
                }
            }
            other => panic!("waiting for {what}: {other:?} after {seen:?}"),
        }
    }
}

fn service_frame(name: &str, deleted: bool) -> impl Fn(&Value) -> bool {
    move |f: &Value| f["type"] == "service" && f["name"] == name && f["deleted"] == deleted
}

/// The id of the service `name` at the registry `registry`.
async fn id_of(registry: SocketAddr, token: &str, name: &str) -> i64 {
    let list = registry_at(registry)
        .await
        .list_services(bearer(pb::ListServicesRequest::default(), token))
        .await
        .unwrap()
        .into_inner();
    list.services
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no {name}"))
        .id
}

/// A sync at the registry `registry` directly (not through any gateway).
async fn sync_at(registry: SocketAddr, token: &str) {
    registry_at(registry)
        .await
        .sync_services(bearer(pb::SyncServicesRequest {}, token))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_follows_the_backends_on_its_own_authority() {
    let stack = Stack::start_with(Backend::Sqlite, services).await;
    // Filled at start, before any reader asked (logging in is no services request).
    until_logged(|| stack.log("gateway"), CACHE_FILLED, 1).await;
    let admin = stack.admin_token().await;
    rename_behind_the_back(&stack, stack.registry, &admin, "alpha", "renamed").await;
    assert_eq!(
        listed(&stack, stack.gateway, &admin).await.unwrap(),
        ["alpha", "beta"],
        "the very first reader is served from the cache"
    );

    // The hub's feed: a service changed at the registry directly and a deployment
    // reach an authenticated socket.
    let mut socket = socket_at(stack.gateway, &admin).await;
    write_service(&stack.services_dir(), "gamma", json!({}), "#!/bin/sh\n");
    sync_at(stack.registry, &admin).await;
    frames_until(&mut socket, "gamma's frame", service_frame("gamma", false)).await;
    let beta = support::service_token(&stack, &admin, "beta").await;
    let started = support::start(&stack, &beta, None).await;
    let id = started["id"].clone();
    frames_until(&mut socket, "the deployment's frame", |f| {
        f["type"] == "deployment" && f["id"] == id
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_gateways_on_the_same_backends_both_see_a_change() {
    let mut stack = Stack::start_with(Backend::Sqlite, services).await;
    let mut extras = Extras::default();
    let second = extras.spawn_like(&mut stack, "gateway", "gateway-2", &[]);
    until_logged(|| stack.log("gateway"), CACHE_FILLED, 1).await;
    until_logged(|| extras.log("gateway-2"), CACHE_FILLED, 1).await;
    let admin = stack.admin_token().await;
    rename_behind_the_back(&stack, stack.registry, &admin, "alpha", "renamed").await;
    for gateway in [stack.gateway, second] {
        assert_eq!(
            listed(&stack, gateway, &admin).await.unwrap(),
            ["alpha", "beta"],
            "{gateway}"
        );
    }

    // A sync through the first gateway: the renamed row goes, alpha and gamma come.
    // The first reads its own write at once; the second learns of it from its stream.
    write_service(&stack.services_dir(), "gamma", json!({}), "#!/bin/sh\n");
    let (status, _, body) = call(&stack, Method::POST, "/services/sync", Some(&admin), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        listed(&stack, stack.gateway, &admin).await.unwrap(),
        ["alpha", "beta", "gamma"]
    );
    until_listed(&stack, second, &admin, &["alpha", "beta", "gamma"]).await;
}

/// Two registry replicas on one PostgreSQL database behind a balancer; a gateway
/// streams from one of them. That one is killed, and a change is made at the other
/// while no connection gets through: once they do, the gateway is on the other
/// replica, its cache and its sockets have the change, and later changes follow.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_registry_replica_leaves_the_gateway_on_another_missing_nothing() {
    if !Backend::Postgres.available().await {
        return;
    }
    let mut stack = Stack::start_with(Backend::Postgres, services).await;
    let mut extras = Extras::default();
    let replica = extras.spawn_like(&mut stack, "registry", "registry-2", &[]);
    let balancer = Balancer::start(vec![stack.registry, replica]).await;
    let gateway = extras.spawn_like(
        &mut stack,
        "gateway",
        "gateway-2",
        &[("--registry-url", balancer.url())],
    );
    let gateway_log = |extras: &Extras| extras.log("gateway-2");
    until_logged(|| gateway_log(&extras), CACHE_FILLED, 1).await;
    let admin = stack.admin_token().await;
    let mut socket = socket_at(gateway, &admin).await;
    let streamed_from = balancer.connected();
    assert_eq!(
        streamed_from.len(),
        1,
        "one connection to one replica: {streamed_from:?}"
    );
    let (dead, alive) = match streamed_from[0] {
        a if a == stack.registry => (a, replica),
        _ => (replica, stack.registry),
    };
    let old_alpha = id_of(alive, &admin, "alpha").await;
    rename_behind_the_back(&stack, alive, &admin, "alpha", "renamed").await;
    assert_eq!(
        listed(&stack, gateway, &admin).await.unwrap(),
        ["alpha", "beta"],
        "cached"
    );

    // No connection gets through while the replica dies and the other one changes.
    balancer.hold(true);
    if dead == stack.registry {
        stack.proc("registry").kill();
    } else {
        extras.proc("registry-2").kill();
    }
    until_logged(|| gateway_log(&extras), "services cache off", 1).await;
    write_service(&stack.services_dir(), "gamma", json!({}), "#!/bin/sh\n");
    sync_at(alive, &admin).await;
    balancer.hold(false);

    // Back on the other replica: the list read again (the renamed row gone, alpha and
    // gamma added), and the socket told of what happened while it was down.
    until_logged(|| gateway_log(&extras), CACHE_ON, 2).await;
    until_listed(&stack, gateway, &admin, &["alpha", "beta", "gamma"]).await;
    assert_eq!(balancer.connected(), [alive]);
    // (The differences come as fresh rows first, then the rows gone: the renamed one,
    // still "alpha" to the feed, which never saw the silent rename.)
    frames_until(&mut socket, "gamma's frame", service_frame("gamma", false)).await;
    frames_until(&mut socket, "the old row's deletion", |f| {
        f["type"] == "service" && f["id"] == old_alpha && f["deleted"] == true
    })
    .await;

    // Cached again, and later changes at the live replica follow.
    rename_behind_the_back(&stack, alive, &admin, "gamma", "delta").await;
    assert_eq!(
        listed(&stack, gateway, &admin).await.unwrap(),
        ["alpha", "beta", "gamma"],
        "cached again"
    );
    let beta = id_of(alive, &admin, "beta").await;
    registry_at(alive)
        .await
        .delete_service(bearer(pb::DeleteServiceRequest { id: beta }, &admin))
        .await
        .unwrap();
    until_listed(&stack, gateway, &admin, &["alpha", "delta"]).await;
    frames_until(&mut socket, "beta's deletion", service_frame("beta", true)).await;
}

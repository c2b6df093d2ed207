//! The gateway's cache of `GET /services/`: it answers only while the gateway follows
//! the registry's `WatchServices`, a sync or delete through the gateway is read back at
//! once (HTTP, /v1 and gRPC), a change made at the registry directly reaches it, a
//! registry restart never leaves stale data behind, and every token is still checked
//! (revoked, wrong type, missing permission: 401) although the list is cached (by the
//! gateway, with its own credential: see also `gateway_identity.rs`). On SQLite and
//! PostgreSQL.
//!
//! That an answer came from the cache is shown by renaming a row in the registry's
//! database behind everyone's back (no event) and waiting until the registry lists the
//! new name: the cache keeps the old name until something invalidates it.

use tests::support;

use std::time::Duration;

use common::token::TokenType;
use proto::registry::v1::{self as pb, registry_service_client::RegistryServiceClient};
use reqwest::Method;
use serde_json::{Value, json};
use support::{call, get, signed, write_service};
use tests::{Backend, Stack, grpc::bearer, on_every_backend, registry_fixture::rename_behind_the_back, wait_until};

on_every_backend!(
    writes_through_the_gateway_are_read_back_at_once,
    changes_at_the_registry_reach_the_cache,
    a_restarted_registry_leaves_nothing_stale,
    tokens_are_checked_although_the_list_is_cached,
);

const CACHE_ON: &str = "services cache on";

fn services(root: &std::path::Path) {
    for name in ["alpha", "beta"] {
        write_service(root, name, json!({"description": name}), "#!/bin/sh\n");
    }
}

fn names(list: &Value) -> Vec<String> {
    let mut names: Vec<String> = list
        .as_array()
        .unwrap_or_else(|| panic!("a list: {list}"))
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

async fn listed(stack: &Stack, token: &str) -> Vec<String> {
    let (status, body) = get(stack, "/services/", token).await;
    assert_eq!(status, 200, "{body}\n{}", stack.logs());
    names(&body)
}

/// Lists until the gateway follows the registry (the `n`th time it logs so), then once
/// more, which stores the list; returns that list's names.
async fn warm(stack: &Stack, token: &str, n: usize) -> Vec<String> {
    wait_until(Duration::from_secs(10), async || {
        listed(stack, token).await;
        match stack.log("gateway") {
            log if log.matches(CACHE_ON).count() >= n => Ok(()),
            log => Err(format!("cache never on:\n{log}")),
        }
    })
    .await;
    listed(stack, token).await
}

/// Warms the cache and shows it answers: a silent rename of alpha is not seen through
/// it.
async fn warm_and_prove_cached(stack: &Stack, token: &str, n: usize) {
    let cached = warm(stack, token, n).await;
    assert!(cached.iter().any(|n| n == "alpha"), "{cached:?}");
    rename_behind_the_back(stack, stack.registry, token, "alpha", "renamed").await;
    assert_eq!(listed(stack, token).await, cached, "served from the cache");
}

/// Polls `GET /services/` until `done` holds for its names (at most 10 s).
async fn until(stack: &Stack, token: &str, what: &str, done: impl Fn(&[String]) -> bool) {
    wait_until(Duration::from_secs(10), async || match listed(stack, token).await {
        names if done(&names) => Ok(()),
        names => Err(format!("{what}: still {names:?}")),
    })
    .await
}

fn id_of(list: &Value, name: &str) -> i64 {
    list.as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("{name} in {list}"))["id"]
        .as_i64()
        .unwrap()
}

async fn writes_through_the_gateway_are_read_back_at_once(backend: Backend) {
    let stack = Stack::start_with(backend, services).await;
    let token = stack.admin_token().await;
    let root = stack.services_dir();
    warm_and_prove_cached(&stack, &token, 1).await;

    // fastDeploy's sync and delete, then /v1's (the cache warm before each): the
    // renamed row is deleted, alpha comes back, gamma is added, then deleted.
    write_service(&root, "gamma", json!({}), "#!/bin/sh\n");
    for (sync, delete) in [("/services/sync", "/services"), ("/v1/services/sync", "/v1/services")] {
        warm(&stack, &token, 1).await;
        let (status, _, body) = call(&stack, Method::POST, sync, Some(&token), None).await;
        assert_eq!(status, 200, "{sync}: {body}");
        assert_eq!(listed(&stack, &token).await, ["alpha", "beta", "gamma"], "{sync}");
        let (_, list) = get(&stack, "/services/", &token).await;
        let gamma = id_of(&list, "gamma");
        let path = format!("{delete}/{gamma}");
        let (status, _, _) = call(&stack, Method::DELETE, &path, Some(&token), None).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(listed(&stack, &token).await, ["alpha", "beta"], "{path}");
    }

    // gRPC through the gateway.
    warm(&stack, &token, 1).await;
    let mut registry = RegistryServiceClient::new(tests::grpc::channel(stack.gateway).await);
    registry
        .sync_services(bearer(pb::SyncServicesRequest {}, &token))
        .await
        .unwrap();
    assert_eq!(listed(&stack, &token).await, ["alpha", "beta", "gamma"]);
    let (_, list) = get(&stack, "/services/", &token).await;
    registry
        .delete_service(bearer(
            pb::DeleteServiceRequest {
                id: id_of(&list, "gamma"),
            },
            &token,
        ))
        .await
        .unwrap();
    assert_eq!(listed(&stack, &token).await, ["alpha", "beta"]);

    // The body is fastDeploy's `[{id, name, data}]`.
    let text = stack
        .http
        .get(stack.url("/services/"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(text.headers()["content-type"], "application/json");
    let list: Value = text.json().await.unwrap();
    let alpha = list.as_array().unwrap().iter().find(|s| s["name"] == "alpha").unwrap();
    assert_eq!(
        alpha,
        &json!({"id": id_of(&list, "alpha"), "name": "alpha", "data": {"description": "alpha"}})
    );
}

async fn changes_at_the_registry_reach_the_cache(backend: Backend) {
    let stack = Stack::start_with(backend, services).await;
    let token = stack.admin_token().await;
    warm_and_prove_cached(&stack, &token, 1).await;
    let mut registry = RegistryServiceClient::new(tests::grpc::channel(stack.registry).await);

    write_service(&stack.services_dir(), "gamma", json!({}), "#!/bin/sh\n");
    registry
        .sync_services(bearer(pb::SyncServicesRequest {}, &token))
        .await
        .unwrap();
    until(&stack, &token, "a sync at the registry", |n| {
        n == ["alpha", "beta", "gamma"]
    })
    .await;

    warm(&stack, &token, 1).await;
    let (_, list) = get(&stack, "/services/", &token).await;
    registry
        .delete_service(bearer(
            pb::DeleteServiceRequest {
                id: id_of(&list, "beta"),
            },
            &token,
        ))
        .await
        .unwrap();
    until(&stack, &token, "a delete at the registry", |n| n == ["alpha", "gamma"]).await;
}

async fn a_restarted_registry_leaves_nothing_stale(backend: Backend) {
    let mut stack = Stack::start_with(backend, services).await;
    let token = stack.admin_token().await;
    warm_and_prove_cached(&stack, &token, 1).await;

    // Down: the gateway stops answering from the cache (503, as without it).
    stack.proc("registry").kill();
    wait_until(Duration::from_secs(10), async || {
        let (status, body) = get(&stack, "/services/", &token).await;
        if status == 503 {
            return Ok(());
        }
        assert_eq!(status, 200, "{body}");
        Err("still answering from the cache".to_owned())
    })
    .await;
    assert_eq!(get(&stack, "/services/", &token).await.0, 503);

    // Back, having synced at start: the first list is the registry's, never the cache's.
    write_service(&stack.services_dir(), "gamma", json!({}), "#!/bin/sh\n");
    stack.restart("registry").await;
    assert_eq!(listed(&stack, &token).await, ["alpha", "beta", "gamma"]);
    // And the cache comes back on, with the fresh list.
    warm_and_prove_cached(&stack, &token, 2).await;
}

async fn tokens_are_checked_although_the_list_is_cached(backend: Backend) {
    let stack = Stack::start_with(backend, services).await;
    let subscriber = stack.admin_token().await;
    let other = stack.admin_token().await;
    warm_and_prove_cached(&stack, &subscriber, 1).await;
    assert_eq!(
        listed(&stack, &other).await,
        ["alpha", "beta"],
        "cached for every reader"
    );

    // No token, a token of another type, a user token without services:read: 401.
    let (status, _, _) = call(&stack, Method::GET, "/services/", None, None).await;
    assert_eq!(status, 401);
    for token_type in [TokenType::Service, TokenType::Config, TokenType::Deployment] {
        let (status, body) = get(&stack, "/services/", &signed(&stack, token_type, 600)).await;
        assert_eq!(status, 401, "{token_type}: {body}");
    }
    let (status, _, derived) = call(
        &stack,
        Method::POST,
        "/v1/tokens/attenuate",
        Some(&subscriber),
        Some(json!({"permissions": ["deployments:read"]})),
    )
    .await;
    assert_eq!(status, 200, "{derived}");
    let narrow = derived["token"].as_str().unwrap();
    let (status, body) = get(&stack, "/services/", narrow).await;
    assert_eq!(
        (status, body),
        (401, json!({"detail": "Could not validate credentials"}))
    );
    let (status, _) = get(&stack, "/services/", &signed(&stack, TokenType::User, -60)).await;
    assert_eq!(status, 401, "expired");
    assert_eq!(listed(&stack, &other).await, ["alpha", "beta"], "still cached");

    // A revoked reader is refused while the cache still answers the others.
    support::revoke(&stack, &subscriber, &other, "/services/").await;
    assert_eq!(listed(&stack, &subscriber).await, ["alpha", "beta"], "still cached");

    // The cache is the gateway's, filled with its own credential: revoking any
    // reader's token refuses that reader and leaves the cache on for the others.
    let third = stack.admin_token().await;
    support::revoke(&stack, &third, &subscriber, "/services/").await;
    let (status, _) = get(&stack, "/services/", &subscriber).await;
    assert_eq!(status, 401);
    assert_eq!(listed(&stack, &third).await, ["alpha", "beta"], "still cached");
    assert_eq!(stack.log("gateway").matches(CACHE_ON).count(), 1, "never resubscribed");
}

//! Slipway's own HTTP/JSON API for users: JSON login, who am I, creating users, in
//! proto3 JSON, with 403 for a valid token without the permission. On SQLite and
//! PostgreSQL.

use tests::support;

use serde_json::json;
use support::send;
use tests::{Backend, Stack, on_every_backend};

on_every_backend!(users_over_v1);

async fn users_over_v1(backend: Backend) {
    use reqwest::Method;
    let stack = Stack::start(backend).await;
    let (status, login) = send(
        &stack,
        Method::POST,
        "/v1/login",
        None,
        Some(json!({"username": tests::stack::ADMIN, "password": tests::stack::ADMIN_PASSWORD})),
    )
    .await;
    assert_eq!(status, 200, "{login}");
    assert_eq!(login["tokenType"], "bearer");
    assert!(login["expiresAt"].as_str().unwrap().ends_with('Z'), "{login}");
    let admin = login["accessToken"].as_str().unwrap().to_owned();
    let (status, body) = send(
        &stack,
        Method::POST,
        "/v1/login",
        None,
        Some(json!({"username": "admin", "password": "wrong"})),
    )
    .await;
    assert_eq!(
        (status, body),
        (401, json!({"detail": "Incorrect username or password"}))
    );
    let (status, _) = send(&stack, Method::POST, "/v1/login", None, Some(json!({"user": "x"}))).await;
    assert_eq!(status, 400, "unknown fields are refused");

    let (status, me) = send(&stack, Method::GET, "/v1/users/me", Some(&admin), None).await;
    assert_eq!(status, 200);
    assert_eq!(me["name"], "admin");
    assert_eq!(me["id"], "1", "int64 is a string in proto3 JSON");

    let carol = json!({"name": "carol", "password": "carols password"});
    let (status, created) = send(&stack, Method::POST, "/v1/users", Some(&admin), Some(carol.clone())).await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["name"], "carol");
    let (status, _) = send(&stack, Method::POST, "/v1/users", Some(&admin), Some(carol)).await;
    assert_eq!(status, 409, "the name is taken");
    let (status, _) = stack.login("carol", "carols password").await;
    assert_eq!(status, 200);

    // A config token is valid but may not manage users; a read-only derived user token neither.
    let (_, config) = send(&stack, Method::POST, "/v1/tokens", Some(&admin), Some(json!({}))).await;
    let config = config["token"].as_str().unwrap().to_owned();
    let (_, reader) = send(
        &stack,
        Method::POST,
        "/v1/tokens/attenuate",
        Some(&admin),
        Some(json!({"permissions": ["tokens:read"]})),
    )
    .await;
    let reader = reader["token"].as_str().unwrap().to_owned();
    let dave = json!({"name": "dave", "password": "daves password"});
    let (status, _) = send(&stack, Method::POST, "/v1/users", Some(&config), Some(dave.clone())).await;
    assert_eq!(status, 403);
    let (status, _) = send(&stack, Method::POST, "/v1/users", Some(&reader), Some(dave)).await;
    assert_eq!(status, 403);
    let (status, _) = stack.login("dave", "daves password").await;
    assert_eq!(status, 401, "no user was created by refused requests");
    let (status, _) = send(&stack, Method::GET, "/v1/users/me", None, None).await;
    assert_eq!(status, 401);
}

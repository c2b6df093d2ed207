//! The auth service answers authenticated calls from memory (revoked ids, users) and
//! still takes every change at once: a revocation, a disable, an enable, a delete, a
//! new user of a name and a password change count on the very next call, however
//! warm the caches were; a second auth service on the same database refuses what the
//! first revoked within a bound. On SQLite and PostgreSQL.

use std::time::{Duration, Instant};

use proto::auth::v1::{self as auth, auth_service_client::AuthServiceClient};
use serde_json::{Value, json};
use tests::{
    Backend, Stack,
    grpc::{bearer, channel},
    on_every_backend,
    process::Proc,
    stack::{ADMIN, ADMIN_PASSWORD},
    support::{create_user, jti},
    user_claims,
};
use tonic::Code;

on_every_backend!(
    every_change_counts_on_the_next_call,
    a_second_auth_service_follows_the_first_ones_revocations,
);

/// `GET /v1/users/me` through the gateway: status and body.
async fn me(stack: &Stack, token: &str) -> (u16, Value) {
    let response = stack
        .http
        .get(stack.url("/v1/users/me"))
        .bearer_auth(token)
        .send()
        .await
        .expect("GET /v1/users/me");
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

/// `WhoAmI` straight at an auth service.
async fn who_am_i(auth: std::net::SocketAddr, token: &str) -> Result<auth::User, tonic::Status> {
    AuthServiceClient::new(channel(auth).await)
        .who_am_i(bearer(auth::WhoAmIRequest {}, token))
        .await
        .map(tonic::Response::into_inner)
}

/// Asks both ways a few times, so every cache on the path holds the answer.
async fn warm(stack: &Stack, token: &str) {
    for _ in 0..3 {
        assert_eq!(me(stack, token).await.0, 200, "{}", stack.logs());
        who_am_i(stack.auth, token).await.expect("WhoAmI");
    }
}

/// Refused both ways, on the first call after the change.
async fn refused_now(stack: &Stack, token: &str, what: &str) {
    let status = who_am_i(stack.auth, token).await.expect_err(what);
    assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
    assert_eq!(me(stack, token).await.0, 401, "{what}");
}

async fn post(stack: &Stack, path: &str, token: &str, body: Value) -> u16 {
    stack
        .http
        .post(stack.url(path))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("POST")
        .status()
        .as_u16()
}

async fn login(stack: &Stack, user: &str, password: &str) -> String {
    let (status, body) = stack.login(user, password).await;
    assert_eq!(status, 200, "{user}: {body}\n{}", stack.logs());
    body["access_token"].as_str().expect("access_token").to_owned()
}

async fn revoke(auth: std::net::SocketAddr, admin: &str, token: &str) {
    AuthServiceClient::new(channel(auth).await)
        .revoke_tokens(bearer(auth::RevokeTokensRequest { ids: vec![jti(token)] }, admin))
        .await
        .expect("RevokeTokens");
}

async fn every_change_counts_on_the_next_call(backend: Backend) {
    let stack = Stack::start(backend).await;
    let admin = stack.admin_token().await;
    create_user(&stack, &admin, "bob", "bobs password").await;

    // Revocation.
    let token = login(&stack, "bob", "bobs password").await;
    warm(&stack, &token).await;
    revoke(stack.auth, &admin, &token).await;
    refused_now(&stack, &token, "revoked").await;

    // Disable, then enable: the old token stays revoked, a new login works.
    let token = login(&stack, "bob", "bobs password").await;
    warm(&stack, &token).await;
    assert_eq!(post(&stack, "/v1/users/bob/disable", &admin, json!({})).await, 200);
    refused_now(&stack, &token, "disabled").await;
    assert_eq!(stack.login("bob", "bobs password").await.0, 401);
    assert_eq!(post(&stack, "/v1/users/bob/enable", &admin, json!({})).await, 200);
    refused_now(&stack, &token, "revoked when disabled").await;
    let token = login(&stack, "bob", "bobs password").await;
    warm(&stack, &token).await;

    // Password change: every token of bob's goes, the new password works at once.
    let other = login(&stack, "bob", "bobs password").await;
    warm(&stack, &other).await;
    AuthServiceClient::new(channel(stack.auth).await)
        .change_password(bearer(
            auth::ChangePasswordRequest {
                old_password: "bobs password".into(),
                new_password: "bobs new password".into(),
            },
            &token,
        ))
        .await
        .expect("ChangePassword");
    refused_now(&stack, &token, "password changed (the token used)").await;
    refused_now(&stack, &other, "password changed (another token)").await;
    assert_eq!(stack.login("bob", "bobs password").await.0, 401);
    let token = login(&stack, "bob", "bobs new password").await;
    let (status, before) = me(&stack, &token).await;
    assert_eq!(status, 200);

    // Delete; a new user of the same name is another user (a new id).
    warm(&stack, &token).await;
    let response = stack
        .http
        .delete(stack.url("/v1/users/bob"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    refused_now(&stack, &token, "deleted").await;
    // A token for bob that no revocation names (signed with the real key, never
    // recorded): refused because bob is gone, then accepted for the new bob.
    let forged = stack.sign_with_real_key(&user_claims("bob"));
    refused_now(&stack, &forged, "no such user").await;
    refused_now(&stack, &forged, "no such user, asked again").await;
    create_user(&stack, &admin, "bob", "another password").await;
    let (status, after) = me(&stack, &forged).await;
    assert_eq!(status, 200, "the new bob is seen at once: {after}");
    assert_eq!(after["name"], "bob");
    assert_ne!(after["id"], before["id"], "{before} {after}");

    // The admin's own token went through all of it untouched.
    let (status, body) = me(&stack, &admin).await;
    assert_eq!((status, body["name"].as_str()), (200, Some(ADMIN)));
}

/// A second auth service on the first one's database and keys, stopped on drop.
struct SecondAuth(Proc);

impl Drop for SecondAuth {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("----- auth2 log -----\n{}", self.0.log_text());
        }
        self.0.stop(Duration::from_secs(10));
    }
}

fn start_second_auth(stack: &Stack) -> (SecondAuth, std::net::SocketAddr) {
    let kek = stack.dir.path().join("auth-kek");
    let (mut proc, addr_file) = stack.spawn_auth_replica("auth2", Some(&kek));
    let addr = proc.wait_addr(&addr_file);
    (SecondAuth(proc), addr)
}

/// Waits (generously) until `auth` refuses `token`; returns how long it took.
async fn until_refused(auth: std::net::SocketAddr, token: &str, what: &str) -> Duration {
    let started = Instant::now();
    loop {
        match who_am_i(auth, token).await {
            Err(status) if status.code() == Code::Unauthenticated => return started.elapsed(),
            Err(status) => panic!("{what}: {status:?}"),
            Ok(_) => {}
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{what}: still accepted after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn a_second_auth_service_follows_the_first_ones_revocations(backend: Backend) {
    let stack = Stack::start(backend).await;
    let (_second, auth2) = start_second_auth(&stack);
    let admin = stack.admin_token().await;
    create_user(&stack, &admin, "erin", "erins password").await;

    // Revoked on the first: the second refuses it within the bound.
    let token = login(&stack, "erin", "erins password").await;
    for _ in 0..3 {
        who_am_i(auth2, &token)
            .await
            .expect("the second auth service accepts it");
    }
    revoke(stack.auth, &admin, &token).await;
    until_refused(auth2, &token, "revoked on the first").await;

    // Disabled on the first: the user's tokens are revoked, so refused on the second.
    let token = login(&stack, "erin", "erins password").await;
    who_am_i(auth2, &token).await.expect("accepted before the disable");
    assert_eq!(post(&stack, "/v1/users/erin/disable", &admin, json!({})).await, 200);
    until_refused(auth2, &token, "disabled on the first").await;

    // And the other way round: revoked on the second, refused on the first.
    let admin2 = AuthServiceClient::new(channel(auth2).await)
        .login(auth::LoginRequest {
            username: ADMIN.into(),
            password: ADMIN_PASSWORD.into(),
        })
        .await
        .expect("a login on the second")
        .into_inner()
        .access_token;
    who_am_i(stack.auth, &admin2).await.expect("the first accepts it");
    revoke(auth2, &admin, &admin2).await;
    who_am_i(auth2, &admin2)
        .await
        .expect_err("refused at once where revoked");
    until_refused(stack.auth, &admin2, "revoked on the second").await;
}

//! Logins never starve other requests and brute force is slowed: failed logins back off
//! per user name and per client address (429 with `Retry-After`), a wrong password
//! before the limit keeps fastDeploy's 401, the address is the client's (named by the
//! gateway, believed only with the gateway's credential), and a login flood beyond the
//! hashing queue gets 503 with `Retry-After` while authenticated reads go on. Login
//! limits live in the auth service's memory, so these run on SQLite.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Duration,
};

use proto::auth::v1::{LoginRequest, auth_service_client::AuthServiceClient};
use reqwest::header;
use serde_json::{Value, json};
use tests::{
    Backend, Stack,
    grpc::bearer,
    stack::{ADMIN, ADMIN_PASSWORD, Process},
    support::create_user,
};
use tonic::Code;

fn incorrect() -> Value {
    json!({"detail": "Incorrect username or password"})
}

async fn stack_with(auth_env: &[(&'static str, &str)]) -> Stack {
    auth_env
        .iter()
        .fold(Stack::builder(Backend::Sqlite), |builder, (variable, value)| {
            builder.env(Process::Auth, variable, *value)
        })
        .start()
        .await
}

/// An HTTP client whose connections come from `source` (any 127.x address is loopback).
fn client_from(source: Ipv4Addr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(source))
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
}

/// `POST /token` from `client`: status, `Retry-After` and JSON body.
async fn form_login(stack: &Stack, client: &reqwest::Client, user: &str, password: &str) -> (u16, Option<u64>, Value) {
    let response = client
        .post(stack.url("/token"))
        .form(&[("username", user), ("password", password)])
        .send()
        .await
        .expect("POST /token");
    answer(response).await
}

async fn answer(response: reqwest::Response) -> (u16, Option<u64>, Value) {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .map(|v| v.to_str().expect("ASCII").parse().expect("whole seconds"));
    (status, retry_after, response.json().await.unwrap_or(Value::Null))
}

/// A gRPC channel to `addr` whose connection comes from `source`.
async fn grpc_from(addr: SocketAddr, source: Ipv4Addr) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("url")
        .local_address(Some(IpAddr::V4(source)))
        .connect()
        .await
        .expect("connect")
}

fn login(user: &str, password: &str) -> LoginRequest {
    LoginRequest {
        username: user.into(),
        password: password.into(),
    }
}

fn retry_hint(status: &tonic::Status) -> u64 {
    status
        .metadata()
        .get("retry-after")
        .unwrap_or_else(|| panic!("no retry-after in {status:?}"))
        .to_str()
        .expect("ASCII")
        .parse()
        .expect("whole seconds")
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_passwords_bar_that_user_for_a_while_and_no_one_else() {
    let stack = stack_with(&[
        ("SLIPWAY_LOGIN_USER_FAILURES", "3"),
        ("SLIPWAY_LOGIN_ADDRESS_FAILURES", "1000"),
        // Generous, so the bar is still on when the test looks.
        ("SLIPWAY_LOGIN_BACKOFF_SECS", "120"),
    ])
    .await;
    let admin = stack.admin_token().await;
    create_user(&stack, &admin, "carol", "carols password").await;
    create_user(&stack, &admin, "dave", "daves password").await;

    // Before the limit: fastDeploy's 401, no Retry-After; a success clears the count.
    for _ in 0..2 {
        let (status, retry, body) = form_login(&stack, &stack.http, "carol", "wrong").await;
        assert_eq!((status, retry, body), (401, None, incorrect()));
    }
    assert_eq!(stack.login("carol", "carols password").await.0, 200);
    for _ in 0..3 {
        let (status, retry, body) = form_login(&stack, &stack.http, "carol", "wrong").await;
        assert_eq!((status, retry, body), (401, None, incorrect()));
    }
    // Barred now, even with the right password, on every way in.
    let (status, retry, body) = form_login(&stack, &stack.http, "carol", "carols password").await;
    assert_eq!(status, 429, "{body}\n{}", stack.logs());
    assert!(matches!(retry, Some(1..=120)), "{retry:?}");
    assert!(body["detail"].is_string(), "{body}");
    let response = stack
        .http
        .post(stack.url("/v1/login"))
        .json(&json!({"username": "carol", "password": "carols password"}))
        .send()
        .await
        .unwrap();
    let (status, retry, _) = answer(response).await;
    assert_eq!(status, 429);
    assert!(matches!(retry, Some(1..=120)), "{retry:?}");
    let refused = AuthServiceClient::new(grpc_from(stack.gateway, Ipv4Addr::LOCALHOST).await)
        .login(login("carol", "carols password"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!((1..=120).contains(&retry_hint(&refused)));
    // A name that does not exist is barred the same way (a 429 says nothing of who exists).
    for _ in 0..3 {
        assert_eq!(stack.login("nobody", "wrong").await.0, 401);
    }
    assert_eq!(stack.login("nobody", "wrong").await.0, 429);

    // Everyone else logs in as before, from the same address.
    assert_eq!(stack.login("dave", "daves password").await.0, 200);
    assert_eq!(stack.login(ADMIN, ADMIN_PASSWORD).await.0, 200);
    let (status, retry, body) = form_login(&stack, &stack.http, "dave", "wrong").await;
    assert_eq!((status, retry, body), (401, None, incorrect()));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_address_limit_follows_the_client_not_the_gateway() {
    let stack = stack_with(&[
        ("SLIPWAY_LOGIN_USER_FAILURES", "1000"),
        ("SLIPWAY_LOGIN_ADDRESS_FAILURES", "3"),
        ("SLIPWAY_LOGIN_BACKOFF_SECS", "120"),
    ])
    .await;
    let guesser = client_from(Ipv4Addr::new(127, 0, 0, 2));
    for name in ["a", "b", "c"] {
        let (status, _, body) = form_login(&stack, &guesser, name, "guess").await;
        assert_eq!((status, body), (401, incorrect()));
    }
    // The guessing address is barred, whatever name it tries, on every way in ...
    let (status, retry, _) = form_login(&stack, &guesser, ADMIN, ADMIN_PASSWORD).await;
    assert_eq!(status, 429, "{}", stack.logs());
    assert!(matches!(retry, Some(1..=120)), "{retry:?}");
    let refused = AuthServiceClient::new(grpc_from(stack.gateway, Ipv4Addr::new(127, 0, 0, 2)).await)
        .login(login(ADMIN, ADMIN_PASSWORD))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");

    // ... while another address (the gateway's own included) logs in, even when it
    // claims to be the guesser: the gateway names the connection's address.
    let other = client_from(Ipv4Addr::new(127, 0, 0, 3));
    let (status, _, body) = form_login(&stack, &other, ADMIN, ADMIN_PASSWORD).await;
    assert_eq!(status, 200, "{body}");
    let response = other
        .post(stack.url("/v1/login"))
        .header("x-forwarded-for", "127.0.0.2")
        .json(&json!({"username": ADMIN, "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut request = tonic::Request::new(login(ADMIN, ADMIN_PASSWORD));
    request
        .metadata_mut()
        .insert("x-forwarded-for", "127.0.0.2".parse().unwrap());
    AuthServiceClient::new(grpc_from(stack.gateway, Ipv4Addr::new(127, 0, 0, 3)).await)
        .login(request)
        .await
        .expect("a proxied login from another address");

    // Straight to the auth service, the header is not believed without the gateway's
    // credential: the connection's address counts.
    let mut request = tonic::Request::new(login(ADMIN, ADMIN_PASSWORD));
    request
        .metadata_mut()
        .insert("x-forwarded-for", "127.0.0.2".parse().unwrap());
    AuthServiceClient::new(grpc_from(stack.auth, Ipv4Addr::new(127, 0, 0, 4)).await)
        .login(request)
        .await
        .expect("a direct login naming another address");
    let refused = AuthServiceClient::new(grpc_from(stack.auth, Ipv4Addr::new(127, 0, 0, 2)).await)
        .login(login(ADMIN, ADMIN_PASSWORD))
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Code::ResourceExhausted,
        "the guesser is barred directly too"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_login_flood_beyond_the_queue_gets_503_and_reads_go_on() {
    let stack = stack_with(&[
        ("SLIPWAY_LOGIN_HASH_THREADS", "1"),
        ("SLIPWAY_LOGIN_QUEUE", "1"),
        ("SLIPWAY_LOGIN_USER_FAILURES", "100000"),
        ("SLIPWAY_LOGIN_ADDRESS_FAILURES", "100000"),
    ])
    .await;
    let admin = stack.admin_token().await;
    let reads = {
        let (http, url, admin) = (stack.http.clone(), stack.url("/v1/users/me"), admin.clone());
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..200 {
                let response = http
                    .get(&url)
                    .bearer_auth(&admin)
                    .send()
                    .await
                    .expect("GET /v1/users/me");
                statuses.push(response.status().as_u16());
            }
            statuses
        })
    };
    let mut busy = 0;
    let mut ok = 0;
    for _round in 0..5 {
        let logins: Vec<_> = (0..24)
            .map(|i| {
                let (http, url) = (stack.http.clone(), stack.url(["/token", "/v1/login"][i % 2]));
                tokio::spawn(async move {
                    let request = http.post(&url);
                    let request = if url.ends_with("/token") {
                        request.form(&[("username", ADMIN), ("password", ADMIN_PASSWORD)])
                    } else {
                        request.json(&json!({"username": ADMIN, "password": ADMIN_PASSWORD}))
                    };
                    answer(request.send().await.expect("a login")).await
                })
            })
            .collect();
        for login in logins {
            let (status, retry, body) = login.await.unwrap();
            match status {
                200 => ok += 1,
                503 => {
                    busy += 1;
                    assert!(matches!(retry, Some(1..=60)), "503 without Retry-After: {body}");
                    assert!(body["detail"].is_string(), "{body}");
                }
                other => panic!("a login answered {other}: {body}\n{}", stack.logs()),
            }
        }
        if busy > 0 {
            break;
        }
    }
    assert!(busy > 0, "no login was refused beyond a queue of one");
    assert!(ok > 0, "no login went through");
    let statuses = reads.await.unwrap();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");

    // The flood over, logins go through again.
    assert_eq!(stack.login(ADMIN, ADMIN_PASSWORD).await.0, 200);
    // And the refusal reaches gRPC callers too, as UNAVAILABLE with a retry hint.
    let channel = grpc_from(stack.gateway, Ipv4Addr::LOCALHOST).await;
    let mut refused = None;
    for _round in 0..5 {
        let calls: Vec<_> = (0..24)
            .map(|_| {
                let mut client = AuthServiceClient::new(channel.clone());
                tokio::spawn(async move { client.login(login(ADMIN, ADMIN_PASSWORD)).await })
            })
            .collect();
        for call in calls {
            if let Err(status) = call.await.unwrap() {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                refused = Some(status);
            }
        }
        if refused.is_some() {
            break;
        }
    }
    let refused = refused.expect("no proxied login was refused beyond a queue of one");
    assert_eq!(retry_hint(&refused), 1);
    // Sanity: the admin token still works after all that.
    let me = AuthServiceClient::new(channel)
        .who_am_i(bearer(proto::auth::v1::WhoAmIRequest {}, &admin))
        .await
        .expect("WhoAmI");
    assert_eq!(me.into_inner().name, ADMIN);
}

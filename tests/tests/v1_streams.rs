//! The three `/v1` server streams as NDJSON (`WatchEvents`, `WatchServices`,
//! `WatchRevocations`): real events line by line, refusals before any backend is
//! called, a backend that is down, a stream that fails mid-way, a token that expires
//! or is revoked while it streams, and a client that goes away. On SQLite and
//! PostgreSQL.

use tests::support;

use std::time::Duration;

use common::token::TokenType;
use reqwest::Method;
use serde_json::{Value, json};
use support::*;
use tests::v1_fixture::*;
use tests::{Backend, Stack, on_every_backend, wait_until};

on_every_backend!(
    deployment_events_stream_as_ndjson,
    service_events_stream_as_ndjson,
    revocations_stream_as_ndjson,
    a_client_that_goes_away_releases_the_upstream,
);

const WAIT: Duration = Duration::from_secs(30);

/// An open NDJSON response, read line by line.
struct Lines {
    response: reqwest::Response,
    buffer: Vec<u8>,
}

impl Lines {
    /// The next line as JSON, or `None` once the body has ended. Waits at most `WAIT`.
    async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                let text = String::from_utf8(line).unwrap();
                return Some(serde_json::from_str(text.trim_end()).unwrap_or_else(|e| panic!("{e}: {text:?}")));
            }
            let chunk = tokio::time::timeout(WAIT, self.response.chunk())
                .await
                .expect("a line or the end within 30 s")
                .expect("the body reads without error");
            match chunk {
                Some(bytes) => self.buffer.extend_from_slice(&bytes),
                None => {
                    assert!(self.buffer.is_empty(), "a partial last line: {:?}", self.buffer);
                    return None;
                }
            }
        }
    }

    /// Reads until a line satisfies `wanted`; panics if the body ends first.
    async fn until(&mut self, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        loop {
            match self.next().await {
                Some(line) if wanted(&line) => return line,
                Some(_) => {}
                None => panic!("the stream ended before {what}"),
            }
        }
    }

    /// Reads to the end of the body; returns the last line.
    async fn last(&mut self) -> Option<Value> {
        let mut last = None;
        while let Some(line) = self.next().await {
            last = Some(line);
        }
        last
    }
}

/// `GET path` as a stream: the lines on 200, else the status and the JSON body.
async fn open(stack: &Stack, path: &str, token: Option<&str>) -> Result<Lines, (u16, Value)> {
    // No overall timeout: a stream lives as long as it is read.
    let client = reqwest::Client::new();
    let mut request = client.get(stack.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    if status != 200 {
        return Err((status, response.json().await.unwrap_or(Value::Null)));
    }
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert_eq!(content_type, "application/x-ndjson", "{path}");
    Ok(Lines {
        response,
        buffer: Vec::new(),
    })
}

async fn open_ok(stack: &Stack, path: &str, token: Option<&str>) -> Lines {
    match open(stack, path, token).await {
        Ok(lines) => lines,
        Err((status, body)) => panic!("GET {path}: {status} {body}\n{}", stack.logs()),
    }
}

async fn status_of(stack: &Stack, path: &str, token: Option<&str>) -> (u16, Value) {
    match open(stack, path, token).await {
        Ok(_) => (200, Value::Null),
        Err(refused) => refused,
    }
}

/// The gateway's count of open streams on `route`.
async fn open_streams(stack: &Stack, route: &str) -> u64 {
    let text = stack.metrics().await;
    let prefix = format!("slipway_http_streams_open{{route=\"{route}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |n| n.parse().unwrap())
}

async fn wait_open_streams(stack: &Stack, route: &str, wanted: u64) {
    wait_until(WAIT, async || match open_streams(stack, route).await {
        open if open == wanted => Ok(()),
        _ => Err(format!("{route}: open streams never became {wanted}")),
    })
    .await
}

/// A deployment's events, live and replayed, read line by line as they happen.
async fn deployment_events_stream_as_ndjson(backend: Backend) {
    let stack = Stack::start_with(backend, services).await;
    let admin = stack.admin_token().await;
    let alpha = service_token(&stack, &admin, "alpha").await;
    let beta = service_token(&stack, &admin, "beta").await;
    let route = "/v1/deployments/watch";

    // A service token watches its own service's deployments.
    let mut live = open_ok(&stack, &format!("{route}?service=alpha"), Some(&alpha)).await;
    wait_open_streams(&stack, route, 1).await;
    let started = start(&stack, &alpha, None).await;
    let id = started["id"].as_i64().unwrap().to_string();
    let mut sequences = Vec::new();
    let mut steps = Vec::new();
    let finished = loop {
        let line = live.next().await.expect("events until the deployment ends");
        sequences.push(line["sequence"].as_str().unwrap().parse::<i64>().unwrap());
        if let Some(step) = line.get("step") {
            assert_eq!(step["deploymentId"], id.as_str(), "{line}");
            steps.push((step["name"].clone(), step["state"].clone()));
        }
        let deployment = &line["deployment"];
        if deployment["id"] == id.as_str() && deployment["status"] == "DEPLOYMENT_STATUS_SUCCEEDED" {
            break line;
        }
    };
    assert!(sequences.windows(2).all(|w| w[0] < w[1]), "{sequences:?}");
    assert!(steps.contains(&(json!("build"), json!("success"))), "{steps:?}");
    assert!(steps.contains(&(json!("migrate"), json!("success"))), "{steps:?}");
    assert_eq!(finished["deployment"]["service"], "alpha");
    drop(live);

    // Replayed from the first stored event, for one deployment.
    let mut replay = open_ok(
        &stack,
        &format!("{route}?deployment_id={id}&after_sequence=-1"),
        Some(&admin),
    )
    .await;
    let first = replay.next().await.unwrap();
    assert_eq!(
        first["sequence"].as_str().unwrap().parse::<i64>().unwrap(),
        sequences[0]
    );
    replay
        .until("the replayed end of the deployment", |l| {
            l["deployment"]["status"] == "DEPLOYMENT_STATUS_SUCCEEDED"
        })
        .await;
    drop(replay);

    // The deploy service decides whose deployments a token sees: before any line.
    let (status, body) = status_of(&stack, &format!("{route}?service=alpha"), Some(&beta)).await;
    assert_eq!((status, body), (403, json!({"detail": "Wrong service token"})));
    let (status, _) = status_of(&stack, &format!("{route}?after_sequence=soon"), Some(&admin)).await;
    assert_eq!(status, 400);
    let (status, _) = status_of(&stack, &format!("{route}?colour=blue"), Some(&admin)).await;
    assert_eq!(status, 400, "unknown parameters are refused");

    // Refused by the gateway itself: the same answers with the deploy service gone.
    let config = signed(&stack, TokenType::Config, 600);
    let mut stack = stack;
    for down in [false, true] {
        if down {
            stack.proc("deploy").kill();
        }
        assert_eq!(status_of(&stack, route, None).await.0, 401);
        assert_eq!(status_of(&stack, route, Some(&config)).await.0, 403);
    }
    let (status, body) = status_of(&stack, route, Some(&admin)).await;
    assert_eq!((status, body), (503, json!({"detail": "deploy service unavailable"})));
}

/// Service changes as they happen; a token that expires or is revoked, or a backend
/// lost mid-way, ends the stream after one error line.
async fn service_events_stream_as_ndjson(backend: Backend) {
    let mut stack = Stack::start_with(backend, services).await;
    let admin = stack.admin_token().await;
    let route = "/v1/services/watch";
    let mut watch = open_ok(&stack, route, Some(&admin)).await;
    wait_open_streams(&stack, route, 1).await;

    let (_, beta) = get(&stack, "/v1/services/by-name/beta", &admin).await;
    let beta_id = beta["id"].as_str().unwrap();
    let (status, _, body) = call(
        &stack,
        Method::DELETE,
        &format!("/v1/services/{beta_id}"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let event = watch.next().await.unwrap();
    // Each event's sequence (an int64: a string in JSON) resumes after it.
    let deleted_at = event["sequence"].as_str().expect("a sequence").to_owned();
    assert_eq!(event, json!({"service": beta, "deleted": true, "sequence": deleted_at}));
    let (status, _, synced) = call(&stack, Method::POST, "/v1/services/sync", Some(&admin), None).await;
    assert_eq!(status, 200, "{synced}");
    let event = watch
        .until("beta synced again", |e| e["service"]["name"] == "beta")
        .await;
    assert_eq!(event.get("deleted"), None, "{event}");
    assert_ne!(event["service"]["id"], beta_id, "ids are never reused");
    let resumed = &format!("{route}?after_sequence={deleted_at}");
    let mut resumed = open_ok(&stack, resumed, Some(&admin)).await;
    assert_eq!(resumed.next().await.unwrap(), event, "resumed after the delete");
    drop(resumed);

    // A token that expires ends its stream once it has expired.
    let short = signed(&stack, TokenType::User, 4);
    let mut expiring = open_ok(&stack, route, Some(&short)).await;
    assert_eq!(
        expiring.last().await,
        Some(json!({"error": {"status": 401, "detail": "token expired"}}))
    );

    // A revoked token gets no more events: its next line says why, and the body ends.
    let (status, _, minted) = call(
        &stack,
        Method::POST,
        "/v1/tokens/attenuate",
        Some(&admin),
        Some(json!({"permissions": ["services:read"]})),
    )
    .await;
    assert_eq!(status, 200, "{minted}");
    let reader = minted["token"].as_str().unwrap().to_owned();
    let mut revoked = open_ok(&stack, route, Some(&reader)).await;
    revoke(&stack, &admin, &reader, "/v1/service-names").await;
    let (_, alpha) = get(&stack, "/v1/services/by-name/alpha", &admin).await;
    let alpha_id = alpha["id"].as_str().unwrap();
    let (status, _, _) = call(
        &stack,
        Method::DELETE,
        &format!("/v1/services/{alpha_id}"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, 200);
    // Ended by whichever sees the revocation first: the registry (its stream ends
    // with "token revoked") or the gateway's check before the next message.
    let end = revoked.next().await.unwrap();
    assert_eq!(end["error"]["status"], 401, "{end}");
    assert!(
        ["token revoked", "Could not validate credentials"].contains(&end["error"]["detail"].as_str().unwrap()),
        "{end}"
    );
    assert_eq!(revoked.next().await, None);
    // The admin's stream saw the same event.
    watch.until("alpha deleted", |e| e["deleted"] == true).await;

    // The registry lost mid-stream: one error line, then the end.
    let service = service_token(&stack, &admin, "beta").await;
    stack.proc("registry").kill();
    assert_eq!(
        watch.last().await,
        Some(json!({"error": {"status": 503, "detail": "registry service unavailable"}}))
    );
    // Refused before the (now missing) registry is ever called; a caller who may is 503.
    assert_eq!(status_of(&stack, route, None).await.0, 401);
    assert_eq!(status_of(&stack, route, Some(&service)).await.0, 403);
    let (status, body) = status_of(&stack, route, Some(&admin)).await;
    assert_eq!((status, body), (503, json!({"detail": "registry service unavailable"})));
}

/// The revocation feed, for a token that may read tokens like its RPC: a snapshot,
/// then each revocation.
async fn revocations_stream_as_ndjson(backend: Backend) {
    let stack = Stack::start(backend).await;
    let admin = stack.admin_token().await;
    let route = "/v1/revocations/watch";
    let mut feed = open_ok(&stack, route, Some(&admin)).await;
    let snapshot = feed.next().await.unwrap();
    assert_eq!(snapshot["snapshot"], true, "{snapshot}");

    let (_, _, minted) = call(&stack, Method::POST, "/v1/tokens", Some(&admin), Some(json!({}))).await;
    let id = minted["info"]["id"].as_str().unwrap().to_owned();
    let (status, _, body) = call(&stack, Method::DELETE, &format!("/v1/tokens/{id}"), Some(&admin), None).await;
    assert_eq!(status, 200, "{body}");
    let event = feed
        .until("the revocation", |e| {
            e["tokenIds"].as_array().is_some_and(|ids| ids.contains(&json!(id)))
        })
        .await;
    assert!(event.get("snapshot").is_none(), "{event}");
    let sequence: i64 = event["sequence"].as_str().unwrap().parse().unwrap();

    // Resuming before it replays it; a new snapshot includes it.
    let mut resumed = open_ok(
        &stack,
        &format!("{route}?after_sequence={}", sequence - 1),
        Some(&admin),
    )
    .await;
    let first = resumed.next().await.unwrap();
    assert!(first["tokenIds"].as_array().unwrap().contains(&json!(id)), "{first}");
    let mut fresh = open_ok(&stack, route, Some(&admin)).await;
    let first = fresh.next().await.unwrap();
    assert!(first["tokenIds"].as_array().unwrap().contains(&json!(id)), "{first}");
    assert_eq!(status_of(&stack, route, Some("not even a token")).await.0, 401);
    let (status, _) = status_of(&stack, &format!("{route}?after_sequence=x"), Some(&admin)).await;
    assert_eq!(status, 400);
}

/// Dropping the response closes the upstream (the gateway's count of open streams
/// falls back), the gateway keeps serving, and an open stream does not hold up the
/// gateway's shutdown: it ends with an error line.
async fn a_client_that_goes_away_releases_the_upstream(backend: Backend) {
    let mut stack = Stack::start_with(backend, services).await;
    let admin = stack.admin_token().await;
    for route in ["/v1/services/watch", "/v1/deployments/watch", "/v1/revocations/watch"] {
        for _ in 0..2 {
            let idle = open_ok(&stack, route, Some(&admin)).await;
            wait_open_streams(&stack, route, 1).await;
            drop(idle);
            wait_open_streams(&stack, route, 0).await;
        }
    }
    // Still serving streams and events after all that.
    let mut watch = open_ok(&stack, "/v1/services/watch", Some(&admin)).await;
    let (_, beta) = get(&stack, "/v1/services/by-name/beta", &admin).await;
    let path = format!("/v1/services/{}", beta["id"].as_str().unwrap());
    assert_eq!(call(&stack, Method::DELETE, &path, Some(&admin), None).await.0, 200);
    assert_eq!(watch.next().await.unwrap()["deleted"], true);

    let killed = stack.stop();
    assert!(killed.is_empty(), "needed SIGKILL: {killed:?}\n{}", stack.logs());
    assert_eq!(
        watch.last().await,
        Some(json!({"error": {"status": 503, "detail": "the gateway is shutting down"}}))
    );
}

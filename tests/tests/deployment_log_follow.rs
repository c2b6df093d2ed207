//! Reading and following a run's output (issue 14): `WatchDeploymentLog` sends the
//! stored lines then live ones, resumes after a line number with no gap and no
//! duplicate, and ends when the run does; who may read a log (a user token with
//! `deployments:read`, a service token of its service, the run's own deployment
//! token) and who is refused; `GET /v1/deployments/{id}/log` as text and, with
//! `?follow=true`, as NDJSON until the run ends; the RPCs through the gateway (gRPC
//! and grpc-web). On SQLite and PostgreSQL.

use std::time::Duration;

use common::token::TokenType;
use proto::deploy::v1::{self as pb, LogStream};
use serde_json::{Value, json};
use tests::{
    Backend, Stack,
    deploy_rpc::{Fixture, write_service},
    grpc::{bearer, channel},
    log_fixture::*,
    on_every_backend,
    support::{gated_services, release, spool, token_kinds},
    wait_until,
};
use tonic::Code;

on_every_backend!(
    a_follow_resumes_without_gap_or_duplicate_and_ends_with_the_run,
    who_may_read_a_log,
    the_http_route_serves_text_and_follows_as_ndjson,
);

/// Five lines, then (once released) five on each stream.
fn staged() -> String {
    format!(
        "{READ_CONFIG}i=1\nwhile [ $i -le 5 ]; do echo \"early $i\"; i=$((i+1)); done\n{WAIT_RELEASE}\
         i=1\nwhile [ $i -le 5 ]; do echo \"late $i\"; echo \"late err $i\" >&2; i=$((i+1)); done\n"
    )
}

async fn staged_fixture(backend: Backend) -> Fixture {
    Fixture::start(backend, |dir| write_service(dir, "staged", json!({}), &staged())).await
}

async fn a_follow_resumes_without_gap_or_duplicate_and_ends_with_the_run(backend: Backend) {
    let f = staged_fixture(backend).await;
    let d = f.start_service("staged").await;
    let mut from_start = f.watch_log(&f.admin, d.id, 0).await.unwrap();
    let early = next_lines(&mut from_start, 5).await;
    assert_eq!(numbers(&early), [1, 2, 3, 4, 5]);
    assert_eq!(
        texts(&early, LogStream::Stdout),
        ["early 1", "early 2", "early 3", "early 4", "early 5"]
    );
    // Resumed after line 3: 4 and 5, then it waits with the run.
    let mut resumed = f.watch_log(&f.admin, d.id, 3).await.unwrap();
    assert_eq!(numbers(&next_lines(&mut resumed, 2).await), [4, 5]);
    let mut at_the_end = f.watch_log(&f.admin, d.id, 5).await.unwrap();
    f.release("staged", d.id);
    for stream in [&mut from_start, &mut resumed, &mut at_the_end] {
        let late = rest(stream).await;
        assert_eq!(numbers(&late), (6..=15).collect::<Vec<_>>(), "no gap, no duplicate");
        let wanted: Vec<String> = (1..=5).map(|n| format!("late {n}")).collect();
        assert_eq!(texts(&late, LogStream::Stdout), wanted);
        let wanted: Vec<String> = (1..=5).map(|n| format!("late err {n}")).collect();
        assert_eq!(texts(&late, LogStream::Stderr), wanted);
    }
    f.finished(d.id).await;
    // After the run: the stored lines, then the end at once.
    let mut after = f.watch_log(&f.admin, d.id, 0).await.unwrap();
    assert_eq!(numbers(&rest(&mut after).await), (1..=15).collect::<Vec<_>>());
    let mut past = f.watch_log(&f.admin, d.id, 15).await.unwrap();
    assert!(rest(&mut past).await.is_empty());
    through_the_gateway(&f, d.id).await;
    // A run cancelled before it started has an empty log that ends at once.
    let queued = f.start_service("staged").await;
    let second = f.start_service("staged").await;
    let mut deploy = f.deploy().await;
    let request = pb::CancelDeploymentRequest { id: second.id };
    deploy.cancel_deployment(bearer(request, &f.admin)).await.unwrap();
    assert!(
        rest(&mut f.watch_log(&f.admin, second.id, 0).await.unwrap())
            .await
            .is_empty()
    );
    f.file("staged", &format!("config-{}", queued.id)).await;
    f.release("staged", queued.id);
    f.finished(queued.id).await;
}

/// The gateway's gRPC proxy serves the log RPCs from the scope table alone: native
/// gRPC, and grpc-web over HTTP/1.1 as browsers call it.
async fn through_the_gateway(f: &Fixture, id: i64) {
    use tonic_prost::prost::Message;
    let mut edge = pb::deploy_service_client::DeployServiceClient::new(channel(f.stack.gateway).await);
    let request = pb::WatchDeploymentLogRequest {
        deployment_id: id,
        after_line: 12,
    };
    let mut follow = edge
        .watch_deployment_log(bearer(request, &f.admin))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(numbers(&rest(&mut follow).await), [13, 14, 15]);
    let request = pb::GetDeploymentLogRequest {
        deployment_id: id,
        after_line: 10,
        limit: 2,
    };
    let message = request.encode_to_vec();
    let mut frame = vec![0_u8];
    frame.extend((message.len() as u32).to_be_bytes());
    frame.extend(message);
    let response = f
        .stack
        .http
        .post(f.stack.url("/slipway.deploy.v1.DeployService/GetDeploymentLog"))
        .header("content-type", "application/grpc-web+proto")
        .bearer_auth(&f.admin)
        .body(frame)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = response.bytes().await.unwrap();
    assert_eq!(body[0], 0, "a data frame first: {body:?}");
    let length = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
    let page = pb::GetDeploymentLogResponse::decode(&body[5..5 + length]).unwrap();
    assert_eq!(numbers(&page.lines), [11, 12]);
    assert!(page.more && page.complete);
}

async fn who_may_read_a_log(backend: Backend) {
    let stack = Stack::start_with(backend, gated_services).await;
    let kinds = token_kinds(&stack).await;
    let a = kinds.a;
    let mut no_read = tests::user_claims("admin");
    no_read.permissions = Some(vec!["services:read".into()]);
    let no_read = stack.sign_with_real_key(&no_read);
    let f = Fixture {
        stack,
        admin: kinds.admin.clone(),
    };
    let mut cases: Vec<(&str, &str, Option<Code>)> = kinds
        .named()
        .into_iter()
        .zip([
            None,
            None,
            Some(Code::PermissionDenied),
            None,
            Some(Code::PermissionDenied),
            Some(Code::PermissionDenied),
            Some(Code::Unauthenticated),
            Some(Code::Unauthenticated),
        ])
        .map(|((kind, token), want)| (kind, token, want))
        .collect();
    cases.push(("user without deployments:read", &no_read, Some(Code::PermissionDenied)));
    cases.push(("no token at all", "", Some(Code::Unauthenticated)));
    for (kind, token, want) in cases {
        // The revocation reaches the deploy service through the auth service's feed.
        let got = wait_until(Duration::from_secs(10), async || {
            let get = f.log(token, a, 0, 0).await.err().map(|e| e.code());
            let watch = f.watch_log(token, a, 0).await.err().map(|e| e.code());
            if get == want && watch == want {
                Ok((get, watch))
            } else {
                Err(format!("{kind}: get {get:?}, watch {watch:?}, want {want:?}"))
            }
        })
        .await;
        assert_eq!(got, (want, want), "{kind}");
    }
    // Of the other run: its own deployment token reads it; this run's may not.
    assert!(f.log(&kinds.dep_b, kinds.b, 0, 0).await.is_ok());
    assert_eq!(
        f.log(&kinds.dep_a, kinds.b, 0, 0).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    assert_eq!(signed_deployment_refused(&f).await, Code::PermissionDenied);
    let spool = spool(f.stack.dir.path());
    release(&spool, "alpha");
    release(&spool, "beta");
}

/// A config token is refused by the scope table before any handler runs.
async fn signed_deployment_refused(f: &Fixture) -> Code {
    let config = tests::support::signed(&f.stack, TokenType::Config, 600);
    f.log(&config, 1, 0, 0).await.unwrap_err().code()
}

async fn http_get(f: &Fixture, path: &str) -> reqwest::Response {
    f.stack
        .http
        .get(f.stack.url(path))
        .bearer_auth(&f.admin)
        .send()
        .await
        .unwrap()
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response.headers()[name].to_str().unwrap()
}

async fn the_http_route_serves_text_and_follows_as_ndjson(backend: Backend) {
    let f = staged_fixture(backend).await;
    let d = f.start_service("staged").await;
    let id = d.id;
    next_lines(&mut f.watch_log(&f.admin, id, 0).await.unwrap(), 5).await;
    let plain = http_get(&f, &format!("/v1/deployments/{id}/log")).await;
    assert_eq!(plain.status(), 200);
    assert_eq!(header(&plain, "content-type"), "text/plain; charset=utf-8");
    assert_eq!(
        (header(&plain, "x-log-last-line"), header(&plain, "x-log-complete")),
        ("5", "false")
    );
    assert_eq!(
        plain.text().await.unwrap(),
        "early 1\nearly 2\nearly 3\nearly 4\nearly 5\n"
    );
    let page = http_get(&f, &format!("/v1/deployments/{id}/log?after_line=3&limit=1")).await;
    assert_eq!(header(&page, "x-log-last-line"), "4");
    assert_eq!(page.text().await.unwrap(), "early 4\n");

    // Followed from line 2: NDJSON LogLines, the live ones too, until the run ends.
    let mut follow = http_get(&f, &format!("/v1/deployments/{id}/log?follow=true&after_line=2")).await;
    assert_eq!(follow.status(), 200);
    assert_eq!(header(&follow, "content-type"), "application/x-ndjson");
    let mut body = Vec::new();
    let mut released = false;
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(30), follow.chunk())
        .await
        .expect("a chunk within 30 s")
        .unwrap()
    {
        body.extend_from_slice(&chunk);
        if !released && body.iter().filter(|b| **b == b'\n').count() >= 3 {
            f.release("staged", id);
            released = true;
        }
    }
    let lines: Vec<Value> = body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    let numbers: Vec<String> = lines.iter().map(|l| l["line"].as_str().unwrap().to_owned()).collect();
    assert_eq!(numbers, (3..=15).map(|n| n.to_string()).collect::<Vec<_>>());
    assert_eq!(lines[0]["text"], "early 3");
    assert_eq!(lines[0]["stream"], "LOG_STREAM_STDOUT");
    assert!(
        lines
            .iter()
            .any(|l| l["stream"] == "LOG_STREAM_STDERR" && l["text"] == "late err 5")
    );
    f.finished(id).await;
    let done = http_get(&f, &format!("/v1/deployments/{id}/log")).await;
    assert_eq!(
        (header(&done, "x-log-last-line"), header(&done, "x-log-complete")),
        ("15", "true")
    );
    assert_eq!(done.text().await.unwrap().lines().count(), 15);
    for bad in ["/log?follow=maybe", "/log?follow=true&limit=2", "/log?nope=1"] {
        let response = http_get(&f, &format!("/v1/deployments/{id}{bad}")).await;
        assert_eq!(response.status(), 400, "{bad}");
    }
    assert_eq!(http_get(&f, "/v1/deployments/abc/log").await.status(), 400);
    assert_eq!(http_get(&f, "/v1/deployments/999999/log").await.status(), 404);
}

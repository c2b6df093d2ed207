//! Request bodies at the edge (issue 10.1) and metric labels (issue 10.7).
//!
//! Bodies: every route and protocol bounds a body while reading it (413, or gRPC
//! `RESOURCE_EXHAUSTED`), and a request without a valid token is refused before its
//! body is read. Sixteen 400 MB uploads at once, with and without valid tokens, over
//! HTTP/1.1 (chunked and with `Content-Length`), grpc-web and native gRPC, leave the
//! gateway's resident memory under 100 MiB. The bodies are generated as they are sent.

use tests::support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::body::Bytes;
use common::token::TokenType;
use futures::StreamExt;
use serde_json::{Value, json};
use support::signed;
use tests::{
    Backend, Stack,
    raw_http::{self, Upload},
};
use tonic::codegen::Service;

const UPLOAD: u64 = 400 * 1024 * 1024;
const MAX_RSS: u64 = 100 * 1024 * 1024;
const LIMIT: usize = 1024 * 1024;
const ANSWER_WITHIN: Duration = Duration::from_secs(60);

/// One upload: where, with what token, and the answers allowed.
struct Case {
    what: String,
    path: &'static str,
    content_type: &'static str,
    token: Option<String>,
    chunked: bool,
    prefix: Vec<u8>,
    want: u16,
}

fn head(stack: &Stack, case: &Case) -> String {
    let mut head = format!(
        "POST {} HTTP/1.1\r\nhost: {}\r\ncontent-type: {}\r\n",
        case.path, stack.gateway, case.content_type
    );
    if let Some(token) = &case.token {
        head.push_str(&format!("authorization: Bearer {token}\r\n"));
    }
    if case.chunked {
        head.push_str("transfer-encoding: chunked\r\n");
    } else {
        head.push_str(&format!("content-length: {UPLOAD}\r\n"));
    }
    head
}

/// A gRPC frame header announcing a message of `length` bytes.
fn grpc_header(length: u64) -> Vec<u8> {
    let mut header = vec![0u8];
    header.extend_from_slice(&u32::try_from(length).unwrap().to_be_bytes());
    header
}

/// Samples the gateway's RSS every 10 ms until `stop`; returns the largest seen.
fn sample_rss(pid: u32, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut max = 0;
        while !stop.load(Ordering::Relaxed) {
            max = max.max(raw_http::rss_bytes(pid).unwrap_or(0));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        max.max(raw_http::rss_bytes(pid).unwrap_or(0))
    })
}

/// A native gRPC call through the gateway whose request body is `header` then zeros
/// up to 400 MB, generated as sent; returns the `grpc-status` it got.
async fn grpc_upload(stack: &Stack, path: &'static str, token: Option<&str>, header: Vec<u8>) -> String {
    let mut channel = tests::grpc::channel(stack.gateway).await;
    let zeros = Bytes::from(vec![0u8; 64 * 1024]);
    let pieces = (UPLOAD - header.len() as u64).div_ceil(zeros.len() as u64);
    let body =
        futures::stream::iter(std::iter::once(Bytes::from(header)).chain((0..pieces).map(move |_| zeros.clone())))
            .map(Ok::<Bytes, std::io::Error>);
    let mut request = axum::http::Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = request
        .body(tonic::body::Body::new(axum::body::Body::from_stream(body)))
        .unwrap();
    std::future::poll_fn(|cx| channel.poll_ready(cx)).await.unwrap();
    let response = tokio::time::timeout(ANSWER_WITHIN, channel.call(request))
        .await
        .expect("a gRPC answer in time")
        .unwrap();
    response.headers()["grpc-status"].to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn huge_bodies_are_refused_while_read_and_unauthenticated_ones_unread() {
    let mut stack = Stack::start(Backend::Sqlite).await;
    let pid = stack.proc("gateway").child.id();
    let user = stack.admin_token().await;
    let service = signed(&stack, TokenType::Service, 600);
    let deployment = signed(&stack, TokenType::Deployment, 600);
    let json = "application/json";
    let form = "application/x-www-form-urlencoded";
    let grpc_web = "application/grpc-web+proto";

    let mut cases = Vec::new();
    // Eight without a token (or with a bad one), eight with a valid one.
    for (i, (path, content_type, token)) in [
        ("/steps/", json, Some(deployment.as_str())),
        ("/service-token", json, Some(user.as_str())),
        ("/deployments/", json, Some(service.as_str())),
        ("/v1/tokens", json, Some(user.as_str())),
    ]
    .into_iter()
    .enumerate()
    {
        for chunked in [true, false] {
            // A Content-Length over the limit is 413 before anything else; a streamed
            // body without a valid token is 401, unread.
            let refused = if chunked { 401 } else { 413 };
            let bad = (i % 2 == 1).then(|| "not-a-token".to_owned());
            cases.push(Case {
                what: format!("{path} without a valid token, chunked {chunked}"),
                path,
                content_type,
                token: bad,
                chunked,
                prefix: b"{\"env\": \"".to_vec(),
                want: refused,
            });
            cases.push(Case {
                what: format!("{path} with a valid token, chunked {chunked}"),
                path,
                content_type,
                token: token.map(str::to_owned),
                chunked,
                prefix: b"{\"env\": \"".to_vec(),
                want: 413,
            });
        }
    }
    // The form login needs no token: bounded all the same.
    cases.push(Case {
        what: "form login".into(),
        path: "/token",
        content_type: form,
        token: None,
        chunked: true,
        prefix: b"grant_type=password&username=".to_vec(),
        want: 413,
    });
    cases.push(Case {
        what: "multipart login".into(),
        path: "/token",
        content_type: "multipart/form-data; boundary=XyZ",
        token: None,
        chunked: true,
        prefix: b"--XyZ\r\ncontent-disposition: form-data; name=\"username\"\r\n\r\n".to_vec(),
        want: 413,
    });
    // grpc-web over HTTP/1.1 (answered 200 with the gRPC status in its headers): a
    // message announced too long (open RPC, and one that needs a token, sent without),
    // and a short announcement followed by 400 MB.
    for (what, path, prefix) in [
        (
            "grpc-web DebugToken announced 400 MB",
            "/slipway.auth.v1.AuthService/DebugToken",
            grpc_header(UPLOAD - 5),
        ),
        (
            "grpc-web ListTokens without a token",
            "/slipway.auth.v1.AuthService/ListTokens",
            grpc_header(UPLOAD - 5),
        ),
        (
            "grpc-web DebugToken announced 10 bytes, sending 400 MB",
            "/slipway.auth.v1.AuthService/DebugToken",
            grpc_header(10),
        ),
    ] {
        cases.push(Case {
            what: what.into(),
            path,
            content_type: grpc_web,
            token: None,
            chunked: true,
            prefix,
            want: 200,
        });
    }

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_rss(pid, stop.clone());
    let baseline = raw_http::rss_bytes(pid).unwrap();
    let most_sent = Arc::new(AtomicU64::new(0));
    let uploads = cases.iter().map(|case| {
        let head = head(&stack, case);
        let most_sent = most_sent.clone();
        async move {
            let upload = Upload {
                prefix: &case.prefix,
                fill: b'x',
                total: UPLOAD,
                chunked: case.chunked,
            };
            let answer = raw_http::request(stack.gateway, &head, upload, ANSWER_WITHIN)
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", case.what));
            most_sent.fetch_max(answer.sent, Ordering::Relaxed);
            (case, answer)
        }
    });
    let grpc = async {
        let (open, guarded, unauthenticated) = tokio::join!(
            grpc_upload(
                &stack,
                "/slipway.auth.v1.AuthService/DebugToken",
                None,
                grpc_header(UPLOAD - 5)
            ),
            grpc_upload(
                &stack,
                "/slipway.auth.v1.AuthService/ListTokens",
                Some(&user),
                grpc_header(UPLOAD - 5)
            ),
            grpc_upload(
                &stack,
                "/slipway.auth.v1.AuthService/ListTokens",
                None,
                grpc_header(UPLOAD - 5)
            ),
        );
        (open, guarded, unauthenticated)
    };
    let (answers, (open, guarded, unauthenticated)) = tokio::join!(futures::future::join_all(uploads), grpc);
    stop.store(true, Ordering::Relaxed);
    let max_rss = sampler.await.unwrap();

    for (case, answer) in &answers {
        assert_eq!(answer.status, case.want, "{}: {}", case.what, answer.head);
        if case.content_type == grpc_web {
            let code = answer.header("grpc-status");
            let want = if case.path.ends_with("ListTokens") { "16" } else { "8" };
            assert_eq!(code, Some(want), "{}: {}", case.what, answer.head);
        }
    }
    assert_eq!(open, "8", "native gRPC, open RPC, message announced 400 MB");
    assert_eq!(guarded, "8", "native gRPC with a valid token, message announced 400 MB");
    assert_eq!(unauthenticated, "16", "native gRPC without a token");
    assert!(
        most_sent.load(Ordering::Relaxed) < UPLOAD / 4,
        "a client was let send {} bytes",
        most_sent.load(Ordering::Relaxed)
    );
    assert!(
        max_rss < MAX_RSS,
        "gateway RSS reached {} MiB (from {} MiB)",
        max_rss >> 20,
        baseline >> 20
    );
    eprintln!(
        "{} uploads of {} MiB: gateway RSS {} MiB at most (from {} MiB)",
        answers.len() + 3,
        UPLOAD >> 20,
        max_rss >> 20,
        baseline >> 20
    );

    // The gateway is fine afterwards.
    let (status, _) = support::send(&stack, reqwest::Method::GET, "/healthz", None, None).await;
    assert_eq!(status, 200);
}

/// What an over-long body gets, in each API's shape, and that a body just under the
/// limit is read.
#[tokio::test(flavor = "multi_thread")]
async fn over_long_bodies_get_413_in_the_apis_shape() {
    let stack = Stack::start(Backend::Sqlite).await;
    let user = stack.admin_token().await;
    let service = signed(&stack, TokenType::Service, 600);
    // Streamed (chunked) and announced (Content-Length) alike.
    for (path, token) in [
        ("/deployments/", Some(&service)),
        ("/service-token", Some(&user)),
        ("/v1/tokens", Some(&user)),
        ("/v1/deployments", Some(&service)),
        ("/v1/tokens/debug", None),
        ("/v1/login", None),
        ("/token", None),
    ] {
        for chunked in [true, false] {
            let total = LIMIT as u64 + 1;
            let mut head = format!(
                "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: {}\r\n",
                if path == "/token" {
                    "application/x-www-form-urlencoded"
                } else {
                    "application/json"
                }
            );
            if let Some(token) = token {
                head.push_str(&format!("authorization: Bearer {token}\r\n"));
            }
            head.push_str(&if chunked {
                "transfer-encoding: chunked\r\n".to_owned()
            } else {
                format!("content-length: {total}\r\n")
            });
            let upload = Upload {
                prefix: b"{\"env\": \"",
                fill: b'x',
                total,
                chunked,
            };
            let answer = raw_http::request(stack.gateway, &head, upload, ANSWER_WITHIN)
                .await
                .unwrap();
            assert_eq!(answer.status, 413, "{path} chunked {chunked}: {}", answer.head);
            let body: Value = serde_json::from_str(&answer.body).unwrap();
            assert_eq!(body, json!({"detail": "Request body too large"}), "{path}");
        }
    }
    // Multipart login past the limit: 413, not a login attempt.
    let answer = raw_http::request(
        stack.gateway,
        "POST /token HTTP/1.1\r\nhost: x\r\ncontent-type: multipart/form-data; boundary=XyZ\r\ntransfer-encoding: chunked\r\n",
        Upload {
            prefix: b"--XyZ\r\ncontent-disposition: form-data; name=\"username\"\r\n\r\nadmin\r\n--XyZ\r\ncontent-disposition: form-data; name=\"password\"\r\n\r\n",
            fill: b'p',
            total: LIMIT as u64 + 1,
            chunked: true,
        },
        ANSWER_WITHIN,
    )
    .await
    .unwrap();
    assert_eq!(answer.status, 413, "{}", answer.head);
    assert!(!stack.log("auth").contains("login refused"), "a login was attempted");

    // Just under the limit, the body is read and judged on its content.
    let token = "x".repeat(LIMIT - 100);
    let (status, body) = support::send(
        &stack,
        reqwest::Method::POST,
        "/v1/tokens/debug",
        None,
        Some(json!({ "token": token })),
    )
    .await;
    assert_ne!(status, 413, "{body}");
    assert!(status < 500, "{status} {body}");
}

/// Metric labels never come from request data: a thousand requests with random,
/// long methods on routes and on unknown paths add two series, not a thousand.
#[tokio::test(flavor = "multi_thread")]
async fn metric_labels_stay_bounded_whatever_the_method() {
    let stack = Stack::start(Backend::Sqlite).await;
    let mut seed: u64 = 0x5EED_0107;
    let mut next = move || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        seed >> 33
    };
    const REQUESTS: usize = 1000;
    let mut requests = Vec::new();
    for i in 0..REQUESTS {
        let method: String = (0..1000).map(|_| char::from(b'A' + (next() % 26) as u8)).collect();
        let path = if i % 2 == 0 {
            "/services/".to_owned()
        } else {
            format!("/nowhere/{}", next())
        };
        requests.push(format!("{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n"));
    }
    let answers = futures::stream::iter(requests)
        .map(|head| async move {
            raw_http::request(stack.gateway, &head, Upload::NONE, ANSWER_WITHIN)
                .await
                .unwrap()
                .status
        })
        .buffer_unordered(16)
        .collect::<Vec<u16>>()
        .await;
    assert!(answers.iter().all(|s| *s < 500), "{answers:?}");

    let text = stack.metrics().await;
    assert!(text.len() < 64 * 1024, "/metrics is {} bytes", text.len());
    let others: u64 = text
        .lines()
        .filter(|l| l.starts_with("slipway_http_requests_total{") && l.contains("method=\"other\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(others, REQUESTS as u64, "{text}");
    for route in ["/services/", "unmatched"] {
        let series = text
            .lines()
            .filter(|l| l.contains(&format!("method=\"other\",route=\"{route}\"")))
            .count();
        assert_eq!(series, 1, "{route}: {text}");
    }
}

//! A bounded, deterministic fuzz run against the whole stack: a few thousand malformed
//! requests from a fixed seed, on every route of the scope table (fastDeploy's and
//! `/v1`), on unknown paths, and on every RPC over grpc-web: random bytes, JSON of odd
//! shapes (deep nesting, huge numbers, lone surrogates, control and bidi characters),
//! truncated JSON, forms, bad content types, bad methods and paths, odd tokens, broken
//! grpc-web framing. No answer may be a server error (5xx, but for 503 when a backend
//! or the revocation feed is unavailable), each must come within 10 s, and afterwards
//! every process still runs and the gateway is ready.
//!
//! Prints `fuzz: N inputs, M routes` (M counts route templates, RPCs and unknown paths
//! as one). Set `SLIPWAY_FUZZ_SEED` to replay another seed.

use tests::support;

use std::{collections::BTreeSet, time::Duration};

use base64::{Engine, engine::general_purpose::STANDARD};
use common::{scope_table::RPCS, token::TokenType};
use futures::StreamExt;
use gateway::routes::ROUTES;
use support::signed;
use tests::{
    Backend, Stack,
    raw_http::{self, Upload},
};

const INPUTS: usize = 5000;
const ANSWER_WITHIN: Duration = Duration::from_secs(10);
const CONCURRENCY: usize = 16;

/// xorshift64*: small, seeded, the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

const FIELDS: &[&str] = &[
    "service",
    "origin",
    "expiration_in_days",
    "expirationInDays",
    "env",
    "name",
    "state",
    "message",
    "started",
    "finished",
    "deployment_id",
    "token",
    "username",
    "password",
    "permissions",
    "pageSize",
    "lifetimeSeconds",
    "extraClaims",
    "services",
    "currentPassword",
    "newPassword",
    "id",
    "",
];

/// JSON scalars as raw text, including what parsers find hard.
const SCALARS: &[&str] = &[
    "0",
    "-0",
    "1e999",
    "-1e999",
    "18446744073709551616",
    "9223372036854775808",
    "-9223372036854775809",
    "1.5",
    "null",
    "true",
    "\"\"",
    "\"web\"",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "\"\\udfff\\ud800\"",
    "\"\u{202e}txt.exe\"",
    "\"\u{feff}\u{200b}\"",
    "\"\u{1d518}\u{1d52b}\u{1d526}\"",
    "\"2026-02-30T25:61:61Z\"",
    "\"success\"",
    "\"../../etc/passwd\"",
    "\"%s%n%x\"",
];

/// A random JSON text (not always valid JSON: raw huge numbers and lone surrogates
/// are, truncation is not).
fn json(rng: &mut Rng, depth: usize) -> String {
    match rng.below(if depth == 0 { 2 } else { 5 }) {
        0 => (*rng.pick(SCALARS)).to_owned(),
        1 => format!("\"{}\"", "x".repeat(rng.below(5000))),
        2 => {
            let n = rng.below(5);
            let items: Vec<String> = (0..n).map(|_| json(rng, depth - 1)).collect();
            format!("[{}]", items.join(","))
        }
        _ => {
            let n = rng.below(6);
            let fields: Vec<String> = (0..n)
                .map(|_| format!("\"{}\": {}", rng.pick(FIELDS), json(rng, depth - 1)))
                .collect();
            format!("{{{}}}", fields.join(", "))
        }
    }
}

fn body(rng: &mut Rng) -> (Vec<u8>, &'static str) {
    const TYPES: &[&str] = &[
        "application/json",
        "application/json",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=B",
        "multipart/form-data",
        "text/plain",
        "application/json; charset=utf-16",
        "\u{7f}garbage/\u{1}",
        "",
    ];
    let content_type = *rng.pick(TYPES);
    let bytes = match rng.below(7) {
        0 => Vec::new(),
        1 => {
            let n = rng.below(2048);
            rng.bytes(n)
        }
        2 => {
            let depth = 1 + rng.below(300);
            format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes()
        }
        3 => {
            let mut text = json(rng, 3).into_bytes();
            let cut = rng.below(text.len() + 1);
            text.truncate(cut);
            text
        }
        4 => {
            let pairs: Vec<String> = (0..rng.below(5))
                .map(|_| {
                    format!(
                        "{}={}",
                        rng.pick(FIELDS),
                        rng.pick(&["%00", "%ZZ", "a+b", "%F0%9F%92%A9", ""])
                    )
                })
                .collect();
            pairs.join("&").into_bytes()
        }
        5 => b"--B\r\ncontent-disposition: form-data; name=\"username\"\r\n\r\nadmin\r\n--B--\r\n".to_vec(),
        _ => json(rng, 3).into_bytes(),
    };
    (bytes, content_type)
}

const SEGMENTS: &[&str] = &[
    "1",
    "0",
    "-1",
    "99999999999999999999999",
    "abc",
    "%00",
    "%F0%9F%92%A9",
    "..",
    "%2e%2e",
    "a%2Fb",
    "%",
    "%ZZ",
    "\u{202e}",
    "9223372036854775808",
    "00000000-0000-0000-0000-000000000000",
];

/// A path for a template: its `{…}` segments replaced by odd values, sometimes with
/// an odd query.
fn path(rng: &mut Rng, template: &str) -> String {
    let mut path: String = template
        .split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                if rng.chance(10) {
                    "y".repeat(300)
                } else {
                    (*rng.pick(SEGMENTS)).to_owned()
                }
            } else {
                segment.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("/");
    if rng.chance(40) {
        let keys = [
            "deployment_id",
            "page_size",
            "page_token",
            "after_sequence",
            "service",
            "type",
            "x",
        ];
        let values = [
            "",
            "-1",
            "1e9",
            "99999999999999999999",
            "%00",
            "a&b",
            "%F0%9F%92%A9",
            "true",
        ];
        let query: Vec<String> = (0..1 + rng.below(3))
            .map(|_| format!("{}={}", rng.pick(&keys), rng.pick(&values)))
            .collect();
        path = format!("{path}?{}", query.join("&"));
    }
    path
}

/// One grpc-web body: frames whose headers may lie about their length or compression.
fn grpc_web_body(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..1 + rng.below(2) {
        let n = rng.below(512);
        let payload = rng.bytes(n);
        let flag = *rng.pick(&[0u8, 0, 1, 2, 0x80]);
        let declared = match rng.below(4) {
            0 => n as u32 + 1 + rng.below(10) as u32,
            1 => u32::MAX,
            _ => n as u32,
        };
        out.push(flag);
        out.extend_from_slice(&declared.to_be_bytes());
        out.extend_from_slice(&payload);
    }
    if rng.chance(20) {
        let cut = rng.below(out.len() + 1);
        out.truncate(cut);
    }
    out
}

struct Input {
    what: String,
    head: String,
    body: Vec<u8>,
    chunked: bool,
    grpc: bool,
}

fn inputs(rng: &mut Rng, gateway: &str, tokens: &[String]) -> (Vec<Input>, usize) {
    const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE"];
    const ODD_METHODS: &[&str] = &["BREW", "get", "PROPFIND", "M-SEARCH", "X", "CONNECT"];
    let mut targets = BTreeSet::new();
    let mut inputs = Vec::with_capacity(INPUTS);
    for _ in 0..INPUTS {
        let auth = match rng.below(6) {
            0 | 1 => String::new(),
            2 => format!(
                "authorization: {}\r\n",
                rng.pick(&["Bearer", "Bearer ", "Basic YTpi", "Bearer a.b.c", "bearer  x"])
            ),
            _ => format!("authorization: Bearer {}\r\n", rng.pick(tokens)),
        };
        let grpc = rng.chance(25);
        let (method, target, path, body, content_type) = if grpc {
            let rpc = if rng.chance(90) {
                rng.pick(RPCS).path
            } else {
                "/slipway.nope.v1.Nope/Call"
            };
            let mut body = grpc_web_body(rng);
            let content_type = *rng.pick(&[
                "application/grpc-web",
                "application/grpc-web+proto",
                "application/grpc-web-text",
                "application/grpc-web-text+proto",
                "application/grpc-web+json",
            ]);
            if content_type.contains("text") {
                body = if rng.chance(80) {
                    STANDARD.encode(&body).into_bytes()
                } else {
                    b"!!not base64==".to_vec()
                };
            }
            ("POST", rpc.to_owned(), rpc.to_owned(), body, content_type)
        } else {
            let (template, method) = if rng.chance(90) {
                let route = rng.pick(ROUTES);
                (route.path.to_owned(), route.method)
            } else {
                ("/unknown/{x}".to_owned(), "GET")
            };
            let method = match rng.below(10) {
                0..=5 => method,
                6..=8 => rng.pick(METHODS),
                _ => rng.pick(ODD_METHODS),
            };
            let (body, content_type) = body(rng);
            let path = path(rng, &template);
            (method, template, path, body, content_type)
        };
        targets.insert(target.clone());
        let chunked = !body.is_empty() && rng.chance(20);
        let framing = if chunked {
            "transfer-encoding: chunked\r\n".to_owned()
        } else {
            format!("content-length: {}\r\n", body.len())
        };
        let content_type = if content_type.is_empty() {
            String::new()
        } else {
            format!("content-type: {content_type}\r\n")
        };
        inputs.push(Input {
            what: format!("{method} {path} ({content_type}{} body bytes)", body.len()),
            head: format!("{method} {path} HTTP/1.1\r\nhost: {gateway}\r\n{content_type}{auth}{framing}"),
            body,
            chunked,
            grpc,
        });
    }
    (inputs, targets.len())
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_inputs_never_break_the_stack() {
    let seed = std::env::var("SLIPWAY_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_F022_u64);
    let mut stack = Stack::start_with(Backend::Sqlite, |dir| {
        support::write_service(dir, "alpha", serde_json::json!({}), "#!/bin/sh\nexit 0\n");
    })
    .await;
    let user = stack.admin_token().await;
    let mut tokens = vec![user];
    for kind in [
        TokenType::Service,
        TokenType::Deployment,
        TokenType::Config,
        TokenType::User,
    ] {
        tokens.push(signed(&stack, kind, 600));
    }
    tokens.push(signed(&stack, TokenType::User, -120));
    let mut rng = Rng(if seed == 0 { 1 } else { seed });
    let (inputs, targets) = inputs(&mut rng, &stack.gateway.to_string(), &tokens);

    let started = std::time::Instant::now();
    let gateway = stack.gateway;
    let answers: Vec<(usize, Result<raw_http::Answer, std::io::Error>)> =
        futures::stream::iter(inputs.iter().enumerate())
            .map(|(i, input)| async move {
                let upload = Upload {
                    prefix: &input.body,
                    fill: 0,
                    total: input.body.len() as u64,
                    chunked: input.chunked,
                };
                (i, raw_http::request(gateway, &input.head, upload, ANSWER_WITHIN).await)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
    let elapsed = started.elapsed();

    let mut failures = Vec::new();
    let mut by_status = std::collections::BTreeMap::<u16, usize>::new();
    for (i, answer) in &answers {
        let input = &inputs[*i];
        match answer {
            Err(error) => failures.push(format!("{}: {error}", input.what)),
            Ok(answer) => {
                *by_status.entry(answer.status).or_default() += 1;
                let server_error = answer.status >= 500 && answer.status != 503;
                let grpc_without_status = input.grpc && answer.status == 200 && answer.header("grpc-status").is_none();
                if server_error || grpc_without_status {
                    failures.push(format!(
                        "{}: {}\n{}",
                        input.what,
                        answer.head.lines().next().unwrap_or_default(),
                        answer.body.chars().take(300).collect::<String>()
                    ));
                }
            }
        }
    }
    println!(
        "fuzz: {} inputs, {targets} routes, seed {seed:#x}, {:.1} s; statuses {by_status:?}",
        inputs.len(),
        elapsed.as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} of {} inputs failed (seed {seed:#x}); first ones:\n{}",
        failures.len(),
        inputs.len(),
        failures.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );

    // Nothing crashed: every process runs, and the gateway and its backends are ready.
    for name in ["auth", "registry", "deploy", "gateway"] {
        assert!(
            stack.proc(name).child.try_wait().unwrap().is_none(),
            "{name} exited\n{}",
            stack.logs()
        );
    }
    for path in ["/healthz", "/readyz"] {
        let (status, body) = support::send(&stack, reqwest::Method::GET, path, None, None).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
}

//! The soak driver (tests/soak.rs for CI, benches/soak.rs for the long run): a mixed
//! load on a whole stack (logins and reads, deployments whose scripts report steps,
//! NDJSON and WebSocket watchers that come and go) while every process is sampled
//! at an interval: resident memory and open file descriptors of each service, the
//! size of each database, the gateway's open streams and the p99 latency of each kind
//! of request in that interval.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use sea_orm::{ConnectionTrait, Database, Statement};
use serde_json::json;

use crate::{
    Backend, Stack,
    raw_http::rss_bytes,
    slow_client::open_fds,
    support::{self, passing_script, steps_config, write_service},
    websocket_fixture,
};

pub const SERVICES: [&str; 4] = ["auth", "registry", "deploy", "gateway"];
/// Watchers of each kind open at any time.
pub const WATCHERS: usize = 2;

/// What one sample saw.
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Duration,
    /// RSS in KiB and open fds, in [`SERVICES`] order.
    pub rss_kib: [u64; 4],
    pub fds: [usize; 4],
    /// Bytes of each database (auth, registry, deploy); SQLite counts its WAL too.
    pub db_bytes: [u64; 3],
    pub streams_open: i64,
    pub deployments: usize,
    /// p99 latency of logins, reads and deployment starts in this interval, and the
    /// requests that failed (anything but the expected status).
    pub p99_login: Duration,
    pub p99_read: Duration,
    pub p99_start: Duration,
    pub failures: usize,
}

#[derive(Default)]
struct Latencies {
    login: Vec<Duration>,
    read: Vec<Duration>,
    start: Vec<Duration>,
}

fn p99(values: &mut [Duration]) -> Duration {
    values.sort();
    values
        .get((values.len() * 99 / 100).min(values.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

/// A stack with the service `soak` (the two steps of [`steps_config`], a script that
/// reports both).
pub async fn stack(backend: Backend) -> Stack {
    Stack::start_with(backend, |root| {
        write_service(root, "soak", steps_config(), &passing_script())
    })
    .await
}

async fn db_bytes(stack: &Stack, service: &str) -> u64 {
    let url = stack.database_url(service);
    if let Some(rest) = url.strip_prefix("sqlite://") {
        let path = rest.split('?').next().unwrap_or_default();
        return ["", "-wal", "-shm"]
            .iter()
            .filter_map(|s| std::fs::metadata(format!("{path}{s}")).ok())
            .map(|m| m.len())
            .sum();
    }
    let Ok(db) = Database::connect(&url).await else {
        return 0;
    };
    let query = Statement::from_string(db.get_database_backend(), "SELECT pg_database_size(current_database())");
    let size = db
        .query_one_raw(query)
        .await
        .ok()
        .flatten()
        .and_then(|row| row.try_get_by_index::<i64>(0).ok())
        .unwrap_or(0);
    let _ = db.close().await;
    u64::try_from(size).unwrap_or(0)
}

/// The sum of the gateway's `slipway_http_streams_open` gauges.
pub async fn streams_open(stack: &Stack) -> i64 {
    stack
        .metrics()
        .await
        .lines()
        .filter(|l| l.starts_with("slipway_http_streams_open{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as i64
}

/// Runs the load for `duration`, sampling every `every` (the first sample after one
/// interval of warm-up); returns the samples.
pub async fn run(stack: &mut Stack, duration: Duration, every: Duration) -> Vec<Sample> {
    let pids: Vec<u32> = SERVICES.iter().map(|s| stack.proc(s).child.id()).collect();
    let stack = &*stack;
    let admin = stack.admin_token().await;
    let service = support::service_token(stack, &admin, "soak").await;
    let latencies = Mutex::new(Latencies::default());
    let failures = AtomicUsize::new(0);
    let deployments = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let record = |kind: fn(&mut Latencies) -> &mut Vec<Duration>, started: Instant, ok: bool| {
        if ok {
            kind(&mut latencies.lock().unwrap()).push(started.elapsed());
        } else {
            failures.fetch_add(1, Ordering::Relaxed);
        }
    };
    let logins_and_reads = async || {
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            let (status, body) = stack.login(crate::stack::ADMIN, crate::stack::ADMIN_PASSWORD).await;
            record(|l| &mut l.login, started, status == 200);
            let token = body["access_token"].as_str().unwrap_or_default().to_owned();
            // A page of deployments, not fastDeploy's unpaged list, whose answer (and
            // latency) grows with every deployment stored.
            for path in ["/v1/services", "/v1/deployments?page_size=20", "/users/me"] {
                let started = Instant::now();
                let (status, _) = support::get(stack, path, &token).await;
                record(|l| &mut l.read, started, status == 200);
            }
        }
    };
    let deploying = async {
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            let (status, _, body) =
                support::call(stack, reqwest::Method::POST, "/deployments/", Some(&service), None).await;
            record(|l| &mut l.start, started, status == 200);
            if let Some(id) = body["id"].as_i64() {
                support::wait_finished(stack, &service, id).await;
                deployments.fetch_add(1, Ordering::Relaxed);
            }
        }
    };
    // Watchers that each stay a few seconds, then go and come back.
    let watching = async {
        let ndjson = async || {
            while !stop.load(Ordering::Relaxed) {
                let response = stack
                    .http
                    .get(stack.url("/v1/deployments/watch"))
                    .bearer_auth(&admin)
                    .send()
                    .await;
                let Ok(mut response) = response else { continue };
                let until = tokio::time::Instant::now() + Duration::from_secs(5);
                while let Ok(Ok(Some(_))) = tokio::time::timeout_at(until, response.chunk()).await {}
            }
        };
        let websocket = async || {
            while !stop.load(Ordering::Relaxed) {
                let mut socket = websocket_fixture::connect(stack).await;
                websocket_fixture::send(&mut socket, json!({"access_token": admin})).await;
                let until = tokio::time::Instant::now() + Duration::from_secs(5);
                while let Ok(Some(_)) = tokio::time::timeout_at(until, socket.next()).await {}
            }
        };
        let ndjsons = futures::future::join_all((0..WATCHERS).map(|_| ndjson()));
        let sockets = futures::future::join_all((0..WATCHERS).map(|_| websocket()));
        tokio::join!(ndjsons, sockets);
    };
    let sampling = async {
        let begun = Instant::now();
        let mut samples = Vec::new();
        let count = duration.as_millis() / every.as_millis().max(1);
        for _ in 0..count {
            tokio::time::sleep(every).await;
            let mut taken = std::mem::take(&mut *latencies.lock().unwrap());
            let mut sample = Sample {
                at: begun.elapsed(),
                rss_kib: [0; 4],
                fds: [0; 4],
                db_bytes: [0; 3],
                streams_open: streams_open(stack).await,
                deployments: deployments.load(Ordering::Relaxed),
                p99_login: p99(&mut taken.login),
                p99_read: p99(&mut taken.read),
                p99_start: p99(&mut taken.start),
                failures: failures.swap(0, Ordering::Relaxed),
            };
            for (i, pid) in pids.iter().enumerate() {
                sample.rss_kib[i] = rss_bytes(*pid).unwrap_or(0) / 1024;
                sample.fds[i] = open_fds(*pid);
            }
            for (i, service) in SERVICES[..3].iter().enumerate() {
                sample.db_bytes[i] = db_bytes(stack, service).await;
            }
            println!("{}", row(&sample));
            samples.push(sample);
        }
        stop.store(true, Ordering::Relaxed);
        samples
    };
    // Two clients logging in and reading, one deploying, the watchers.
    let loads = async { tokio::join!(logins_and_reads(), logins_and_reads(), deploying, watching) };
    let (samples, _) = tokio::join!(sampling, loads);
    samples
}

/// The header of [`row`].
pub fn header() -> String {
    "     at | RSS KiB auth/registry/deploy/gateway | fds a/r/d/g | DB KiB a/r/d | streams | deployments | p99 ms login/read/start | failures".to_owned()
}

/// One sample as a line of the printed table.
pub fn row(s: &Sample) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!(
        "{:>6.0}s | {:>7} {:>7} {:>7} {:>7} | {:>3} {:>3} {:>3} {:>3} | {:>6} {:>6} {:>7} | {:>7} | {:>11} | {:>6.1} {:>6.1} {:>6.1} | {}",
        s.at.as_secs_f64(),
        s.rss_kib[0],
        s.rss_kib[1],
        s.rss_kib[2],
        s.rss_kib[3],
        s.fds[0],
        s.fds[1],
        s.fds[2],
        s.fds[3],
        s.db_bytes[0] / 1024,
        s.db_bytes[1] / 1024,
        s.db_bytes[2] / 1024,
        s.streams_open,
        s.deployments,
        ms(s.p99_login),
        ms(s.p99_read),
        ms(s.p99_start),
        s.failures
    )
}

/// What may not grow without bound between the first sample (after warm-up) and the
/// last: RSS at most 50% + 16 MiB over the first, open fds at most 16 more, the
/// database at most 256 KiB per deployment stored in between, open streams at most
/// the watchers the load keeps. Returns each breach, described.
pub fn growth_breaches(samples: &[Sample]) -> Vec<String> {
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        return vec!["no samples".to_owned()];
    };
    let mut breaches = Vec::new();
    for (i, name) in SERVICES.iter().enumerate() {
        let rss_bound = first.rss_kib[i] + first.rss_kib[i] / 2 + 16 * 1024;
        if last.rss_kib[i] > rss_bound {
            breaches.push(format!("{name} RSS {} -> {} KiB", first.rss_kib[i], last.rss_kib[i]));
        }
        if last.fds[i] > first.fds[i] + 16 {
            breaches.push(format!("{name} fds {} -> {}", first.fds[i], last.fds[i]));
        }
    }
    let stored = (last.deployments - first.deployments) as u64;
    for (i, name) in SERVICES[..3].iter().enumerate() {
        let bound = first.db_bytes[i] + (stored + 1) * 256 * 1024;
        if last.db_bytes[i] > bound {
            breaches.push(format!(
                "{name} database {} -> {} bytes for {stored} deployments",
                first.db_bytes[i], last.db_bytes[i]
            ));
        }
    }
    if let Some(s) = samples.iter().find(|s| s.streams_open > WATCHERS as i64 + 1) {
        breaches.push(format!("{} streams open at {:?}", s.streams_open, s.at));
    }
    breaches
}

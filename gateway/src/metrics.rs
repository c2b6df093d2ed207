//! Operations at the edge: a request id for every request (taken from `x-request-id`
//! when the client sent a sane one, else a new UUID), echoed in the response, put in
//! the request's log span and passed to the backends; and `/metrics` in Prometheus
//! text format: requests by route, method and status, latency histograms by route,
//! token refusals by reason, and streamed responses open now by route.
//!
//! Counting takes no lock on the hot path once a route and a (method, status) pair
//! have been seen: each route has its own atomic counters behind a read lock, and
//! nothing is allocated per request.

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write,
    sync::{
        Arc, Mutex, OnceLock, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use axum::{
    extract::{MatchedPath, Request},
    http::{HeaderValue, Method, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

pub const REQUEST_ID: &str = "x-request-id";
const BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// The label of every path no route matched.
const UNMATCHED: &str = "unmatched";
/// The label of every method outside the standard nine.
const OTHER_METHOD: &str = "other";

/// A bounded label for a request's method: the standard methods by name, anything else
/// (a client may send any token as a method) as one value.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => OTHER_METHOD,
    }
}

tokio::task_local! {
    /// The id of the request the current task serves.
    static CURRENT: HeaderValue;
}

/// The current request's id, for calls to the backends.
pub fn current_request_id() -> Option<String> {
    CURRENT
        .try_with(|id| id.to_str().ok().map(str::to_owned))
        .ok()
        .flatten()
}

/// One route's counters. The histogram keeps each request in the one bucket it falls
/// in (the first bound at or above it); `/metrics` adds them up.
#[derive(Default)]
struct RouteStats {
    /// Requests by method label and status: at most ten labels and the statuses the
    /// gateway answers, so a short list.
    requests: RwLock<Vec<(&'static str, u16, AtomicU64)>>,
    buckets: [AtomicU64; BUCKETS.len()],
    /// The sum of latencies in seconds, as `f64` bits.
    sum: AtomicU64,
    count: AtomicU64,
}

impl RouteStats {
    fn record(&self, method: &'static str, status: u16, seconds: f64) {
        let counted = read(&self.requests)
            .iter()
            .find(|(m, s, _)| *m == method && *s == status)
            .map(|(_, _, n)| n.fetch_add(1, Ordering::Relaxed))
            .is_some();
        if !counted {
            let mut requests = self.requests.write().unwrap_or_else(PoisonError::into_inner);
            match requests.iter().find(|(m, s, _)| *m == method && *s == status) {
                Some((_, _, n)) => drop(n.fetch_add(1, Ordering::Relaxed)),
                None => requests.push((method, status, AtomicU64::new(1))),
            }
        }
        // The count goes up before the bucket, and `/metrics` reads buckets before the
        // count, so the `+Inf` bucket is never below the last bound's.
        self.count.fetch_add(1, Ordering::Relaxed);
        let _ = self.sum.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
            Some((f64::from_bits(bits) + seconds).to_bits())
        });
        if let Some(bucket) = BUCKETS.iter().position(|bound| seconds <= *bound) {
            self.buckets[bucket].fetch_add(1, Ordering::Release);
        }
    }
}

#[derive(Default)]
struct Metrics {
    routes: RwLock<HashMap<Box<str>, Arc<RouteStats>>>,
    refusals: Mutex<BTreeMap<&'static str, u64>>,
    /// Streamed responses open now, by route (a gauge).
    streams: Mutex<BTreeMap<&'static str, u64>>,
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::default)
}

/// Counters stay usable after a panic elsewhere: every update is a whole one.
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn route_stats(route: &str) -> Arc<RouteStats> {
    let routes = &metrics().routes;
    if let Some(stats) = read(routes).get(route) {
        return stats.clone();
    }
    routes
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(route.into())
        .or_default()
        .clone()
}

/// Counts a refused token, by reason (`missing`, `expired`, `revoked`, …): a fixed
/// label, never request data.
pub fn count_refusal(reason: &'static str) {
    let mut refusals = metrics().refusals.lock().unwrap_or_else(PoisonError::into_inner);
    match refusals.get_mut(reason) {
        Some(n) => *n += 1,
        None => drop(refusals.insert(reason, 1)),
    }
}

/// Counts a streamed response as open until it is dropped (the client went away, the
/// stream ended or the gateway stopped).
#[derive(Debug)]
pub struct OpenStream {
    route: &'static str,
}

pub fn open_stream(route: &'static str) -> OpenStream {
    let mut streams = metrics().streams.lock().unwrap_or_else(PoisonError::into_inner);
    *streams.entry(route).or_default() += 1;
    OpenStream { route }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        let mut streams = metrics().streams.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(open) = streams.get_mut(self.route) {
            *open = open.saturating_sub(1);
        }
    }
}

fn sane_id(value: &HeaderValue) -> bool {
    let text = value.as_bytes();
    !text.is_empty() && text.len() <= 128 && text.iter().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
}

/// A new random (v4) UUID, from the thread's generator rather than a system call.
fn new_id() -> HeaderValue {
    let uuid = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    HeaderValue::from_str(uuid.hyphenated().encode_lower(&mut text)).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// Middleware: request id, span, and the request's count and latency.
pub async fn observe(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = match request.headers().get(REQUEST_ID) {
        Some(id) if sane_id(id) => id.clone(),
        _ => {
            let id = new_id();
            request.headers_mut().insert(REQUEST_ID, id.clone());
            id
        }
    };
    // Labels never come from request data: unmatched paths share one route label and
    // unknown methods one method label, so clients cannot grow the metrics (or the log
    // lines) without bound.
    let route = request.extensions().get::<MatchedPath>().cloned();
    let route = route.as_ref().map_or(UNMATCHED, MatchedPath::as_str);
    let method = method_label(request.method());
    let span = tracing::info_span!(
        "request",
        request_id = %id.to_str().unwrap_or_default(),
        method,
        route = %route
    );
    let mut response = CURRENT
        .scope(id.clone(), tracing::Instrument::instrument(next.run(request), span))
        .await;
    response.headers_mut().insert(REQUEST_ID, id);
    let seconds = started.elapsed().as_secs_f64();
    route_stats(route).record(method, response.status().as_u16(), seconds);
    response
}

fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// `GET /metrics`.
pub async fn render() -> Response {
    let mut routes: Vec<(Box<str>, Arc<RouteStats>)> = read(&metrics().routes)
        .iter()
        .map(|(route, stats)| (route.clone(), stats.clone()))
        .collect();
    routes.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP slipway_http_requests_total HTTP requests by route, method and status."
    );
    let _ = writeln!(out, "# TYPE slipway_http_requests_total counter");
    for (route, stats) in &routes {
        let mut requests: Vec<(&str, u16, u64)> = read(&stats.requests)
            .iter()
            .map(|(method, status, n)| (*method, *status, n.load(Ordering::Relaxed)))
            .collect();
        requests.sort();
        let route = label(route);
        for (method, status, n) in requests {
            let _ = writeln!(
                out,
                "slipway_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {n}"
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP slipway_http_request_duration_seconds HTTP request latency by route."
    );
    let _ = writeln!(out, "# TYPE slipway_http_request_duration_seconds histogram");
    for (route, stats) in &routes {
        let route = label(route);
        let mut cumulative = 0;
        for (bucket, bound) in stats.buckets.iter().zip(BUCKETS) {
            cumulative += bucket.load(Ordering::Acquire);
            let _ = writeln!(
                out,
                "slipway_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = stats.count.load(Ordering::Relaxed);
        let sum = f64::from_bits(stats.sum.load(Ordering::Relaxed));
        let _ = writeln!(
            out,
            "slipway_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "slipway_http_request_duration_seconds_sum{{route=\"{route}\"}} {sum}"
        );
        let _ = writeln!(
            out,
            "slipway_http_request_duration_seconds_count{{route=\"{route}\"}} {count}"
        );
    }
    let _ = writeln!(out, "# HELP slipway_auth_refusals_total Tokens refused, by reason.");
    let _ = writeln!(out, "# TYPE slipway_auth_refusals_total counter");
    for (reason, n) in metrics().refusals.lock().unwrap_or_else(PoisonError::into_inner).iter() {
        let _ = writeln!(out, "slipway_auth_refusals_total{{reason=\"{}\"}} {n}", label(reason));
    }
    let _ = writeln!(
        out,
        "# HELP slipway_http_streams_open Streamed (NDJSON) responses open now, by route."
    );
    let _ = writeln!(out, "# TYPE slipway_http_streams_open gauge");
    for (route, n) in metrics().streams.lock().unwrap_or_else(PoisonError::into_inner).iter() {
        let _ = writeln!(out, "slipway_http_streams_open{{route=\"{}\"}} {n}", label(route));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_kept_when_sane_and_made_up_otherwise() {
        assert!(sane_id(&HeaderValue::from_static("ci-run-42.step-7")));
        assert!(!sane_id(&HeaderValue::from_static("bad id with spaces")));
        assert!(!sane_id(&HeaderValue::from_static("")));
        assert!(!sane_id(&HeaderValue::from_str(&"a".repeat(129)).unwrap()));
        let id = new_id();
        let parsed = uuid::Uuid::parse_str(id.to_str().unwrap()).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
        assert_ne!(new_id(), id);
    }

    #[test]
    fn methods_outside_the_standard_ones_share_one_label() {
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
        assert_eq!(method_label(&Method::from_bytes(&[b'X'; 4000]).unwrap()), "other");
    }

    #[tokio::test]
    async fn each_request_counts_once_by_method_status_and_bucket() {
        let stats = RouteStats::default();
        for (method, status, seconds) in [
            ("GET", 200, 0.0005),
            ("GET", 200, 0.003),
            ("GET", 401, 20.0),
            ("POST", 200, 0.003),
        ] {
            stats.record(method, status, seconds);
        }
        let requests: Vec<(&str, u16, u64)> = read(&stats.requests)
            .iter()
            .map(|(m, s, n)| (*m, *s, n.load(Ordering::Relaxed)))
            .collect();
        assert_eq!(requests, [("GET", 200, 2), ("GET", 401, 1), ("POST", 200, 1)]);
        let buckets: Vec<u64> = stats.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        assert_eq!(buckets, [1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(stats.count.load(Ordering::Relaxed), 4);
        let sum = f64::from_bits(stats.sum.load(Ordering::Relaxed));
        assert!((sum - 20.0065).abs() < 1e-9, "{sum}");
    }
}

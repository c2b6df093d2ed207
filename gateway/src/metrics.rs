//! Operations at the edge: a request id for every request (taken from `x-request-id`
//! when the client sent a sane one, else a new UUID), echoed in the response, put in
//! the request's log span and passed to the backends; and `/metrics` in Prometheus
//! text format: requests by route, method and status, latency histograms by route,
//! token refusals by reason, and streamed responses open now by route.

use std::{
    collections::BTreeMap,
    fmt::Write,
    sync::{Mutex, OnceLock},
    time::Instant,
};

use axum::{
    extract::{MatchedPath, Request},
    http::{HeaderValue, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

pub const REQUEST_ID: &str = "x-request-id";
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

tokio::task_local! {
    /// The id of the request the current task serves.
    static CURRENT: String;
}

/// The current request's id, for calls to the backends.
pub fn current_request_id() -> Option<String> {
    CURRENT.try_with(Clone::clone).ok()
}

#[derive(Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Metrics {
    requests: BTreeMap<(String, String, u16), u64>,
    latency: BTreeMap<String, Histogram>,
    refusals: BTreeMap<String, u64>,
    /// Streamed responses open now, by route (a gauge).
    streams: BTreeMap<&'static str, u64>,
}

fn metrics() -> &'static Mutex<Metrics> {
    static METRICS: OnceLock<Mutex<Metrics>> = OnceLock::new();
    METRICS.get_or_init(Mutex::default)
}

/// Counts a refused token, by reason (`missing`, `expired`, `revoked`, …).
pub fn count_refusal(reason: &str) {
    if let Ok(mut m) = metrics().lock() {
        *m.refusals.entry(reason.to_owned()).or_default() += 1;
    }
}

/// Counts a streamed response as open until it is dropped (the client went away, the
/// stream ended or the gateway stopped).
#[derive(Debug)]
pub struct OpenStream {
    route: &'static str,
}

pub fn open_stream(route: &'static str) -> OpenStream {
    if let Ok(mut m) = metrics().lock() {
        *m.streams.entry(route).or_default() += 1;
    }
    OpenStream { route }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        if let Ok(mut m) = metrics().lock()
            && let Some(open) = m.streams.get_mut(self.route)
        {
            *open = open.saturating_sub(1);
        }
    }
}

fn sane_id(value: &HeaderValue) -> Option<String> {
    let text = value.to_str().ok()?;
    let ok = !text.is_empty()
        && text.len() <= 128
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    ok.then(|| text.to_owned())
}

/// Middleware: request id, span, and the request's count and latency.
pub async fn observe(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(sane_id)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    if let Ok(value) = HeaderValue::from_str(&id) {
        request.headers_mut().insert(REQUEST_ID, value);
    }
    // Unmatched paths share one label so scanners cannot grow the metrics without bound.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().to_string();
    let span = tracing::info_span!("request", request_id = %id, %method, %route);
    let mut response = CURRENT
        .scope(id.clone(), tracing::Instrument::instrument(next.run(request), span))
        .await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    let seconds = started.elapsed().as_secs_f64();
    if let Ok(mut m) = metrics().lock() {
        *m.requests
            .entry((route.clone(), method, response.status().as_u16()))
            .or_default() += 1;
        let h = m.latency.entry(route).or_default();
        if h.counts.is_empty() {
            h.counts = vec![0; BUCKETS.len()];
        }
        for (count, bound) in h.counts.iter_mut().zip(BUCKETS) {
            if seconds <= *bound {
                *count += 1;
            }
        }
        h.sum += seconds;
        h.count += 1;
    }
    response
}

fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// `GET /metrics`.
pub async fn render() -> Response {
    let mut out = String::new();
    if let Ok(m) = metrics().lock() {
        let _ = writeln!(
            out,
            "# HELP slipway_http_requests_total HTTP requests by route, method and status."
        );
        let _ = writeln!(out, "# TYPE slipway_http_requests_total counter");
        for ((route, method, status), n) in &m.requests {
            let _ = writeln!(
                out,
                "slipway_http_requests_total{{route=\"{}\",method=\"{method}\",status=\"{status}\"}} {n}",
                label(route)
            );
        }
        let _ = writeln!(
            out,
            "# HELP slipway_http_request_duration_seconds HTTP request latency by route."
        );
        let _ = writeln!(out, "# TYPE slipway_http_request_duration_seconds histogram");
        for (route, h) in &m.latency {
            let route = label(route);
            for (count, bound) in h.counts.iter().zip(BUCKETS) {
                let _ = writeln!(
                    out,
                    "slipway_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "slipway_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "slipway_http_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "slipway_http_request_duration_seconds_count{{route=\"{route}\"}} {}",
                h.count
            );
        }
        let _ = writeln!(out, "# HELP slipway_auth_refusals_total Tokens refused, by reason.");
        let _ = writeln!(out, "# TYPE slipway_auth_refusals_total counter");
        for (reason, n) in &m.refusals {
            let _ = writeln!(out, "slipway_auth_refusals_total{{reason=\"{}\"}} {n}", label(reason));
        }
        let _ = writeln!(
            out,
            "# HELP slipway_http_streams_open Streamed (NDJSON) responses open now, by route."
        );
        let _ = writeln!(out, "# TYPE slipway_http_streams_open gauge");
        for (route, n) in &m.streams {
            let _ = writeln!(out, "slipway_http_streams_open{{route=\"{}\"}} {n}", label(route));
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

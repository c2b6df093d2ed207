//! Operations at the edge: `/metrics` in Prometheus text format, through the
//! `prometheus` crate: requests by route, method and status, latency histograms by
//! route, token refusals by reason, and streamed responses open now by route. And the
//! request's log span, carrying the request id that `common::request_id`'s layers
//! (tower-http's `SetRequestId`/`PropagateRequestId`) put on every request, which
//! calls to the backends pass on.
//!
//! No label comes from request data: routes are the router's templates (unmatched
//! paths share one label) and methods the nine standard ones (any other is `other`).
//! Counting a request costs one lookup of its route's handles under a read lock, an
//! atomic add and a histogram observation; nothing is allocated once a route and a
//! (method, status) pair have been seen.

use std::{
    collections::HashMap,
    sync::{Arc, LazyLock, PoisonError, RwLock},
    time::Instant,
};

use axum::{
    extract::{MatchedPath, Request},
    http::{HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

pub use common::request_id::HEADER as REQUEST_ID;

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
pub fn current_request_id() -> Option<HeaderValue> {
    CURRENT.try_with(HeaderValue::clone).ok()
}

/// The gateway's metrics, registered in their own registry.
struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    refusals: IntCounterVec,
    streams: IntGaugeVec,
    /// Each route's handles, so a request does not look its series up by labels.
    routes: RwLock<HashMap<Box<str>, Arc<RouteMetrics>>>,
}

/// One route's series: its latency histogram, and its request counters by method
/// label and status (at most ten methods and the statuses the gateway answers, so a
/// short list).
struct RouteMetrics {
    route: Box<str>,
    duration: Histogram,
    requests: RwLock<Vec<(&'static str, StatusCode, IntCounter)>>,
}

impl Metrics {
    fn new() -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "slipway_http_requests_total",
                "HTTP requests by route, method and status.",
            ),
            &["route", "method", "status"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "slipway_http_request_duration_seconds",
                "HTTP request latency by route.",
            )
            .buckets(BUCKETS.to_vec()),
            &["route"],
        )?;
        let refusals = IntCounterVec::new(
            Opts::new("slipway_auth_refusals_total", "Tokens refused, by reason."),
            &["reason"],
        )?;
        let streams = IntGaugeVec::new(
            Opts::new(
                "slipway_http_streams_open",
                "Streamed (NDJSON) responses open now, by route.",
            ),
            &["route"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(refusals.clone()))?;
        registry.register(Box::new(streams.clone()))?;
        Ok(Metrics {
            registry,
            requests,
            duration,
            refusals,
            streams,
            routes: RwLock::default(),
        })
    }

    fn route(&self, route: &str) -> prometheus::Result<Arc<RouteMetrics>> {
        if let Some(handles) = read(&self.routes).get(route) {
            return Ok(handles.clone());
        }
        let handles = Arc::new(RouteMetrics {
            route: route.into(),
            duration: self.duration.get_metric_with_label_values(&[route])?,
            requests: RwLock::default(),
        });
        Ok(self
            .routes
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(route.into())
            .or_insert(handles)
            .clone())
    }

    fn record(&self, route: &str, method: &'static str, status: StatusCode, seconds: f64) -> prometheus::Result<()> {
        let handles = self.route(route)?;
        handles.duration.observe(seconds);
        let counted = read(&handles.requests)
            .iter()
            .find(|(m, s, _)| *m == method && *s == status)
            .map(|(_, _, n)| n.inc())
            .is_some();
        if !counted {
            let counter = self
                .requests
                .get_metric_with_label_values(&[&*handles.route, method, status.as_str()])?;
            counter.inc();
            let mut requests = handles.requests.write().unwrap_or_else(PoisonError::into_inner);
            if !requests.iter().any(|(m, s, _)| *m == method && *s == status) {
                requests.push((method, status, counter));
            }
        }
        Ok(())
    }
}

/// The metrics, made once; `None` (and nothing counted, with one error logged) only if
/// the crate refused their definitions, which a unit test rules out.
fn metrics() -> Option<&'static Metrics> {
    static METRICS: LazyLock<Option<Metrics>> = LazyLock::new(|| {
        Metrics::new()
            .map_err(|error| tracing::error!(%error, "metrics not set up"))
            .ok()
    });
    METRICS.as_ref()
}

/// Handles stay usable after a panic elsewhere: every update is a whole one.
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

/// Counts a refused token, by reason (`missing`, `expired`, `revoked`, …): a fixed
/// label, never request data.
pub fn count_refusal(reason: &'static str) {
    if let Some(counter) = metrics().and_then(|m| m.refusals.get_metric_with_label_values(&[reason]).ok()) {
        counter.inc();
    }
}

/// Counts a streamed response as open until it is dropped (the client went away, the
/// stream ended or the gateway stopped).
#[derive(Debug)]
pub struct OpenStream {
    gauge: Option<IntGauge>,
}

pub fn open_stream(route: &'static str) -> OpenStream {
    let gauge = metrics().and_then(|m| m.streams.get_metric_with_label_values(&[route]).ok());
    if let Some(gauge) = &gauge {
        gauge.inc();
    }
    OpenStream { gauge }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        if let Some(gauge) = &self.gauge {
            gauge.dec();
        }
    }
}

/// Middleware inside the request-id layers: the request's span (with its id, method
/// and route), the id for calls to the backends, and the request's count and latency.
pub async fn observe(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request
        .headers()
        .get(REQUEST_ID)
        .cloned()
        .unwrap_or_else(common::request_id::NewUuid::id);
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
    let response = CURRENT
        .scope(id, tracing::Instrument::instrument(next.run(request), span))
        .await;
    if let Some(metrics) = metrics()
        && let Err(error) = metrics.record(route, method, response.status(), started.elapsed().as_secs_f64())
    {
        tracing::warn!(%error, "request not counted");
    }
    response
}

/// `GET /metrics`.
pub async fn render() -> Response {
    let Some(metrics) = metrics() else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let encoder = TextEncoder::new();
    match encoder.encode_to_string(&metrics.registry.gather()) {
        Ok(text) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
        Err(error) => {
            tracing::error!(%error, "metrics not rendered");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_outside_the_standard_ones_share_one_label() {
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
        assert_eq!(method_label(&Method::from_bytes(&[b'X'; 4000]).unwrap()), "other");
    }

    #[test]
    fn each_request_counts_once_by_method_status_and_bucket() {
        let metrics = Metrics::new().unwrap();
        for (method, status, seconds) in [
            ("GET", StatusCode::OK, 0.0005),
            ("GET", StatusCode::OK, 0.003),
            ("GET", StatusCode::UNAUTHORIZED, 20.0),
            ("POST", StatusCode::OK, 0.003),
        ] {
            metrics.record("/r/{id}", method, status, seconds).unwrap();
        }
        metrics
            .refusals
            .get_metric_with_label_values(&["missing"])
            .unwrap()
            .inc();
        let text = TextEncoder::new().encode_to_string(&metrics.registry.gather()).unwrap();
        for expected in [
            "# TYPE slipway_http_requests_total counter",
            r#"slipway_http_requests_total{method="GET",route="/r/{id}",status="200"} 2"#,
            r#"slipway_http_requests_total{method="GET",route="/r/{id}",status="401"} 1"#,
            r#"slipway_http_requests_total{method="POST",route="/r/{id}",status="200"} 1"#,
            "# TYPE slipway_http_request_duration_seconds histogram",
            r#"slipway_http_request_duration_seconds_bucket{route="/r/{id}",le="0.001"} 1"#,
            r#"slipway_http_request_duration_seconds_bucket{route="/r/{id}",le="0.0025"} 1"#,
            r#"slipway_http_request_duration_seconds_bucket{route="/r/{id}",le="0.005"} 3"#,
            r#"slipway_http_request_duration_seconds_bucket{route="/r/{id}",le="10"} 3"#,
            r#"slipway_http_request_duration_seconds_bucket{route="/r/{id}",le="+Inf"} 4"#,
            r#"slipway_http_request_duration_seconds_count{route="/r/{id}"} 4"#,
            r#"slipway_auth_refusals_total{reason="missing"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == expected), "missing {expected} in:\n{text}");
        }
        let sum = text
            .lines()
            .find_map(|l| l.strip_prefix(r#"slipway_http_request_duration_seconds_sum{route="/r/{id}"} "#))
            .unwrap();
        assert!((sum.parse::<f64>().unwrap() - 20.0065).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn open_streams_go_up_and_down() {
        let metrics = metrics().unwrap();
        let gauge = || {
            metrics
                .streams
                .get_metric_with_label_values(&["/test/streams"])
                .unwrap()
                .get()
        };
        let first = open_stream("/test/streams");
        let second = open_stream("/test/streams");
        assert_eq!(gauge(), 2);
        drop(first);
        assert_eq!(gauge(), 1);
        drop(second);
        assert_eq!(gauge(), 0);
    }
}

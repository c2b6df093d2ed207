//! fastDeploy's JSON objects (contract 2.2) built from the backends' messages, its
//! timestamp format (UTC, microseconds, `Z`), and pydantic-style checks of the
//! deployment routes' request bodies.

use std::future::Future;

use axum::{
    body::Body,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use proto::{deploy::v1 as deploy, registry::v1 as registry, wkt::Timestamp};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::error::{ApiError, missing, validation_error};

/// A timestamp as fastDeploy's clients read it, or null.
pub fn timestamp(t: Option<&Timestamp>) -> Value {
    timestamp_text(t).map_or(Value::Null, Value::String)
}

/// A timestamp as fastDeploy's clients read it (UTC, microseconds, `Z`).
fn timestamp_text(t: Option<&Timestamp>) -> Option<String> {
    t.and_then(|t| DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?))
        .map(|dt| dt.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
}

/// A protobuf Struct as a JSON object (`{}` when absent), whole numbers as integers.
fn object(s: Option<&proto::wkt::Struct>) -> Value {
    Some(super::services::struct_json(s))
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}))
}

// The objects below are serialized with their fields in the order declared, which is
// alphabetical: the order fastDeploy's answers have always had here (serde_json's
// maps sort their keys), so every byte stays as it was.

/// A **Deployment**: `id, service_id, origin, user, started, finished, context`; with
/// `details` a **StartedDeployment**, with `steps` a **DeploymentWithSteps**.
#[derive(Debug, Serialize)]
pub struct Deployment<'a> {
    pub context: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
    pub finished: Option<String>,
    pub id: i64,
    pub origin: &'a str,
    pub service_id: i64,
    pub started: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<Step<'a>>>,
    pub user: &'a str,
}

impl<'a> Deployment<'a> {
    pub fn new(d: &'a deploy::Deployment) -> Deployment<'a> {
        let mut context = object(d.context.as_ref());
        if let Some(map) = context.as_object_mut() {
            map.entry("env").or_insert_with(|| json!({}));
        }
        Deployment {
            context,
            details: None,
            finished: timestamp_text(d.finished.as_ref()),
            id: d.id,
            origin: &d.origin,
            service_id: d.service_id,
            started: timestamp_text(d.started.as_ref()),
            steps: None,
            user: &d.user,
        }
    }

    /// A **DeploymentWithSteps**.
    pub fn with_steps(d: &'a deploy::Deployment) -> Deployment<'a> {
        Deployment {
            steps: Some(d.steps.iter().map(Step::new).collect()),
            ..Deployment::new(d)
        }
    }
}

/// A **Step**: `name, state, started, finished, message, id, deployment_id`.
#[derive(Debug, Serialize)]
pub struct Step<'a> {
    pub deployment_id: i64,
    pub finished: Option<String>,
    pub id: i64,
    pub message: &'a str,
    pub name: &'a str,
    pub started: Option<String>,
    pub state: &'a str,
}

impl<'a> Step<'a> {
    pub fn new(s: &'a deploy::Step) -> Step<'a> {
        Step {
            deployment_id: s.deployment_id,
            finished: timestamp_text(s.finished.as_ref()),
            id: s.id,
            message: &s.message,
            name: &s.name,
            started: timestamp_text(s.started.as_ref()),
            state: &s.state,
        }
    }
}

/// A **Service**: `id, name, data`.
#[derive(Debug, Serialize)]
pub struct Service<'a> {
    pub data: Value,
    pub id: i64,
    pub name: &'a str,
}

impl<'a> Service<'a> {
    pub fn new(s: &'a registry::Service) -> Service<'a> {
        Service {
            data: object(s.data.as_ref()),
            id: s.id,
            name: &s.name,
        }
    }
}

/// A deployed service: `id, deployment_id, config`.
#[derive(Debug, Serialize)]
pub struct DeployedService {
    pub config: Value,
    pub deployment_id: i64,
    pub id: i64,
}

impl DeployedService {
    pub fn new(d: &registry::DeployedService) -> DeployedService {
        DeployedService {
            config: super::services::struct_json(d.config.as_ref()),
            deployment_id: d.deployment_id,
            id: d.id,
        }
    }
}

/// `{"detail": …}`, fastDeploy's answer to a done request.
#[derive(Debug, Serialize)]
pub struct Detail {
    pub detail: String,
}

/// An object as a JSON map (for the WebSocket frames, which add keys to it).
fn map(object: &impl Serialize) -> Map<String, Value> {
    match serde_json::to_value(object) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

/// A **Deployment** as a JSON map.
pub fn deployment(d: &deploy::Deployment) -> Map<String, Value> {
    map(&Deployment::new(d))
}

/// A **Step** as a JSON map.
pub fn step(s: &deploy::Step) -> Map<String, Value> {
    map(&Step::new(s))
}

/// A **Service** as a JSON map.
pub fn service(s: &registry::Service) -> Map<String, Value> {
    map(&Service::new(s))
}

/// One page of a list: its items, serialized and joined by commas, and the token of
/// the next page (empty on the last).
#[derive(Debug, Default)]
pub struct JsonPage {
    items: Vec<u8>,
    next_page_token: String,
}

impl JsonPage {
    pub fn new<T: Serialize>(
        items: impl IntoIterator<Item = T>,
        next_page_token: String,
    ) -> Result<JsonPage, ApiError> {
        let mut page = JsonPage {
            items: Vec::new(),
            next_page_token,
        };
        for item in items {
            if !page.items.is_empty() {
                page.items.push(b',');
            }
            serde_json::to_writer(&mut page.items, &item).map_err(|error| {
                tracing::error!(%error, "cannot encode a list item");
                ApiError::Detail(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error".into())
            })?;
        }
        Ok(page)
    }

    /// The page's items, encoded and separated by commas.
    pub fn into_items(self) -> Vec<u8> {
        self.items
    }
}

/// Where a streamed list is.
struct ArrayState<F> {
    fetch: F,
    /// The page fetched before the answer began.
    first: Option<JsonPage>,
    /// The token the next page is fetched with.
    token: String,
    opened: bool,
    wrote_item: bool,
    done: bool,
    /// Called with the whole body once it is out (then `kept` holds it).
    keep: Option<Box<dyn FnOnce(Bytes) + Send>>,
    kept: Vec<u8>,
}

/// A JSON array answered page by page: `fetch(page_token)` gives each page (`""` the
/// first), and the next one is fetched only when the client has read the one before,
/// so memory stays one page whatever the list's length. The bytes are those of the
/// whole array serialized at once (`[`, items separated by `,`, `]`). An error on the
/// first page is the answer, as for any handler; after the first byte it can only end
/// the body (the client sees the connection break) and is logged. `keep`, if given,
/// receives the whole body once the last byte is produced (for a cache).
pub async fn json_array<F, Fut>(
    list: &'static str,
    mut fetch: F,
    keep: Option<Box<dyn FnOnce(Bytes) + Send>>,
) -> Result<Response, ApiError>
where
    F: FnMut(String) -> Fut + Send + 'static,
    Fut: Future<Output = Result<JsonPage, ApiError>> + Send + 'static,
{
    let first = fetch(String::new()).await?;
    let state = ArrayState {
        fetch,
        first: Some(first),
        token: String::new(),
        opened: false,
        wrote_item: false,
        done: false,
        keep,
        kept: Vec::new(),
    };
    let chunks = futures::stream::unfold(state, move |mut state| async move {
        if state.done {
            return None;
        }
        let page = match state.first.take() {
            Some(page) => page,
            None => match (state.fetch)(state.token.clone()).await {
                Ok(page) => page,
                Err(error) => {
                    tracing::error!(list, ?error, "list answer cut short: a page could not be read");
                    state.done = true;
                    return Some((Err(std::io::Error::other("a page could not be read")), state));
                }
            },
        };
        let mut chunk = Vec::with_capacity(page.items.len() + 2);
        if !state.opened {
            chunk.push(b'[');
            state.opened = true;
        }
        if !page.items.is_empty() {
            if state.wrote_item {
                chunk.push(b',');
            }
            chunk.extend_from_slice(&page.items);
            state.wrote_item = true;
        }
        if page.next_page_token.is_empty() || page.next_page_token == state.token {
            chunk.push(b']');
            state.done = true;
        } else {
            state.token = page.next_page_token;
        }
        if state.keep.is_some() {
            state.kept.extend_from_slice(&chunk);
            if state.done
                && let Some(keep) = state.keep.take()
            {
                keep(Bytes::from(std::mem::take(&mut state.kept)));
            }
        }
        Some((Ok(Bytes::from(chunk)), state))
    });
    Ok(([(header::CONTENT_TYPE, "application/json")], Body::from_stream(chunks)).into_response())
}

/// A body that must be a JSON object: none is FastAPI's `missing`, anything else
/// `model_attributes_type`.
pub fn body_object(body: Option<Value>) -> Result<Map<String, Value>, ApiError> {
    match body {
        None => Err(ApiError::Validation(vec![missing(&["body"], Value::Null)])),
        Some(Value::Object(map)) => Ok(map),
        Some(other) => Err(not_an_object(other)),
    }
}

fn not_an_object(input: Value) -> ApiError {
    ApiError::Validation(vec![validation_error(
        "model_attributes_type",
        &["body"],
        "Input should be a valid dictionary or object to extract fields from",
        input,
    )])
}

/// The `env` of a start request (contract 2.11): no body, `null` and `{}` are `{}`;
/// unknown keys are dropped; `env` must be an object.
pub fn start_env(body: Option<Value>) -> Result<Map<String, Value>, ApiError> {
    let mut body = match body {
        None | Some(Value::Null) => return Ok(Map::new()),
        Some(Value::Object(map)) => map,
        Some(other) => return Err(not_an_object(other)),
    };
    match body.remove("env") {
        None => Ok(Map::new()),
        Some(Value::Object(env)) => Ok(env),
        Some(other) => Err(ApiError::Validation(vec![validation_error(
            "dict_type",
            &["body", "env"],
            "Input should be a valid dictionary",
            other,
        )])),
    }
}

/// A step result as a deploy script posts it (contract 2.14, fastDeploy's `StepResult`).
#[derive(Debug)]
pub struct StepReport {
    pub name: String,
    pub state: String,
    pub started: Timestamp,
    pub finished: Timestamp,
    pub message: String,
}

/// Checks a `POST /steps/` body field by field, reporting every problem at once in
/// the order fastDeploy's model declares the fields.
pub fn step_report(body: Option<Value>) -> Result<StepReport, ApiError> {
    let body = body_object(body)?;
    let whole = Value::Object(body.clone());
    let mut errors = Vec::new();
    let mut text = |field: &'static str| match body.get(field) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            errors.push(validation_error(
                "string_type",
                &["body", field],
                "Input should be a valid string",
                other.clone(),
            ));
            None
        }
        None => {
            errors.push(missing(&["body", field], whole.clone()));
            None
        }
    };
    let name = text("name");
    let state = text("state");
    let mut time = |field: &'static str| match body.get(field) {
        Some(value) => match parse_datetime(value) {
            Ok(t) => Some(t),
            Err(error) => {
                errors.push(error.entry(field, value));
                None
            }
        },
        None => {
            errors.push(missing(&["body", field], whole.clone()));
            None
        }
    };
    let started = time("started");
    let finished = time("finished");
    let message = match body.get("message") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            errors.push(validation_error(
                "string_type",
                &["body", "message"],
                "Input should be a valid string",
                other.clone(),
            ));
            None
        }
        None => {
            errors.push(missing(&["body", "message"], whole));
            None
        }
    };
    match (name, state, started, finished, message) {
        (Some(name), Some(state), Some(started), Some(finished), Some(message)) if errors.is_empty() => {
            Ok(StepReport {
                name,
                state,
                started,
                finished,
                message,
            })
        }
        _ => Err(ApiError::Validation(errors)),
    }
}

/// Why a value is not a datetime, in pydantic's terms.
#[derive(Debug, PartialEq)]
enum DatetimeError {
    /// Not a string or a number (null included).
    Type,
    /// A string that is not ISO 8601.
    Parsing(&'static str),
}

impl DatetimeError {
    fn entry(&self, field: &str, input: &Value) -> Value {
        match self {
            DatetimeError::Type => validation_error(
                "datetime_type",
                &["body", field],
                "Input should be a valid datetime",
                input.clone(),
            ),
            DatetimeError::Parsing(reason) => json!({
                "type": "datetime_from_date_parsing",
                "loc": ["body", field],
                "msg": format!("Input should be a valid datetime or date, {reason}"),
                "input": input,
                "ctx": { "error": reason },
            }),
        }
    }
}

/// pydantic's lax datetime: ISO 8601 text (with or without a zone; none means UTC;
/// a bare date is midnight) or Unix time in seconds (milliseconds beyond 2e10).
fn parse_datetime(value: &Value) -> Result<Timestamp, DatetimeError> {
    let utc = match value {
        Value::String(s) => parse_text(s.trim())?,
        Value::Number(n) => {
            let seconds = n.as_f64().ok_or(DatetimeError::Type)?;
            let seconds = if seconds.abs() > 2e10 {
                seconds / 1000.0
            } else {
                seconds
            };
            let micros = (seconds * 1e6).round();
            if !micros.is_finite() || micros.abs() > 1e17 {
                return Err(DatetimeError::Parsing("value is out of range"));
            }
            DateTime::from_timestamp_micros(micros as i64).ok_or(DatetimeError::Parsing("value is out of range"))?
        }
        _ => return Err(DatetimeError::Type),
    };
    Ok(Timestamp {
        seconds: utc.timestamp(),
        nanos: i32::try_from(utc.timestamp_subsec_nanos()).unwrap_or(0),
    })
}

fn parse_text(s: &str) -> Result<DateTime<Utc>, DatetimeError> {
    if s.len() < 10 {
        return Err(DatetimeError::Parsing("input is too short"));
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Ok(dt.with_timezone(&Utc));
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(s, format) {
            return Ok(naive.and_utc());
        }
    }
    if let Ok(date) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(date.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc());
    }
    Err(DatetimeError::Parsing("invalid datetime format"))
}

/// The body as JSON; `None` when there is none. Not JSON is FastAPI's `json_invalid`.
pub fn parse_json(bytes: &[u8]) -> Result<Option<Value>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(bytes).map(Some).map_err(|e| {
        ApiError::Validation(vec![json!({
            "type": "json_invalid",
            "loc": ["body", e.column().saturating_sub(1)],
            "msg": "JSON decode error",
            "input": {},
            "ctx": { "error": "Expecting value" },
        })])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_with_microseconds_and_z() {
        let t = Timestamp {
            seconds: 1_795_420_765,
            nanos: 370_399_123,
        };
        assert_eq!(timestamp(Some(&t)), json!("2026-11-23T07:59:25.370399Z"));
        assert_eq!(
            timestamp(Some(&Timestamp { seconds: 0, nanos: 0 })),
            json!("1970-01-01T00:00:00.000000Z")
        );
        assert_eq!(timestamp(None), Value::Null);
    }

    #[test]
    fn datetimes_parse_like_pydantic() {
        let t = |v: Value| parse_datetime(&v).map(|t| (t.seconds, t.nanos));
        assert_eq!(t(json!("1970-01-01T00:00:01Z")), Ok((1, 0)));
        assert_eq!(t(json!("1970-01-01T02:00:01+02:00")), Ok((1, 0)));
        assert_eq!(t(json!("1970-01-01T00:00:01.5")), Ok((1, 500_000_000)));
        assert_eq!(t(json!("1970-01-01 00:00:01")), Ok((1, 0)));
        assert_eq!(t(json!("1970-01-02")), Ok((86_400, 0)));
        assert_eq!(t(json!(86_400)), Ok((86_400, 0)));
        assert_eq!(t(json!(86_400_000_000_i64)), Ok((86_400_000, 0)));
        assert_eq!(t(json!(null)), Err(DatetimeError::Type));
        assert_eq!(t(json!(true)), Err(DatetimeError::Type));
        assert_eq!(t(json!("abc")), Err(DatetimeError::Parsing("input is too short")));
        assert!(matches!(t(json!("yesterday at noon")), Err(DatetimeError::Parsing(_))));
        assert!(matches!(t(json!(1e300)), Err(DatetimeError::Parsing(_))));
    }

    #[test]
    fn start_bodies_mean_an_env_or_a_422() {
        assert_eq!(start_env(None).unwrap(), Map::new());
        assert_eq!(start_env(Some(Value::Null)).unwrap(), Map::new());
        assert_eq!(start_env(Some(json!({"other": 1}))).unwrap(), Map::new());
        assert_eq!(start_env(Some(json!({"env": {"a": "b"}}))).unwrap()["a"], json!("b"));
        assert!(
            matches!(start_env(Some(json!({"env": "x"}))), Err(ApiError::Validation(e)) if e[0]["type"] == "dict_type")
        );
        assert!(
            matches!(start_env(Some(json!([1]))), Err(ApiError::Validation(e)) if e[0]["type"] == "model_attributes_type")
        );
    }

    #[test]
    fn step_reports_list_every_problem_in_field_order() {
        let Err(ApiError::Validation(errors)) = step_report(Some(json!({"name": 1, "started": null}))) else {
            panic!("accepted");
        };
        let kinds: Vec<(&str, &str)> = errors
            .iter()
            .map(|e| (e["type"].as_str().unwrap(), e["loc"][1].as_str().unwrap()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("string_type", "name"),
                ("missing", "state"),
                ("datetime_type", "started"),
                ("missing", "finished"),
                ("missing", "message")
            ]
        );
        assert_eq!(errors[1]["input"], json!({"name": 1, "started": null}));
        let ok = step_report(Some(json!({
            "id": null, "deployment_id": null, "name": "build", "state": "success",
            "started": "2026-01-01T00:00:00Z", "finished": "2026-01-01T00:00:01+00:00", "message": ""
        })))
        .unwrap();
        assert_eq!(
            (ok.name.as_str(), ok.finished.seconds - ok.started.seconds),
            ("build", 1)
        );
    }
}

//! `GET /v1/deployments/{id}/log`: a deployment's output as plain text, one output
//! line per line (`GetDeploymentLog`, paged here until the stored log is read), or
//! with `?follow=true` the NDJSON follow of `/log/watch` (`WatchDeploymentLog`).
//! Headers tell a reader where to resume: `x-log-last-line` (the number of the last
//! line in the body, or `after_line`), `x-log-complete` (the run has ended and the
//! body holds its whole output after `after_line`) and `x-log-dropped-lines`.

use axum::{
    extract::{Path, State},
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use proto::deploy::v1::{GetDeploymentLogRequest, GetDeploymentLogResponse};
use serde::Deserialize;

use super::{Deploy, Params, deployments::id, forward, streams};
use crate::{error::ApiError, interceptor::Caller, server::AppState};

/// Lines asked for per backend call.
const PAGE: u32 = 5000;
/// Most pages one response gathers (a log is bounded, 10,000 lines by default; a run
/// printing faster than it is read does not hold a response open for ever).
const MAX_PAGES: usize = 20;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    after_line: Option<i64>,
    limit: Option<u32>,
    follow: Option<bool>,
}

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
    Params(query): Params<LogQuery>,
) -> Result<Response, ApiError> {
    let id = id(&raw)?;
    let mut after = query.after_line.unwrap_or(0).max(0);
    if query.follow.unwrap_or(false) {
        if query.limit.is_some() {
            return Err(super::bad_request("limit does not go with follow=true"));
        }
        return streams::follow_log(&state, &caller, id, after).await;
    }
    // No limit (or 0): every stored line.
    let mut left = query.limit.filter(|l| *l > 0);
    let mut body = String::new();
    let mut last = GetDeploymentLogResponse::default();
    for _ in 0..MAX_PAGES {
        let limit = left.map_or(PAGE, |l| l.min(PAGE));
        let request = GetDeploymentLogRequest {
            deployment_id: id,
            after_line: after,
            limit,
        };
        let page = forward(&state, Some(&caller), request, async |mut c: Deploy, r| {
            c.get_deployment_log(r).await
        })
        .await?
        .0;
        for line in &page.lines {
            body.push_str(&line.text);
            body.push('\n');
            after = line.line;
        }
        left = left.map(|l| l.saturating_sub(page.lines.len() as u32));
        last = page;
        if !last.more || left == Some(0) {
            break;
        }
    }
    let complete = last.complete && !last.more;
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert("x-log-last-line", HeaderValue::from(after));
    headers.insert(
        "x-log-complete",
        HeaderValue::from_static(if complete { "true" } else { "false" }),
    );
    headers.insert("x-log-dropped-lines", HeaderValue::from(last.dropped_lines));
    Ok(response)
}

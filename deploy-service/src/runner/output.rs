//! The deploy script's output (stdout and stderr, each its own pipe, both read the
//! same way), read line by line with a size limit, and what each line means
//! (contract 4.9, safely):
//!
//! | line | meaning |
//! |---|---|
//! | a JSON object with `deployed_service` (an object) | the deployed-service config to publish when the run succeeds |
//! | a JSON object with a string `name` | a step report: `state` (default `pending`), `message`, `error_message` (replaces `message` when non-empty) |
//! | a JSON object whose `name` is missing or null | log output |
//! | anything else (not JSON, not an object, not UTF-8) | log output |
//! | a report the state machine refuses (unknown state, name too long, `name` or `state` not a string), or `deployed_service` not an object | the run fails, saying which line |
//! | longer than 1 MiB | the run fails ("output line longer than 1 MiB"); its start is kept in the log |

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader},
    sync::mpsc,
};

use crate::{
    logs::Stream,
    model::{Report, cut, now},
};

/// Longest output line read.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

/// What one output line means.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    Report(Report),
    DeployedService(Value),
    Log(String),
    Refused(String),
}

/// What the reader passes on: a line of a stream with the time it was read (a
/// report's `started` is when the reader began waiting for it), or the reason
/// reading stopped early (a line too long comes with its first bytes).
#[derive(Debug)]
pub enum Item {
    Line(Stream, DateTime<Utc>, Line),
    TooLong(Stream, Vec<u8>),
    Failed(String),
}

/// Reads `output` to its end, sending one item per line; the channel closes at EOF
/// (once every stream's reader has ended).
pub async fn read(output: impl AsyncRead + Unpin, stream: Stream, items: mpsc::Sender<Item>) {
    let mut reader = BufReader::with_capacity(64 * 1024, output);
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        let waited_since = now();
        let limit = MAX_LINE_BYTES as u64 + 1;
        let read = (&mut reader).take(limit).read_until(b'\n', &mut buffer).await;
        let item = match read {
            Ok(0) => return,
            Ok(_) if buffer.len() > MAX_LINE_BYTES && buffer.last() != Some(&b'\n') => {
                Item::TooLong(stream, std::mem::take(&mut buffer))
            }
            Ok(_) => Item::Line(stream, now(), parse(&buffer, waited_since)),
            Err(error) => Item::Failed(format!("reading the deploy script's output failed: {error}")),
        };
        let stop = !matches!(item, Item::Line(..));
        if items.send(item).await.is_err() || stop {
            return;
        }
    }
}

/// The meaning of one line (with or without its line break).
pub fn parse(line: &[u8], started: DateTime<Utc>) -> Line {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let text = String::from_utf8_lossy(line);
    let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(line) else {
        return Line::Log(text.into_owned());
    };
    if let Some(config) = object.get("deployed_service") {
        return match config {
            Value::Object(_) => Line::DeployedService(config.clone()),
            _ => Line::Refused(format!(
                "`deployed_service` must be a JSON object, in output line {}",
                cut(&text, 200)
            )),
        };
    }
    match report(&object, started) {
        Ok(Some(report)) => Line::Report(report),
        Ok(None) => Line::Log(text.into_owned()),
        Err(reason) => Line::Refused(format!("step report refused ({reason}): {}", cut(&text, 200))),
    }
}

fn report(object: &Map<String, Value>, started: DateTime<Utc>) -> Result<Option<Report>, String> {
    let name = match object.get("name") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(name)) => name,
        Some(_) => return Err("`name` must be a string".into()),
    };
    let state = match object.get("state") {
        None | Some(Value::Null) => "pending",
        Some(Value::String(state)) => state.as_str(),
        Some(_) => return Err("`state` must be a string".into()),
    };
    let text = |key: &str| match object.get(key) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    let error_message = text("error_message");
    let message = if error_message.is_empty() {
        text("message")
    } else {
        error_message
    };
    Report::new(name, state, &message, Some(started))
        .map(Some)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::StepState;

    fn parsed(line: &str) -> Line {
        parse(line.as_bytes(), now())
    }

    #[test]
    fn lines_are_reports_configs_or_log_output() {
        let Line::Report(r) = parsed("{\"name\": \"build\", \"state\": \"success\", \"message\": \"ok\"}\n") else {
            panic!("not a report")
        };
        assert_eq!(
            (r.name.as_str(), r.state, r.message.as_str()),
            ("build", StepState::Success, "ok")
        );
        let Line::Report(r) = parsed(r#"{"name": "b", "message": "m", "error_message": "boom", "misc": [1]}"#) else {
            panic!("not a report")
        };
        assert_eq!((r.state, r.message.as_str()), (StepState::Pending, "boom"));
        assert_eq!(
            parsed(r#"{"deployed_service": {"port": 80}}"#),
            Line::DeployedService(json!({"port": 80}))
        );
        for log in [
            "hello",
            "[1, 2]",
            "3",
            "\"x\"",
            "{\"state\": \"success\"}",
            "{\"name\": null}",
            "{",
        ] {
            assert!(matches!(parsed(log), Line::Log(_)), "{log}");
        }
        assert!(matches!(parse(b"\xff\xfe{", now()), Line::Log(_)));
    }

    #[test]
    fn bad_reports_are_refused_with_the_line() {
        for bad in [
            r#"{"name": "a", "state": "skipped"}"#,
            r#"{"name": 1, "state": "success"}"#,
            r#"{"name": "a", "state": 1}"#,
            r#"{"name": "", "state": "success"}"#,
            r#"{"deployed_service": [1]}"#,
        ] {
            let Line::Refused(reason) = parsed(bad) else {
                panic!("{bad} not refused")
            };
            assert!(reason.contains(&bad[..10]), "{reason}");
        }
    }

    #[tokio::test]
    async fn long_lines_stop_the_reader_and_short_ones_pass() {
        let mut input = b"one\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', MAX_LINE_BYTES));
        input.push(b'\n');
        input.extend(std::iter::repeat_n(b'y', MAX_LINE_BYTES + 1));
        input.extend(b"\nnever read\n");
        let (tx, mut rx) = mpsc::channel(8);
        read(&input[..], Stream::Stderr, tx).await;
        assert!(matches!(rx.recv().await, Some(Item::Line(Stream::Stderr, _, Line::Log(l))) if l == "one"));
        assert!(matches!(rx.recv().await, Some(Item::Line(_, _, Line::Log(l))) if l.len() == MAX_LINE_BYTES));
        assert!(matches!(rx.recv().await, Some(Item::TooLong(Stream::Stderr, b)) if b.len() > MAX_LINE_BYTES));
        assert!(rx.recv().await.is_none());
    }
}

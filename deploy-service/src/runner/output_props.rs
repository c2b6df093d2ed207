//! Property tests of the deploy-script protocol's line parser (`output::parse`) and
//! its line reader, on generated lines and on the corpus in `tests/corpus/step_line`:
//! nothing panics, a line is a report only when it is a JSON object with a good
//! `name` and `state`, and the reader passes on one item per line.

use common::fuzz::{config, corpus, json_bytes, json_value, nasty_text, object_with};
use proptest::prelude::*;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::output::{Item, Line, parse, read};
use crate::{
    logs::Stream,
    model::{MAX_MESSAGE_CHARS, MAX_NAME_CHARS, StepState, now},
};

const FIELDS: &[&str] = &["name", "state", "message", "error_message", "deployed_service"];

/// What any line must parse to: a report only of a well-formed step, a refusal that
/// quotes at most 200 characters of the line.
fn check(line: &[u8]) -> Result<(), TestCaseError> {
    match parse(line, now()) {
        Line::Report(report) => {
            let text = line.strip_suffix(b"\n").unwrap_or(line);
            let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(text.strip_suffix(b"\r").unwrap_or(text))
            else {
                return Err(TestCaseError::fail("a report from a line that is not a JSON object"));
            };
            prop_assert_eq!(object.get("name"), Some(&json!(report.name)));
            prop_assert!(!report.name.is_empty() && report.name.chars().count() <= MAX_NAME_CHARS);
            prop_assert!(report.message.chars().count() <= MAX_MESSAGE_CHARS);
        }
        Line::Refused(reason) => prop_assert!(reason.chars().count() < 400, "{}", reason),
        Line::DeployedService(config) => prop_assert!(config.is_object()),
        Line::Log(_) => {}
    }
    Ok(())
}

#[test]
fn the_corpus_parses_without_panic() {
    for (name, input) in corpus("step_line") {
        check(&input).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_bytes(line in json_bytes()) {
        check(&line)?;
    }

    #[test]
    fn objects_of_step_fields(
        object in object_with(FIELDS, json!({"name": "build", "state": "success", "message": "ok"})),
        crlf in any::<bool>(),
    ) {
        let mut line = object.to_string().into_bytes();
        line.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
        check(&line)?;
        let name_ok = object.get("name").and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty() && n.chars().count() <= MAX_NAME_CHARS);
        let state_ok = match object.get("state") {
            None | Some(Value::Null) => true,
            Some(Value::String(s)) => StepState::parse(s).is_some(),
            Some(_) => false,
        };
        let plain = !object.as_object().is_some_and(|o| o.contains_key("deployed_service"));
        if name_ok && state_ok && plain {
            prop_assert!(matches!(parse(&line, now()), Line::Report(_)));
        }
    }

    #[test]
    fn reports_with_any_name_and_message(name in nasty_text(), state in nasty_text(), message in json_value()) {
        check(json!({"name": name, "state": state, "message": message}).to_string().as_bytes())?;
    }

    /// However the output is cut into lines, the reader passes on one item per line.
    #[test]
    fn the_reader_passes_on_every_line(lines in prop::collection::vec(nasty_text(), 0..20)) {
        let lines: Vec<String> = lines.into_iter().map(|l| l.replace('\n', " ")).collect();
        let output = lines.iter().map(|l| format!("{l}\n")).collect::<String>();
        let runtime = tokio::runtime::Builder::new_current_thread().build().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let items = runtime.block_on(async {
            let (tx, mut rx) = mpsc::channel(64);
            let reading = tokio::spawn(read(std::io::Cursor::new(output.into_bytes()), Stream::Stdout, tx));
            let mut items = Vec::new();
            while let Some(item) = rx.recv().await {
                items.push(item);
            }
            let _ = reading.await;
            items
        });
        prop_assert_eq!(items.len(), lines.len());
        prop_assert!(items.iter().all(|i| matches!(i, Item::Line(Stream::Stdout, _, _))));
    }
}

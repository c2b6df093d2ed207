//! A run's output as the deploy service keeps it (issue 14): every line that is not a
//! protocol line, stdout and stderr each in order with its stream, the deployment
//! token redacted, bytes that are not UTF-8 replaced, a line over the limit cut with a
//! note, a line over 1 MiB failing the run with its start kept, and the bound: the
//! last lines kept, with a marker line where the earlier ones were dropped. Read with
//! `GetDeploymentLog` (pages after a line number). On SQLite and PostgreSQL.

use proto::deploy::v1::{DeploymentStatus, LogStream};
use serde_json::json;
use tests::{
    Backend, Process, Stack,
    deploy_rpc::{Fixture, status, write_service},
    log_fixture::*,
    on_every_backend,
};

on_every_backend!(
    output_is_kept_in_order_per_stream_and_redacted,
    the_bound_keeps_the_last_lines_with_a_marker_and_pages_read_it,
);

/// Prints on both streams, a report, its own token, bytes that are not UTF-8, a NUL,
/// and a line of 2,000 bytes (the limit is 1,024).
const CHATTY: &str = r#"echo "out 1"
echo "err 1" >&2
echo '{"name": "build", "state": "success", "message": "built"}'
echo "token is $token here"
printf 'bad \377\376 bytes\n'
printf 'nul \000 byte\n'
i=2
while [ $i -le 5 ]; do echo "out $i"; echo "err $i" >&2; i=$((i+1)); done
head -c 2000 /dev/zero | tr '\0' 'x'; echo
echo "last"
"#;

/// One line of 1,100,000 bytes: more than the runner reads as one line.
const HUGE: &str = r#"echo "before"
head -c 1100000 /dev/zero | tr '\0' 'y'; echo
echo "never read"
"#;

async fn fixture(backend: Backend, prepare: impl FnOnce(&std::path::Path)) -> Fixture {
    let stack = Stack::builder(backend)
        .services(prepare)
        .env(Process::Deploy, "SLIPWAY_LOG_MAX_LINES", "100")
        .env(Process::Deploy, "SLIPWAY_LOG_MAX_LINE_BYTES", "1024")
        .start()
        .await;
    let admin = stack.admin_token().await;
    Fixture { stack, admin }
}

async fn output_is_kept_in_order_per_stream_and_redacted(backend: Backend) {
    let f = fixture(backend, |dir| {
        let steps = json!({"steps": [{"name": "build"}]});
        write_service(dir, "chatty", steps, &format!("{READ_CONFIG}{CHATTY}"));
        write_service(dir, "huge", json!({}), &format!("{READ_CONFIG}{HUGE}"));
    })
    .await;
    let d = f.start_service("chatty").await;
    let ended = f.finished(d.id).await;
    assert_eq!(status(&ended), DeploymentStatus::Succeeded, "{ended:?}");
    assert_eq!(ended.steps[0].state, "success", "the report is a report");
    let token = serde_json::from_str::<serde_json::Value>(&f.file("chatty", &format!("config-{}", d.id)).await)
        .unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let log = f.whole_log(d.id).await;
    let lines = &log.lines;
    // Every line numbered 1, 2, 3, … with nothing dropped; the report is not output.
    assert_eq!(numbers(lines), (1..=lines.len() as i64).collect::<Vec<_>>());
    assert_eq!((log.dropped_lines, log.more), (0, false));
    let long = format!("{} [slipway: line cut, 2000 bytes in all]", "x".repeat(1024));
    assert_eq!(
        texts(lines, LogStream::Stdout),
        [
            "out 1",
            "token is [redacted] here",
            "bad \u{FFFD}\u{FFFD} bytes",
            "nul \u{FFFD} byte",
            "out 2",
            "out 3",
            "out 4",
            "out 5",
            long.as_str(),
            "last",
        ]
    );
    assert_eq!(
        texts(lines, LogStream::Stderr),
        ["err 1", "err 2", "err 3", "err 4", "err 5"]
    );
    assert_eq!(lines.len(), 15);
    assert!(token.len() > 20 && !format!("{log:?}").contains(&token));
    assert!(lines.iter().all(|l| l.time.is_some()));
    // Each stream in order in time too.
    for stream in [LogStream::Stdout, LogStream::Stderr] {
        let times: Vec<_> = lines
            .iter()
            .filter(|l| l.stream == stream as i32)
            .map(|l| l.time.unwrap())
            .map(|t| (t.seconds, t.nanos))
            .collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{stream:?}: {times:?}");
    }

    // Over 1 MiB: the run fails as before, and the log keeps the line's start.
    let d = f.start_service("huge").await;
    let ended = f.finished(d.id).await;
    assert_eq!(status(&ended), DeploymentStatus::Failed);
    assert!(ended.failure_reason.contains("longer than 1048576 bytes"), "{ended:?}");
    let log = f.whole_log(d.id).await;
    let texts: Vec<&str> = log.lines.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(
        texts.len(),
        3,
        "{:?}",
        &texts.iter().map(|t| &t[..t.len().min(40)]).collect::<Vec<_>>()
    );
    assert_eq!(texts[0], "before");
    assert!(texts[1].starts_with(&"y".repeat(1024)) && texts[1].ends_with("line cut, 1048577 bytes in all]"));
    assert_eq!(log.lines[2].stream, LogStream::Marker as i32);
    assert!(texts[2].contains("longer than 1048576 bytes"), "{}", texts[2]);
}

async fn the_bound_keeps_the_last_lines_with_a_marker_and_pages_read_it(backend: Backend) {
    let f = fixture(backend, |dir| {
        let script = format!("{READ_CONFIG}i=1\nwhile [ $i -le 250 ]; do echo \"line $i\"; i=$((i+1)); done\n");
        write_service(dir, "many", json!({}), &script);
    })
    .await;
    let d = f.start_service("many").await;
    f.finished(d.id).await;
    let log = f.whole_log(d.id).await;
    // The last 100 lines, after a marker numbered as the last dropped line.
    assert_eq!(log.dropped_lines, 150);
    assert_eq!(log.lines.len(), 101);
    let marker = &log.lines[0];
    assert_eq!((marker.line, marker.stream), (150, LogStream::Marker as i32));
    assert!(marker.text.contains("150 earlier lines dropped"), "{}", marker.text);
    assert!(marker.text.contains("last 100 lines"), "{}", marker.text);
    assert_eq!(numbers(&log.lines[1..]), (151..=250).collect::<Vec<_>>());
    let wanted: Vec<String> = (151..=250).map(|n| format!("line {n}")).collect();
    assert_eq!(texts(&log.lines, LogStream::Stdout), wanted);

    // Pages: after a line, at most `limit`, `more` until the end.
    let page = f.log(&f.admin, d.id, 0, 10).await.unwrap();
    assert_eq!(numbers(&page.lines), (150..=159).collect::<Vec<_>>());
    assert!(page.more && page.complete);
    let page = f.log(&f.admin, d.id, 159, 10).await.unwrap();
    assert_eq!(numbers(&page.lines), (160..=169).collect::<Vec<_>>());
    let page = f.log(&f.admin, d.id, 200, 0).await.unwrap();
    assert_eq!(numbers(&page.lines), (201..=250).collect::<Vec<_>>());
    assert!(!page.more);
    let page = f.log(&f.admin, d.id, 250, 10).await.unwrap();
    assert!(page.lines.is_empty() && !page.more && page.complete);
    // Resuming inside the dropped part starts at the marker.
    let page = f.log(&f.admin, d.id, 20, 2).await.unwrap();
    assert_eq!(numbers(&page.lines), [150, 151]);
    // A deployment that does not exist.
    let missing = f.log(&f.admin, d.id + 1000, 0, 0).await.unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
}

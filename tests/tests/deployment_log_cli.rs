//! The CLI and a run's output (issue 14): `slipway deploy --wait` prints the script's
//! output as it comes beside the steps (`--quiet`: steps only) and follows the event
//! stream; `slipway logs ID` prints the stored output, `--follow` until the run ends.
//! On SQLite and PostgreSQL.

use std::time::Duration;

use serde_json::json;
use tests::{
    Backend, Stack,
    deploy_rpc::{Fixture, write_service},
    log_fixture::*,
    on_every_backend,
    process::bin_dir,
    support::{service_token, slipway_cli, steps_config},
};

on_every_backend!(deploy_wait_prints_output_and_logs_prints_it_again);

/// Prints around its step reports, on both streams.
fn talking() -> String {
    format!(
        r#"{READ_CONFIG}echo "hello from the script"
echo '{{"name": "build", "state": "success", "message": "built"}}'
echo "a warning" >&2
echo '{{"name": "migrate", "state": "success", "message": "migrated"}}'
echo "done"
"#
    )
}

/// Holds until released, printing before and after.
fn held() -> String {
    format!("{READ_CONFIG}echo \"before the hold\"\n{WAIT_RELEASE}echo \"after the hold\"\n")
}

async fn deploy_wait_prints_output_and_logs_prints_it_again(backend: Backend) {
    let stack = Stack::start_with(backend, |root| {
        write_service(root, "talking", steps_config(), &talking());
        write_service(root, "held", json!({}), &held());
    })
    .await;
    let admin = stack.admin_token().await;
    let token = service_token(&stack, &admin, "talking").await;

    let (code, out, err) = slipway_cli(&stack, &token, &["deploy", "--wait"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    for wanted in [
        "  | hello from the script",
        "  | a warning",
        "  | done",
        "  success  build: built",
        "  success  migrate: migrated",
    ] {
        assert!(out.lines().any(|l| l == wanted), "{wanted:?} in:\n{out}\n{err}");
    }
    // The script's own order on stdout is kept; protocol lines are not output.
    let hello = out.find("  | hello").unwrap();
    assert!(hello < out.find("  | done").unwrap(), "{out}");
    assert!(!out.contains("  | {"), "{out}");
    let id: i64 = out
        .lines()
        .find_map(|l| l.strip_prefix("deployment ")?.split(' ').next()?.parse().ok())
        .unwrap();
    assert!(out.contains(&format!("deployment {id} succeeded")), "{out}");

    let (code, quiet, err) = slipway_cli(&stack, &token, &["deploy", "--wait", "--quiet"]);
    assert_eq!(code, Some(0), "{quiet}\n{err}");
    assert!(!quiet.contains("  | "), "{quiet}");
    assert!(quiet.contains("  success  migrate: migrated"), "{quiet}");

    // `logs`: the stored output, with a user token or the service's token.
    for reader in [&admin, &token] {
        let (code, out, err) = slipway_cli(&stack, reader, &["logs", &id.to_string()]);
        assert_eq!(code, Some(0), "{err}");
        // Each stream in its order; the two streams interleave as they were read.
        let stdout: Vec<&str> = out.lines().filter(|l| *l != "a warning").collect();
        assert_eq!(stdout, ["hello from the script", "done"], "{out}\n{err}");
        assert_eq!(out.lines().count(), 3, "{out}");
        let (code, followed, err) = slipway_cli(&stack, reader, &["logs", &id.to_string(), "--follow"]);
        assert_eq!((code, followed.as_str()), (Some(0), out.as_str()), "{err}");
    }
    let (code, json_lines, _) = slipway_cli(&stack, &admin, &["logs", &id.to_string(), "-f", "--json"]);
    assert_eq!(code, Some(0));
    let lines: Vec<serde_json::Value> = json_lines.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let numbers: Vec<&str> = lines.iter().map(|l| l["line"].as_str().unwrap()).collect();
    assert_eq!(numbers, ["1", "2", "3"]);
    assert!(
        lines
            .iter()
            .any(|l| l["text"] == "a warning" && l["stream"] == "LOG_STREAM_STDERR")
    );
    // Another service's token may not read it.
    let other = service_token(&stack, &admin, "held").await;
    let (code, _, err) = slipway_cli(&stack, &other, &["logs", &id.to_string()]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("403"), "{err}");

    // `logs --follow` of a run in progress prints what comes until the run ends.
    let f = Fixture { stack, admin };
    let held = f.start_service("held").await;
    let follower = std::process::Command::new(bin_dir().join("slipway"))
        .args(["logs", &held.id.to_string(), "--follow"])
        .env("SLIPWAY_URL", f.stack.url(""))
        .env("SLIPWAY_TOKEN", &f.admin)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    next_lines(&mut f.watch_log(&f.admin, held.id, 0).await.unwrap(), 1).await;
    f.release("held", held.id);
    let waited = tokio::task::spawn_blocking(move || follower.wait_with_output().unwrap());
    let result = tokio::time::timeout(Duration::from_secs(30), waited).await;
    let output = result.expect("slipway logs --follow ended with the run").unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "before the hold\nafter the hold\n"
    );
}

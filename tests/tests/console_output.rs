//! The deployment page's Output panel in a real browser (headless Chromium over CDP,
//! `tests::browser`), against the real stack: a script prints on stdout and stderr,
//! waiting for the test between prints (a file per line), so each line is seen in the
//! page before the next exists: live is checked, not timed; the gateway restarts in
//! the middle and the panel resumes with no line missed or doubled; stderr lines are
//! marked; the filter shows the matching lines only. A 10,050-line output (the log
//! keeps the last 10,000, after a marker line): the page follows to its last line with
//! only a window of rows in the page; scrolling up stops following, the marker shows
//! first, and Follow (reached with the keyboard) resumes; Download makes the whole log
//! as text; it fits 390 px. Screenshots saved (paths printed). On SQLite and PostgreSQL.

use std::time::Duration;

use serde_json::{Value, json};
use tests::{
    Backend, Stack,
    browser::{Browser, screenshot_dir},
    deploy_rpc::write_service,
    on_every_backend,
    stack::{ADMIN, ADMIN_PASSWORD},
};

on_every_backend!(
    output_follows_live_resumes_and_filters,
    ten_thousand_lines_follow_and_download
);

/// The lines the chatty script prints, in order, each with its stream.
const LINES: [(&str, &str); 6] = [
    ("stdout", "out 1"),
    ("stderr", "err 1"),
    ("stdout", "out 2"),
    ("stderr", "err 2 (warning)"),
    ("stdout", "out 3"),
    ("stderr", "err 3"),
];

/// Prints each line, then waits for `go-<n>` beside it before the next.
fn chatty_script() -> String {
    let mut script = String::from("here=$(cd \"$(dirname \"$0\")\" && pwd)\n");
    script.push_str(&format!("echo '{}'\n", step("running")));
    for (n, (stream, text)) in LINES.iter().enumerate() {
        let to = if *stream == "stderr" { " >&2" } else { "" };
        script.push_str(&format!("echo \"{text}\"{to}\n"));
        script.push_str(&format!("while [ ! -e \"$here/go-{n}\" ]; do sleep 0.05; done\n"));
    }
    script.push_str(&format!("echo '{}'\n", step("success")));
    script
}

/// A step report (a protocol line: not output).
fn step(state: &str) -> Value {
    json!({"name": "talk", "state": state})
}

const MANY: &str = "awk 'BEGIN { for (i = 1; i <= 10050; i++) print \"line \" i }'\n";

fn services(dir: &std::path::Path) {
    let talk = json!({"description": "Talks", "steps": [{"name": "talk"}]});
    write_service(dir, "chatty", talk, &chatty_script());
    write_service(dir, "many", json!({"description": "10,050 lines"}), MANY);
}

/// Deploys `service` from its page and waits for the deployment's page.
async fn deploy(browser: &mut Browser, stack: &Stack, service: &str) -> i64 {
    browser.goto(&stack.url(&format!("/ui/services/{service}"))).await;
    browser.click("#deploy").await;
    let path = browser
        .wait_for(
            "a deployment page",
            "/^\\/ui\\/deployments\\/\\d+$/.test(location.pathname) && location.pathname",
        )
        .await;
    path.as_str().unwrap().rsplit('/').next().unwrap().parse().unwrap()
}

/// The rows in the page: [stream, text] each.
const ROWS: &str = "[...document.querySelectorAll('#output .ln')].map(r => \
    [r.classList[1], r.querySelector('.text').innerText])";

fn expected(lines: &[(&str, &str)]) -> Value {
    json!(lines.iter().map(|(s, t)| json!([s, t])).collect::<Vec<_>>())
}

/// Waits until the page's rows are exactly `want`; panics with what it shows instead.
async fn rows_are(browser: &mut Browser, what: &str, want: &Value) {
    let condition = format!("JSON.stringify({ROWS}) === {:?}", want.to_string());
    browser.wait_for(what, &condition).await;
}

async fn clear_filter(browser: &mut Browser) {
    let clear = "{ const f = document.querySelector('#output-filter'); f.value = ''; \
        f.dispatchEvent(new Event('input', {bubbles: true})); true }";
    browser.eval(clear).await;
}

async fn output_follows_live_resumes_and_filters(backend: Backend) {
    let Some(mut browser) = Browser::launch(1280, 900).await else {
        return;
    };
    let mut stack = Stack::start_with(backend, services).await;
    let shots = screenshot_dir(&format!("{backend:?}").to_lowercase());
    browser.log_in(&stack.url("/ui/"), ADMIN, ADMIN_PASSWORD).await;
    deploy(&mut browser, &stack, "chatty").await;

    // Each line shows once printed, in order, before the script prints the next.
    for n in 0..LINES.len() {
        rows_are(&mut browser, &format!("line {n} shown"), &expected(&LINES[..=n])).await;
        if n == 2 {
            // The gateway stops as an upgrade stops it (its streams end) and starts
            // again: the panel resumes after the last line it has.
            assert!(
                stack.proc("gateway").stop(Duration::from_secs(10)),
                "the gateway stops on SIGTERM"
            );
            stack.restart("gateway").await;
        }
        let go = stack.services_dir().join("chatty").join(format!("go-{n}"));
        std::fs::write(go, "").unwrap();
    }
    browser
        .wait_for(
            "the output ended",
            "document.querySelector('#output')?.dataset.ended === 'true'",
        )
        .await;
    // Every line once, in order, after the restart too.
    let all = expected(&LINES);
    assert_eq!(browser.eval(ROWS).await, all, "{}", stack.logs());
    assert_eq!(browser.text("#output-live").await, "ended");
    // stderr looks different from stdout.
    let colors = browser
        .eval(
            "[...document.querySelectorAll('#output .ln')].slice(0, 2)\
             .map(r => getComputedStyle(r).color)",
        )
        .await;
    assert_ne!(colors[0], colors[1], "stderr is colored: {colors}");
    browser.screenshot(&shots.join("deployment-output.png")).await;

    // The filter: only the matching lines, then all again.
    browser.type_into("#output-filter", "ERR").await;
    let errors: Vec<_> = LINES.iter().copied().filter(|(s, _)| *s == "stderr").collect();
    rows_are(&mut browser, "the filtered lines", &expected(&errors)).await;
    assert_eq!(browser.text("#output-count").await, "3 of 6 lines");
    clear_filter(&mut browser).await;
    browser.type_into("#output-filter", "(warn").await;
    rows_are(&mut browser, "one line matches", &expected(&LINES[3..4])).await;
    clear_filter(&mut browser).await;
    rows_are(&mut browser, "all lines again", &all).await;
}

async fn ten_thousand_lines_follow_and_download(backend: Backend) {
    let Some(mut browser) = Browser::launch(1280, 900).await else {
        return;
    };
    let stack = Stack::start_with(backend, services).await;
    let shots = screenshot_dir(&format!("{backend:?}").to_lowercase());
    browser.log_in(&stack.url("/ui/"), ADMIN, ADMIN_PASSWORD).await;
    let id = deploy(&mut browser, &stack, "many").await;

    // Following: the last line is in view once all are there; only a window of rows
    // is in the page, in a scroller as tall as 10,000 rows (sized by the stylesheet's
    // rules and the script, which the CSP allows).
    let at_end = "(() => { const box = document.querySelector('#output'); \
        const rows = [...box.querySelectorAll('.ln')]; const last = rows[rows.length - 1]; \
        if (!last) return null; \
        const b = box.getBoundingClientRect(), r = last.getBoundingClientRect(); \
        return last.querySelector('.text').innerText === 'line 10050' \
          && r.top >= b.top && r.bottom <= b.bottom + 1 && box.dataset.following === 'true' \
          && [rows.length, box.querySelector('.rows').offsetHeight, +box.dataset.lines]; })()";
    let shown = browser.wait_for("line 10050 in view", at_end).await;
    let [rows, height, lines] = [0, 1, 2].map(|i| shown[i].as_u64().unwrap());
    assert!(rows < 200, "{rows} rows in the page for {lines} lines");
    assert!(lines > 9_000, "{lines} lines kept");
    assert_eq!(height, lines * 20, "the scroller is as tall as every row");
    browser
        .wait_for(
            "the output ended",
            "document.querySelector('#output')?.dataset.ended === 'true'",
        )
        .await;
    browser.screenshot(&shots.join("deployment-output-10000.png")).await;

    // Opened again once the run has ended: the stored log, the marker first (a page that
    // followed live may have seen the lines dropped since: it keeps them).
    browser.goto(&stack.url(&format!("/ui/deployments/{id}"))).await;
    let shown = browser.wait_for("line 10050 in view again", at_end).await;
    let lines = shown[2].as_u64().unwrap();
    assert_eq!(shown[1].as_u64().unwrap(), lines * 20);

    // Scrolled up: not following, the first lines shown, Follow offered; Follow (with
    // the keyboard) goes back to the end.
    browser
        .eval("document.querySelector('#output').scrollTop = 0; true")
        .await;
    browser
        .wait_for(
            "not following",
            "document.querySelector('#output').dataset.following === 'false' \
             && document.querySelector('#output-follow') \
             && document.querySelector('#output .ln')",
        )
        .await;
    // The log keeps its last lines: the first row is the marker saying so, marked.
    let marker = browser
        .wait_for(
            "the marker line first",
            "document.querySelector('#output .ln.marker:first-child .text')?.innerText",
        )
        .await;
    let marker = marker.as_str().unwrap().to_owned();
    browser
        .eval("document.querySelector('#output-follow').focus(); true")
        .await;
    browser.press("Enter").await;
    browser.wait_for("following again", at_end).await;

    // Download: the whole log as text (the Blob the page hands to the browser).
    browser
        .eval(
            "const make = URL.createObjectURL.bind(URL); \
             URL.createObjectURL = (b) => { window.downloaded = b; return make(b); }; true",
        )
        .await;
    browser.click("#output-download").await;
    let text = browser
        .wait_for("the download", "window.downloaded && window.downloaded.text()")
        .await;
    let text = text.as_str().unwrap();
    // The marker, then the kept lines, each once and in order, ending with the last.
    let first = 10_050 - lines + 2;
    let want: String = std::iter::once(marker)
        .chain((first..=10_050).map(|i| format!("line {i}")))
        .map(|l| l + "\n")
        .collect();
    assert!(text == want, "the download has {} bytes", text.len());

    // A phone's width: the panel fits, its rows scroll inside it.
    browser.resize(390, 844).await;
    let fits = "document.documentElement.scrollWidth <= 390 && document.querySelector('#output .ln')";
    browser.wait_for("the output fits 390 px", fits).await;
    browser.screenshot(&shots.join("deployment-output-390.png")).await;
}

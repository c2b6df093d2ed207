//! `cargo bench -p tests --bench console`: the console's budgets (issue 13), measured in
//! headless Chromium against the real stack on loopback. Prints, asserts no timing:
//! - its JavaScript, gzipped (budget 150 KB), from the embedded build (`gateway/web/dist`);
//! - first load to usable page (budget 1 s): navigation start to the login form, and,
//!   with a session, to the services listed (the page's `console:*-ready` marks);
//! - a step reported by a script to the open deployment page (budget 200 ms p95): the
//!   time from sending `ReportStep` to the step's row in the page, over 60 steps;
//! - a run's 10,000 lines of output on its page: from navigation start to the last line
//!   shown, and how long each batch of lines took to apply and render (`output-batch`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proto::deploy::v1::{self as pb, deploy_service_client::DeployServiceClient};
use serde_json::{Value, json};
use tests::{
    Backend, Stack,
    browser::Browser,
    deploy_rpc::{HOLD, write_service},
    grpc::{bearer, channel},
    stack::{ADMIN, ADMIN_PASSWORD},
    wait_until,
};

const LOADS: usize = 10;
const STEPS: usize = 60;

fn now_ms() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64() * 1000.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn summary(mut samples: Vec<f64>) -> String {
    samples.sort_by(f64::total_cmp);
    format!(
        "p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms ({} samples)",
        percentile(&samples, 0.5),
        percentile(&samples, 0.95),
        samples[samples.len() - 1],
        samples.len()
    )
}

fn bundle_sizes() {
    let dist = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../gateway/web/dist/assets");
    let (mut js, mut js_gz, mut css_gz) = (0, 0, 0);
    for entry in std::fs::read_dir(&dist).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let len = entry.metadata().unwrap().len();
        match () {
            () if name.ends_with(".js") => js += len,
            () if name.ends_with(".js.gz") => js_gz += len,
            () if name.ends_with(".css.gz") => css_gz += len,
            () => {}
        }
    }
    println!(
        "JavaScript: {:.1} KB gzipped ({:.1} KB raw; budget 150 KB gzipped); CSS {:.1} KB gzipped",
        js_gz as f64 / 1024.0,
        js as f64 / 1024.0,
        css_gz as f64 / 1024.0
    );
}

async fn mark(browser: &mut Browser, name: &str) -> f64 {
    let expression = format!("performance.getEntriesByName('{name}')[0]?.startTime");
    browser.wait_for(name, &expression).await.as_f64().unwrap()
}

#[tokio::main]
async fn main() {
    bundle_sizes();
    let Some(mut browser) = Browser::launch(1280, 900).await else {
        return;
    };
    let stack = Stack::start_with(Backend::Sqlite, |dir| {
        write_service(dir, "held", json!({"steps": [{"name": "first"}]}), HOLD);
        let many = "awk 'BEGIN { for (i = 1; i <= 10000; i++) print \"line \" i }'\n";
        write_service(dir, "many", json!({}), many);
    })
    .await;

    // First load: the login form, then (logged in) the services listed.
    let mut login = Vec::new();
    for _ in 0..LOADS {
        browser.goto(&stack.url("/ui/")).await;
        login.push(mark(&mut browser, "console:login-ready").await);
    }
    println!("first load to usable login page: {} (budget 1 s)", summary(login));
    browser.type_into("#username", ADMIN).await;
    browser.type_into("#password", ADMIN_PASSWORD).await;
    browser.press("Enter").await;
    browser
        .wait_for("logged in", "document.querySelector('#user')?.innerText")
        .await;
    let mut services = Vec::new();
    for _ in 0..LOADS {
        browser.goto(&stack.url("/ui/")).await;
        services.push(mark(&mut browser, "console:services-ready").await);
    }
    println!(
        "first load to services listed (with a session): {} (budget 1 s)",
        summary(services)
    );

    // Step latency: a held run; the bench reports its steps with the run's token.
    let admin = stack.admin_token().await;
    let started: Value = stack
        .http
        .post(stack.url("/v1/deployments"))
        .bearer_auth(&admin)
        .json(&json!({"service": "held"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id: i64 = started["id"].as_str().unwrap().parse().unwrap();
    let config_file = stack.services_dir().join("held").join(format!("config-{id}"));
    let token = wait_until(Duration::from_secs(30), async || {
        let text = std::fs::read_to_string(&config_file).map_err(|e| e.to_string())?;
        let config: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        config["access_token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| "no token".to_owned())
    })
    .await;
    browser.goto(&stack.url(&format!("/ui/deployments/{id}"))).await;
    browser
        .wait_for(
            "live",
            "document.querySelector('#deployment-live')?.dataset.state === 'live'",
        )
        .await;
    browser
        .eval(
            "window.__seen = {}; new MutationObserver(() => { for (const r of document.querySelectorAll('[data-step]')) \
             if (!(r.dataset.step in window.__seen)) window.__seen[r.dataset.step] = Date.now(); })\
             .observe(document.body, {subtree: true, childList: true}); true",
        )
        .await;
    let mut client = DeployServiceClient::new(channel(stack.deploy).await);
    let mut latencies = Vec::new();
    for i in 0..STEPS {
        let name = format!("step-{i:02}");
        let request = pb::ReportStepRequest {
            name: name.clone(),
            state: "success".into(),
            message: "reported by the bench".into(),
            ..Default::default()
        };
        let sent = now_ms();
        client.report_step(bearer(request, &token)).await.unwrap();
        let seen = browser.wait_for(&name, &format!("window.__seen['{name}']")).await;
        latencies.push(seen.as_f64().unwrap() - sent);
    }
    println!(
        "step reported to shown in the open deployment page: {} (budget 200 ms p95)",
        summary(latencies)
    );
    std::fs::write(stack.services_dir().join("held").join(format!("release-{id}")), "").unwrap();

    drop(browser);
    output(&stack, &admin).await;
}

/// 10,000 lines of output (a run that has ended) shown on the deployment page.
async fn output(stack: &Stack, admin: &str) {
    let started: Value = stack
        .http
        .post(stack.url("/v1/deployments"))
        .bearer_auth(admin)
        .json(&json!({"service": "many"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = started["id"].as_str().unwrap();
    let url = stack.url(&format!("/v1/deployments/{id}"));
    wait_until(Duration::from_secs(60), async || {
        let got: Value = stack
            .http
            .get(&url)
            .bearer_auth(admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        match got["status"].as_str() {
            Some("DEPLOYMENT_STATUS_SUCCEEDED") => Ok(()),
            other => Err(format!("the 10,000-line run: {other:?}")),
        }
    })
    .await;
    // A browser of its own: nothing else's streams open.
    let mut browser = Browser::launch(1280, 900).await.unwrap();
    browser.goto(&stack.url("/ui/")).await;
    browser.type_into("#username", ADMIN).await;
    browser.type_into("#password", ADMIN_PASSWORD).await;
    browser.press("Enter").await;
    browser
        .wait_for("logged in", "document.querySelector('#user')?.innerText")
        .await;
    let mut shown = Vec::new();
    let mut batches = Vec::new();
    for _ in 0..LOADS {
        browser.goto(&stack.url(&format!("/ui/deployments/{id}"))).await;
        let last = "document.querySelector('#output')?.dataset.ended === 'true' \
            && [...document.querySelectorAll('#output .ln .text')].some(t => t.innerText === 'line 10000')";
        browser.wait_for("line 10000 shown", last).await;
        let measures = "new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => \
            r(performance.getEntriesByName('output-batch').map(m => [m.startTime + m.duration, m.duration])))))";
        let measures = browser.eval(measures).await;
        let measures = measures.as_array().unwrap();
        let end = measures.iter().map(|m| m[0].as_f64().unwrap()).fold(0.0, f64::max);
        shown.push(end);
        batches.extend(measures.iter().map(|m| m[1].as_f64().unwrap()));
    }
    println!(
        "10,000 lines of output: navigation start to the last line shown: {}",
        summary(shown)
    );
    println!(
        "10,000 lines of output: each batch applied and rendered: {}",
        summary(batches)
    );
}

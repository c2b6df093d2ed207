//! Several console tabs of one browser at once. Over HTTP/1.1 each open grpc-web
//! stream holds a connection, and Chromium keeps at most 6 per host; a deployment's
//! page holds 4 streams, so a second tab on it used to stall (its page never loaded).
//! A hidden tab now closes its streams and resumes them when shown: three tabs on a
//! running deployment's page and one on the services page each follow every step
//! when looked at, nothing missed. On SQLite and PostgreSQL.
//!
//! The script reports each step running, then waits for the test to let it go on (a
//! file per step), so every tab is seen showing each state: "live" is checked, not
//! timed.

use std::path::Path;

use serde_json::{Value, json};
use tests::{
    Backend, Stack,
    browser::{Browser, screenshot_dir},
    deploy_rpc::{stepwise_script, write_service},
    on_every_backend,
    stack::{ADMIN, ADMIN_PASSWORD},
    support::call,
};

on_every_backend!(every_tab_follows_a_running_deployment);

const STEPS: [&str; 2] = ["build", "release"];

fn example(services: &Path) {
    let steps: Vec<Value> = STEPS.iter().map(|s| json!({"name": s})).collect();
    write_service(services, "example", json!({"steps": steps}), &stepwise_script(&STEPS));
}

fn step_state(step: &str, state: &str) -> String {
    format!("document.querySelector('[data-step=\"{step}\"]')?.dataset.state === '{state}'")
}

async fn every_tab_follows_a_running_deployment(backend: Backend) {
    let Some(mut browser) = Browser::launch(1280, 900).await else {
        return;
    };
    let stack = Stack::start_with(backend, example).await;
    let shots = screenshot_dir(&format!("{backend:?}").to_lowercase());
    let admin = stack.admin_token().await;
    let (status, _, started) = call(
        &stack,
        reqwest::Method::POST,
        "/v1/deployments",
        Some(&admin),
        Some(json!({"service": "example"})),
    )
    .await;
    assert_eq!(status, 200, "{started}");
    let id = started["id"].as_str().unwrap().to_owned();

    // Three tabs on the deployment's page (each logs in: the session is per tab), the
    // fourth on the services page.
    let mut tabs = Vec::new();
    for _ in 1..4 {
        tabs.push(browser.new_tab(1280, 900).await);
    }
    // The tabs in order: the first three on the deployment, the last on services.
    let current = browser.switch_to(tabs[0].clone()).await;

    tabs.push(current);
    for (n, tab) in tabs.iter().enumerate() {
        browser.switch_to(tab.clone()).await;
        browser.log_in(&stack.url("/"), ADMIN, ADMIN_PASSWORD).await;
        if n < 3 {
            browser.goto(&stack.url(&format!("/ui/deployments/{id}"))).await;
            browser
                .wait_for(&format!("tab {n}: build running"), &step_state("build", "running"))
                .await;
        } else {
            let last =
                format!("document.querySelector('tr[data-service=\"example\"] .last')?.innerText.includes('#{id}')");
            browser.wait_for("the services tab: the deployment", &last).await;
        }
    }
    let services_tab = tabs.pop().unwrap();
    let deployment_tabs = tabs;

    // Each step, let go: every deployment tab shows it succeed and the next one run.
    for (i, step) in STEPS.iter().enumerate() {
        std::fs::write(stack.services_dir().join("example").join(format!("go-{step}")), "").unwrap();
        for (n, tab) in deployment_tabs.iter().enumerate() {
            browser.switch_to(tab.clone()).await;
            browser
                .wait_for(&format!("tab {n}: {step} success"), &step_state(step, "success"))
                .await;
            if let Some(next) = STEPS.get(i + 1) {
                browser
                    .wait_for(&format!("tab {n}: {next} running"), &step_state(next, "running"))
                    .await;
            }
        }
    }
    for (n, tab) in deployment_tabs.iter().enumerate() {
        browser.switch_to(tab.clone()).await;
        let done = "document.querySelector('#deployment')?.dataset.status === 'succeeded'";
        browser.wait_for(&format!("tab {n}: succeeded"), done).await;
        let live = "document.querySelector('#deployment-live')?.dataset.state === 'live'";
        browser.wait_for(&format!("tab {n}: live"), live).await;
    }
    browser.switch_to(services_tab).await;
    let succeeded = "document.querySelector('tr[data-service=\"example\"] .last')?.innerText.includes('succeeded')";
    browser.wait_for("the services tab: succeeded", succeeded).await;
    browser.screenshot(&shots.join("services-beside-three-tabs.png")).await;
}

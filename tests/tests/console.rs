//! The console in a real browser (headless Chromium over CDP, `tests::browser`),
//! against the real stack, clicking and typing as a person would: log in, see the
//! example service, start a deployment and watch each step reach success live (the
//! gateway restarted in the middle: the page resumes with no step missed or doubled),
//! see it in the list; a failing deployment shows its failed step and the reason (the
//! way there with the keyboard alone), and Sync shows a broken folder's problem; Cancel
//! on a running deployment; a session whose token is revoked elsewhere goes back to
//! login saying why, and one about to expire shows the banner, then goes back too.
//! Each screen is saved as a screenshot (paths printed). On SQLite and PostgreSQL.
//!
//! The example's deploy script reports each step running, then waits for the test to
//! let it go on (a file per step), so the test sees each state in the page before the
//! next exists: "live" is checked, not timed.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use tests::{
    Backend, Stack,
    browser::{Browser, screenshot_dir},
    deploy_rpc::{stepwise_script, write_service},
    on_every_backend,
    stack::{ADMIN, ADMIN_PASSWORD},
    support::jti,
};

on_every_backend!(
    deploys_live_and_resumes,
    failing_deployment_shows_step_and_reason,
    cancel_from_the_deployment_page,
    revoked_or_expired_session_logs_out
);

const STEPS: [&str; 3] = ["build", "test", "release"];

fn example(services: &Path) {
    let steps: Vec<Value> = STEPS.iter().map(|s| json!({"name": s})).collect();
    let config = json!({"description": "The example service", "steps": steps});
    write_service(services, "example", config, &stepwise_script(&STEPS));
    let failing = r#"echo '{"name": "check", "state": "failure", "message": "3 tests failed"}'
exit 3
"#;
    let config = json!({"description": "Fails its check", "steps": [{"name": "check"}]});
    write_service(services, "broken", config, failing);
}

async fn log_in(browser: &mut Browser, stack: &Stack) {
    browser.goto(&stack.url("/")).await;
    browser
        .wait_for("the login page", "document.querySelector('#username')")
        .await;
    assert_eq!(
        browser.eval("location.pathname").await,
        "/ui/",
        "/ redirects to the console"
    );
    browser.type_into("#username", ADMIN).await;
    browser.type_into("#password", ADMIN_PASSWORD).await;
    browser.press("Enter").await;
    browser
        .wait_for("logged in", "document.querySelector('#user')?.innerText")
        .await;
}

/// The page's deployment id, once it is on a deployment page.
async fn deployment_page(browser: &mut Browser) -> i64 {
    let path = browser
        .wait_for(
            "a deployment page",
            "/^\\/ui\\/deployments\\/\\d+$/.test(location.pathname) && location.pathname",
        )
        .await;
    path.as_str().unwrap().rsplit('/').next().unwrap().parse().unwrap()
}

/// Presses Tab until the element matching `selector` has the focus.
async fn tab_to(browser: &mut Browser, selector: &str) {
    let focused = format!("document.activeElement === document.querySelector('{selector}')");
    for _ in 0..40 {
        if browser.eval(&focused).await == json!(true) {
            return;
        }
        browser.press("Tab").await;
    }
    panic!("{selector} never got the focus with Tab");
}

fn step_state(step: &str) -> String {
    format!("document.querySelector('[data-step=\"{step}\"]')?.dataset.state")
}

async fn deploys_live_and_resumes(backend: Backend) {
    let Some(mut browser) = Browser::launch(1280, 900).await else {
        return;
    };
    let mut stack = Stack::start_with(backend, example).await;
    let shots = screenshot_dir(&format!("{backend:?}").to_lowercase());
    log_in(&mut browser, &stack).await;

    // Services: the example with its description; its last deployment: never.
    let row = "tr[data-service=\"example\"]";
    browser
        .wait_for("the example service", &format!("document.querySelector('{row}')"))
        .await;
    assert!(browser.text(row).await.contains("The example service"));
    browser.screenshot(&shots.join("services.png")).await;

    // Its page, and Deploy with one env variable.
    browser.click(&format!("{row} a")).await;
    browser
        .wait_for("the service page", "document.querySelector('#deploy')")
        .await;
    browser.click("#add-env").await;
    browser.type_into("[aria-label=Key]", "GREETING").await;
    browser.type_into("[aria-label=Value]", "hello").await;
    browser.screenshot(&shots.join("service.png")).await;
    browser.click("#deploy").await;
    let id = deployment_page(&mut browser).await;

    // Each step shows running, then success once the script goes on: live. After the
    // first step, the gateway restarts under the open page.
    for (i, step) in STEPS.iter().enumerate() {
        let running = format!("{} === 'running'", step_state(step));
        browser.wait_for(&format!("{step} running"), &running).await;
        if i == 1 {
            browser.screenshot(&shots.join("deployment-live.png")).await;
        }
        std::fs::write(stack.services_dir().join("example").join(format!("go-{step}")), "").unwrap();
        let success = format!("{} === 'success'", step_state(step));
        browser.wait_for(&format!("{step} success"), &success).await;
        if i == 0 {
            // Stopped as an upgrade stops it (its streams end), then started again.
            assert!(
                stack.proc("gateway").stop(Duration::from_secs(10)),
                "the gateway stops on SIGTERM"
            );
            stack.restart("gateway").await;
        }
    }
    let status = "document.querySelector('#deployment')?.dataset.status === 'succeeded'";
    browser.wait_for("the deployment succeeded", status).await;
    // Every step once, in order, with its last message.
    let rows = browser
        .eval("[...document.querySelectorAll('[data-step]')].map(r => [r.dataset.step, r.dataset.state, r.querySelector('.message').innerText])")
        .await;
    let expected: Vec<Value> = STEPS
        .iter()
        .map(|s| json!([s, "success", format!("{s} done")]))
        .collect();
    assert_eq!(rows, json!(expected), "{}", stack.logs());
    // The page resumed after the restart (the stream reconnected, live again).
    browser
        .wait_for(
            "live again",
            "document.querySelector('#deployment-live')?.dataset.state === 'live'",
        )
        .await;
    browser.screenshot(&shots.join("deployment.png")).await;

    // The env reached the deployment.
    let admin = stack.admin_token().await;
    let got: Value = stack
        .http
        .get(stack.url(&format!("/v1/deployments/{id}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["context"]["env"]["GREETING"], "hello", "{got:#}");

    // In the list, newest first, succeeded; and on the services page as the last one.
    browser.click("header a[href=\"/ui/deployments\"]").await;
    let listed = format!("document.querySelector('tr[data-deployment=\"{id}\"]')?.dataset.status === 'succeeded'");
    browser.wait_for("the deployment in the list", &listed).await;
    browser.screenshot(&shots.join("deployments.png")).await;
    browser.click("header nav a[href=\"/ui/\"]").await;
    browser
        .wait_for(
            "the last deployment",
            &format!("document.querySelector('{row} .last')?.innerText.includes('#{id}')"),
        )
        .await;

    // A phone's width: nothing wider than the screen.
    browser.resize(390, 844).await;
    let fits = "document.documentElement.scrollWidth <= 390 && document.querySelector('#services')";
    browser.wait_for("the services fit 390 px", fits).await;
    browser.screenshot(&shots.join("services-390.png")).await;
    browser.goto(&stack.url(&format!("/ui/deployments/{id}"))).await;
    let fits = "document.documentElement.scrollWidth <= 390 && document.querySelector('[data-step=\"release\"]')";
    browser.wait_for("the deployment fits 390 px", fits).await;
    browser.screenshot(&shots.join("deployment-390.png")).await;
}

async fn failing_deployment_shows_step_and_reason(backend: Backend) {
    let Some(mut browser) = Browser::launch(1280, 900).await else {
        return;
    };
    let stack = Stack::start_with(backend, example).await;
    let shots = screenshot_dir(&format!("{backend:?}").to_lowercase());
    log_in(&mut browser, &stack).await;
    // With the keyboard alone: Tab to the service's link, Enter, Tab to Deploy, Enter.
    browser
        .wait_for(
            "the services",
            "document.querySelector('tr[data-service=\"broken\"] a')",
        )
        .await;
    tab_to(&mut browser, "tr[data-service=\"broken\"] a").await;
    browser.press("Enter").await;
    browser
        .wait_for("the service page", "document.querySelector('#deploy')")
        .await;
    tab_to(&mut browser, "#deploy").await;
    browser.press("Enter").await;
    let id = deployment_page(&mut browser).await;
    browser
        .wait_for("check failed", &format!("{} === 'failure'", step_state("check")))
        .await;
    let reason = browser
        .wait_for("the reason", "document.querySelector('#failure-reason')?.innerText")
        .await;
    let admin = stack.admin_token().await;
    let got: Value = stack
        .http
        .get(stack.url(&format!("/v1/deployments/{id}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let expected = got["failureReason"].as_str().unwrap_or_default();
    assert!(!expected.is_empty(), "{got:#}");
    assert!(reason.as_str().unwrap().contains(expected), "{reason} vs {expected}");
    assert!(browser.text("[data-step=\"check\"]").await.contains("3 tests failed"));
    browser
        .wait_for(
            "failed",
            "document.querySelector('#deployment')?.dataset.status === 'failed'",
        )
        .await;
    assert_eq!(
        browser.eval("!!document.querySelector('#cancel')").await,
        false,
        "no Cancel once failed"
    );
    browser.screenshot(&shots.join("deployment-failed.png")).await;

    // A folder that cannot be a service: Sync says which and why.
    let half = stack.services_dir().join("half");
    std::fs::create_dir_all(&half).unwrap();
    std::fs::write(half.join("config.json"), "{not json").unwrap();
    browser.click("header nav a[href=\"/ui/\"]").await;
    browser.click("#sync").await;
    let problems = "document.querySelector('#sync-result .problems')?.innerText";
    let said = browser.wait_for("the sync's problems", problems).await;
    assert!(said.as_str().unwrap().starts_with("half: "), "{said}");
    browser.screenshot(&shots.join("sync-problems.png")).await;
}

async fn cancel_from_the_deployment_page(backend: Backend) {
    let Some(mut browser) = Browser::launch(1280, 900).await else {
        return;
    };
    let stack = Stack::start_with(backend, example).await;
    log_in(&mut browser, &stack).await;
    browser.click("tr[data-service=\"example\"] a").await;
    browser.click("#deploy").await;
    deployment_page(&mut browser).await;
    browser
        .wait_for("build running", &format!("{} === 'running'", step_state("build")))
        .await;
    // The confirmation is the browser's own dialog: accepted here.
    browser.eval("window.confirm = () => true").await;
    browser.click("#cancel").await;
    let cancelled = "document.querySelector('#deployment')?.dataset.status === 'cancelled'";
    browser.wait_for("cancelled", cancelled).await;
    browser
        .wait_for("no Cancel any more", "!document.querySelector('#cancel')")
        .await;
}

async fn revoked_or_expired_session_logs_out(backend: Backend) {
    let Some(mut browser) = Browser::launch(1280, 900).await else {
        return;
    };
    let stack = Stack::start_with(backend, example).await;
    let shots = screenshot_dir(&format!("{backend:?}").to_lowercase());
    log_in(&mut browser, &stack).await;
    browser
        .wait_for(
            "services live",
            "document.querySelector('#services-live')?.dataset.state === 'live'",
        )
        .await;
    let saved = browser.eval("sessionStorage.getItem('slipway.session')").await;
    let saved: Value = serde_json::from_str(saved.as_str().unwrap()).unwrap();
    let token = saved["token"].as_str().unwrap();

    // Revoked from elsewhere (the API, with another token of the admin).
    let admin = stack.admin_token().await;
    let revoked = Instant::now();
    let response = stack
        .http
        .delete(stack.url(&format!("/v1/tokens/{}", jti(token))))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let reason = browser
        .wait_for("back at login", "document.querySelector('#login-reason')?.innerText")
        .await;
    println!("back at login {:?} after the revocation", revoked.elapsed());
    assert!(reason.as_str().unwrap().contains("session ended"), "{reason}");
    assert!(
        browser
            .eval("sessionStorage.getItem('slipway.session')")
            .await
            .is_null()
    );
    browser.screenshot(&shots.join("login-revoked.png")).await;

    // Expiry, as the page sees it: a session three seconds from its end shows the
    // banner, then goes back to login saying so.
    log_in(&mut browser, &stack).await;
    let shorten = "const s = JSON.parse(sessionStorage.getItem('slipway.session')); \
                   s.expiresAt = Date.now() + 3000; \
                   sessionStorage.setItem('slipway.session', JSON.stringify(s)); location.reload(); true";
    browser.eval(shorten).await;
    browser
        .wait_for("the banner", "document.querySelector('#expiry-banner')")
        .await;
    let reason = browser
        .wait_for("expired", "document.querySelector('#login-reason')?.innerText")
        .await;
    assert!(reason.as_str().unwrap().contains("expired"), "{reason}");
}

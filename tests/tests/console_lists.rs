//! The console's lists in a real browser (headless Chromium over CDP): the Deployments
//! screen filters on the server by status, user and origin, so a filtered list shows
//! every matching deployment, also those far past the first page of the whole list,
//! and stays live (a new one that matches appears, one that stops matching goes); the
//! Users screen lists every user with disable, enable and delete on each row. On
//! SQLite and PostgreSQL.

use std::path::Path;

use reqwest::Method;
use serde_json::{Value, json};
use tests::{
    Backend, Stack,
    browser::{Browser, screenshot_dir},
    deploy_rpc::write_service,
    on_every_backend,
    stack::{ADMIN, ADMIN_PASSWORD},
    support::{call, create_user, failing_script, passing_script, send, steps_config, wait_finished},
};

on_every_backend!(
    deployments_filtered_on_the_server_and_live,
    users_listed_with_row_actions
);

/// Runs of the deployments page: one more than fits a page of the console's list (25).
const PASSING: usize = 26;

fn services(root: &Path) {
    write_service(root, "ok", steps_config(), &passing_script());
    write_service(root, "broken", steps_config(), &failing_script());
    let gated = r#"here=$(cd "$(dirname "$0")" && pwd)
echo '{"name": "build", "state": "running", "message": "waiting"}'
while [ ! -e "$here/go" ]; do sleep 0.05; done
echo '{"name": "build", "state": "success", "message": "done"}'
"#;
    write_service(root, "gated", json!({"steps": [{"name": "build"}]}), gated);
}

async fn login(stack: &Stack, name: &str, password: &str) -> String {
    let (status, body) = stack.login(name, password).await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

/// A service token of `service` with `origin`, minted by the holder of `user_token`.
async fn service_token(stack: &Stack, user_token: &str, service: &str, origin: &str) -> String {
    let body = json!({"service": service, "origin": origin, "expirationInDays": 1});
    let (status, _, minted) = call(stack, Method::POST, "/v1/tokens/service", Some(user_token), Some(body)).await;
    assert_eq!(status, 200, "{minted}");
    minted["token"].as_str().unwrap().to_owned()
}

/// Starts `count` deployments with `token` and waits for them to end; their ids.
async fn run(stack: &Stack, token: &str, count: usize) -> Vec<i64> {
    let mut ids = Vec::new();
    for _ in 0..count {
        let (status, _, started) = call(stack, Method::POST, "/v1/deployments", Some(token), None).await;
        assert_eq!(status, 200, "{started}");
        ids.push(started["id"].as_str().unwrap().parse().unwrap());
    }
    for id in &ids {
        wait_finished(stack, token, *id).await;
    }
    ids
}

/// Sets a filter of the Deployments screen: a select by its value, a text field by
/// typing over it (and Tab, which commits it), "" clears it.
async fn set_filter(browser: &mut Browser, id: &str, value: &str) {
    let is_select = browser
        .eval(&format!("document.querySelector('#{id}').tagName === 'SELECT'"))
        .await;
    if is_select == json!(true) || value.is_empty() {
        browser
            .eval(&format!(
                "(() => {{ const e = document.querySelector('#{id}'); e.value = {value:?}; \
                 e.dispatchEvent(new Event('change', {{bubbles: true}})); }})()"
            ))
            .await;
    } else {
        // Typed over what the field holds.
        browser.click(&format!("#{id}")).await;
        browser.eval(&format!("document.querySelector('#{id}').select()")).await;
        browser.call("Input.insertText", json!({"text": value})).await;
        browser.press("Tab").await;
    }
}

/// Waits until the list shows exactly `ids` (newest first), loading older pages with
/// its button once every row shown is one of them; returns the rows' statuses.
async fn shows_exactly(browser: &mut Browser, what: &str, ids: &[i64]) -> Vec<String> {
    let mut expected: Vec<String> = ids.iter().map(i64::to_string).collect();
    expected.sort_unstable_by_key(|id| std::cmp::Reverse(id.parse::<i64>().unwrap()));
    let rows = "[...document.querySelectorAll('#deployments tr[data-deployment]')].map(r => [r.dataset.deployment, r.dataset.status])";
    let mut shown = Vec::new();
    for _ in 0..150 {
        let got: Vec<(String, String)> = serde_json::from_value(browser.eval(rows).await).unwrap();
        shown = got.iter().map(|(id, _)| id.clone()).collect();
        if shown == expected {
            return got.into_iter().map(|(_, status)| status).collect();
        }
        let more = browser.eval("!!document.querySelector('button.more')").await == json!(true);
        if more && !shown.is_empty() && shown.iter().all(|id| expected.contains(id)) {
            browser.click("button.more").await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    panic!("{what}: shows {shown:?}, not {expected:?}");
}

async fn deployments_filtered_on_the_server_and_live(backend: Backend) {
    let Some(mut browser) = Browser::launch(1280, 900).await else {
        return;
    };
    let stack = Stack::start_with(backend, services).await;
    let shots = screenshot_dir(&format!("{backend:?}").to_lowercase());
    let admin = stack.admin_token().await;
    create_user(&stack, &admin, "bob", "bob-password").await;
    let bob = login(&stack, "bob", "bob-password").await;

    // The failed ones first: the oldest, far past the first page of the whole list.
    let failed = run(&stack, &service_token(&stack, &admin, "broken", "ci").await, 3).await;
    let passed = run(&stack, &service_token(&stack, &admin, "ok", "ci").await, PASSING).await;
    let by_bob = run(&stack, &service_token(&stack, &bob, "ok", "github").await, 2).await;

    browser.log_in(&stack.url("/"), ADMIN, ADMIN_PASSWORD).await;
    browser.click("header a[href=\"/ui/deployments\"]").await;
    let first_page = "document.querySelectorAll('#deployments tr[data-deployment]').length === 25";
    browser.wait_for("the first page of all", first_page).await;
    let statuses = browser
        .eval("[...document.querySelectorAll('#deployments tr[data-deployment]')].map(r => r.dataset.status)")
        .await;
    assert!(
        !statuses.to_string().contains("failed"),
        "the failed ones are older: {statuses}"
    );

    set_filter(&mut browser, "filter-status", "failed").await;
    let shown = shows_exactly(&mut browser, "the failed ones", &failed).await;
    assert_eq!(shown, ["failed"; 3]);
    assert_eq!(
        browser.eval("location.search").await,
        "?status=failed",
        "the filter is in the address"
    );
    browser.screenshot(&shots.join("deployments-filtered.png")).await;

    set_filter(&mut browser, "filter-status", "").await;
    set_filter(&mut browser, "filter-user", "bob").await;
    shows_exactly(&mut browser, "bob's", &by_bob).await;
    set_filter(&mut browser, "filter-user", "").await;
    set_filter(&mut browser, "filter-origin", "github").await;
    shows_exactly(&mut browser, "from github", &by_bob).await;
    // More than a page match: the older page comes from the server, filtered too.
    set_filter(&mut browser, "filter-origin", "ci").await;
    set_filter(&mut browser, "filter-status", "succeeded").await;
    let shown = shows_exactly(&mut browser, "succeeded from ci", &passed).await;
    assert_eq!(shown.len(), PASSING);

    // Live: a running one appears under "running", and goes once it succeeded.
    set_filter(&mut browser, "filter-origin", "").await;
    set_filter(&mut browser, "filter-status", "running").await;
    browser
        .wait_for("nothing running", "document.querySelector('#deployments-empty')")
        .await;
    let gated = service_token(&stack, &admin, "gated", "ci").await;
    let (status, _, started) = call(&stack, Method::POST, "/v1/deployments", Some(&gated), None).await;
    assert_eq!(status, 200, "{started}");
    let id: i64 = started["id"].as_str().unwrap().parse().unwrap();
    let row = format!("document.querySelector('tr[data-deployment=\"{id}\"]')?.dataset.status === 'running'");
    browser.wait_for("the new one, running", &row).await;
    std::fs::write(stack.services_dir().join("gated").join("go"), "").unwrap();
    wait_finished(&stack, &gated, id).await;
    browser
        .wait_for("gone once succeeded", "document.querySelector('#deployments-empty')")
        .await;
    set_filter(&mut browser, "filter-status", "succeeded").await;
    set_filter(&mut browser, "filter-user", "admin").await;
    let mut admins = passed.clone();
    admins.push(id);
    shows_exactly(&mut browser, "the admin's succeeded ones", &admins).await;
}

async fn users_listed_with_row_actions(backend: Backend) {
    let Some(mut browser) = Browser::launch(1280, 900).await else {
        return;
    };
    let stack = Stack::start(backend).await;
    let shots = screenshot_dir(&format!("{backend:?}").to_lowercase());
    let admin = stack.admin_token().await;
    for name in ["bob", "carol"] {
        create_user(&stack, &admin, name, "a-long-password").await;
    }
    browser.log_in(&stack.url("/"), ADMIN, ADMIN_PASSWORD).await;
    browser.click("header a[href=\"/ui/users\"]").await;
    let names = "[...document.querySelectorAll('#users tr[data-user]')].map(r => r.dataset.user).join(' ')";
    browser
        .wait_for("every user", &format!("{names} === 'admin bob carol'"))
        .await;
    assert_eq!(
        browser
            .eval("document.querySelectorAll('tr[data-user=\"admin\"] button').length")
            .await,
        0,
        "nothing to do to oneself"
    );

    // Created in the form: in the list.
    browser.type_into("#new-user", "dave").await;
    browser.type_into("#new-password", "a-long-password").await;
    browser.press("Enter").await;
    browser
        .wait_for("dave listed", &format!("{names} === 'admin bob carol dave'"))
        .await;

    // Disable bob on his row: he may no longer log in; enable: he may again.
    browser.click("tr[data-user=\"bob\"] [data-action=disable]").await;
    browser
        .wait_for(
            "bob disabled",
            "document.querySelector('tr[data-user=\"bob\"]')?.dataset.disabled === 'true'",
        )
        .await;
    assert!(browser.text("tr[data-user=\"bob\"]").await.contains("by admin"));
    assert_eq!(stack.login("bob", "a-long-password").await.0, 401);
    browser.screenshot(&shots.join("users.png")).await;
    browser.click("tr[data-user=\"bob\"] [data-action=enable]").await;
    browser
        .wait_for(
            "bob enabled",
            "document.querySelector('tr[data-user=\"bob\"]')?.dataset.disabled === 'false'",
        )
        .await;
    assert_eq!(stack.login("bob", "a-long-password").await.0, 200);

    // Delete carol (the browser's confirmation, accepted here): gone from the list
    // and from Slipway.
    browser.eval("window.confirm = () => true").await;
    browser.click("tr[data-user=\"carol\"] [data-action=delete]").await;
    browser
        .wait_for("carol gone", &format!("{names} === 'admin bob dave'"))
        .await;
    let (status, listed) = send(&stack, Method::GET, "/v1/users", Some(&admin), None).await;
    assert_eq!(status, 200);
    let listed: Vec<&str> = listed["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u: &Value| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["admin", "bob", "dave"]);
}

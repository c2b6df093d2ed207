//! The console's token screens in a real browser (see console.rs): create a service
//! token on a service's page, copy it, use it from the test to start a deployment,
//! revoke it in the console and see the next start refused; revoke a token with
//! derived tokens: the console says how many first, and all are gone. On SQLite and
//! PostgreSQL.

use std::time::Duration;

use proto::auth::v1::AttenuateTokenRequest;
use serde_json::{Value, json};
use tests::{
    Backend, Stack,
    browser::{Browser, screenshot_dir},
    deploy_rpc::write_service,
    grpc::attenuated,
    on_every_backend,
    stack::{ADMIN, ADMIN_PASSWORD},
    support::jti,
    wait_until,
};

on_every_backend!(
    service_token_created_copied_used_and_revoked,
    revoking_says_how_many_derived_tokens_go
);

fn broken(services: &std::path::Path) {
    let failing = "echo '{\"name\": \"check\", \"state\": \"failure\", \"message\": \"no\"}'\nexit 1\n";
    write_service(services, "broken", json!({"steps": [{"name": "check"}]}), failing);
}

/// `POST /deployments/` (fastDeploy's start, with a service token): its status.
async fn start(stack: &Stack, token: &str) -> u16 {
    let response = stack
        .http
        .post(stack.url("/deployments/"))
        .bearer_auth(token)
        .json(&json!({"env": {}}))
        .send()
        .await
        .unwrap();
    response.status().as_u16()
}

async fn service_token_created_copied_used_and_revoked(backend: Backend) {
    let Some(mut browser) = Browser::launch(1280, 900).await else {
        return;
    };
    let stack = Stack::start_with(backend, broken).await;
    let shots = screenshot_dir(&format!("{backend:?}").to_lowercase());
    let origin = stack.url("");
    let origin = origin.trim_end_matches('/');
    browser
        .call(
            "Browser.grantPermissions",
            json!({"origin": origin, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]}),
        )
        .await;
    browser.log_in(&stack.url("/ui/"), ADMIN, ADMIN_PASSWORD).await;
    browser.click("tr[data-service=\"broken\"] a").await;
    browser.type_into("#token-origin", "ci").await;
    browser.type_into("#token-name", "from-console").await;
    browser.click("#create-token").await;
    let shown = browser
        .wait_for("the new token", "document.querySelector('#minted-token')?.innerText")
        .await;
    let shown = shown.as_str().unwrap().trim().to_owned();
    browser.click("#copy-token").await;
    browser
        .wait_for(
            "copied",
            "document.querySelector('.minted')?.innerText.includes('Copied.')",
        )
        .await;
    let copied = browser.eval("navigator.clipboard.readText()").await;
    assert_eq!(copied.as_str().unwrap(), shown, "the clipboard holds the token shown");
    browser.screenshot(&shots.join("service-token.png")).await;

    // The test uses it as CI would.
    assert_eq!(start(&stack, &shown).await, 200, "{}", stack.logs());

    // Revoked in the console: no derived token, then gone; the next start refused.
    let row = "tr[data-name=\"from-console\"]";
    browser.click(&format!("{row} .revoke")).await;
    let derived = browser
        .wait_for(
            "the count",
            &format!("document.querySelector('{row} .derived')?.dataset.derived"),
        )
        .await;
    assert_eq!(derived, json!("0"));
    browser.click(&format!("{row} .confirm-revoke")).await;
    let said = browser
        .wait_for(
            "revoked",
            "document.querySelector('#service-tokens-message')?.innerText",
        )
        .await;
    assert!(
        said.as_str().unwrap().contains("Revoked from-console and 0 derived"),
        "{said}"
    );
    wait_until(Duration::from_secs(5), async || match start(&stack, &shown).await {
        401 => Ok(()),
        other => Err(format!("start with the revoked token: {other}")),
    })
    .await;
}

async fn revoking_says_how_many_derived_tokens_go(backend: Backend) {
    let Some(mut browser) = Browser::launch(1280, 900).await else {
        return;
    };
    let stack = Stack::start_with(backend, broken).await;
    let shots = screenshot_dir(&format!("{backend:?}").to_lowercase());
    let admin = stack.admin_token().await;
    let minted: Value = stack
        .http
        .post(stack.url("/v1/tokens/service"))
        .bearer_auth(&admin)
        .json(&json!({"service": "broken", "origin": "ci", "expirationInDays": 1, "name": "parent"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let parent = minted["token"].as_str().unwrap().to_owned();
    let narrower = |name: &str| AttenuateTokenRequest {
        permissions: vec!["deployments:read".into()],
        name: name.into(),
        ..Default::default()
    };
    let child = attenuated(stack.auth, &parent, narrower("child")).await;
    let grandchild = attenuated(stack.auth, &child, narrower("grandchild")).await;

    browser.log_in(&stack.url("/ui/"), ADMIN, ADMIN_PASSWORD).await;
    browser.click("header a[href=\"/ui/tokens\"]").await;
    let row = "tr[data-name=\"parent\"]";
    browser.click(&format!("{row} .revoke")).await;
    let derived = browser
        .wait_for(
            "the count",
            &format!("document.querySelector('{row} .derived')?.dataset.derived"),
        )
        .await;
    assert_eq!(derived, json!("2"), "child and grandchild");
    assert!(
        browser
            .text(&format!("{row} .derived"))
            .await
            .contains("2 derived tokens go with it")
    );
    browser.screenshot(&shots.join("tokens-revoke.png")).await;
    browser.click(&format!("{row} .confirm-revoke")).await;
    let said = browser
        .wait_for("revoked", "document.querySelector('#tokens-message')?.innerText")
        .await;
    assert!(
        said.as_str().unwrap().contains("Revoked parent and 2 derived"),
        "{said}"
    );

    // All three are revoked in the registry.
    let listed: Value = stack
        .http
        .get(stack.url("/v1/tokens?include_revoked=true&page_size=100"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for token in [&parent, &child, &grandchild] {
        let id = jti(token);
        let info = listed["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id.as_str());
        let info = info.unwrap_or_else(|| panic!("{id} not listed: {listed:#}"));
        assert!(info.get("revokedAt").is_some(), "{info:#}");
    }
}

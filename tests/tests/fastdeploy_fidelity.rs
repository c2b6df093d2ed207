//! Where a fastDeploy client or UI would notice a difference (Slipway issue 11, and
//! the redaction of issue 10.10), written from the fastDeploy contract: services whose
//! deploy script is missing (4.2, 4.3, 4.7, 4.9), a failed step followed by a bad exit
//! (4.9, 4.10), a retried step (4.10 step 6), finish (2.13), deployments of removed
//! services (2.9, 4.3), and a deployment token printed inside `deployed_service`. On
//! SQLite and PostgreSQL. The live feed's side is in `websocket.rs`.

use tests::support;

use std::{path::Path, time::Duration};

use common::token::TokenType;
use reqwest::Method;
use serde_json::json;
use support::*;
use tests::{Backend, Stack, on_every_backend};

on_every_backend!(
    services_without_a_usable_script_are_listed_and_fail_when_deployed,
    a_failed_step_then_a_bad_exit_shows_only_the_failed_step,
    a_retried_step_shows_every_attempt,
    finish_ends_the_deployment_at_once,
    deployments_of_removed_services_are_not_listed,
    a_token_inside_deployed_service_is_redacted
);

fn step(name: &str, state: &str, message: &str) -> (String, String, String) {
    (name.into(), state.into(), message.into())
}

/// Polls until `ready` holds, at most 30 s.
async fn wait_until(stack: &Stack, what: &str, mut ready: impl AsyncFnMut() -> bool) {
    tests::wait_until(Duration::from_secs(30), async || match ready().await {
        true => Ok(()),
        false => Err(format!("{what}\n{}", stack.logs())),
    })
    .await
}

/// Names of the services `GET /services/` lists.
async fn service_names(stack: &Stack, admin: &str) -> Vec<String> {
    let (status, services) = get(stack, "/services/", admin).await;
    assert_eq!(status, 200, "{services}");
    let mut names: Vec<String> = services
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

/// Contract 4.2, 4.3, 4.7 and the failed-step path of 4.9: a folder whose deploy
/// script is missing or not executable is a service (listed, tokens minted); sync
/// warns about it; deploying it fails with a `failed step` saying why.
async fn services_without_a_usable_script_are_listed_and_fail_when_deployed(backend: Backend) {
    let stack = Stack::start_with(backend, |root| {
        write_service(root, "alpha", json!({}), &reporting_script(&[], 0));
        std::fs::create_dir_all(root.join("noscript")).unwrap();
        std::fs::write(root.join("noscript/config.json"), r#"{"steps": [{"name": "build"}]}"#).unwrap();
        write_service(root, "noexec", json!({}), &reporting_script(&[], 0));
        let script = root.join("noexec/deploy.sh");
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    })
    .await;
    let admin = stack.admin_token().await;
    assert_eq!(service_names(&stack, &admin).await, ["alpha", "noexec", "noscript"]);

    // A new folder without a script appears at the next sync; /v1 warns about both.
    let later = stack.services_dir().join("later");
    std::fs::create_dir_all(&later).unwrap();
    std::fs::write(later.join("config.json"), "{}").unwrap();
    let (status, body) = send(&stack, Method::POST, "/services/sync", Some(&admin), None).await;
    assert_eq!((status, body), (200, json!({"detail": "Services synced"})));
    assert_eq!(
        service_names(&stack, &admin).await,
        ["alpha", "later", "noexec", "noscript"]
    );
    let (status, report) = send(&stack, Method::POST, "/v1/services/sync", Some(&admin), None).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["problems"].as_array().map_or(0, Vec::len), 0, "{report}");
    assert_eq!(
        report["warnings"],
        json!([
            {"service": "later", "reason": "deploy script later/deploy.sh does not exist"},
            {"service": "noexec", "reason": "deploy script noexec/deploy.sh is not executable"},
            {"service": "noscript", "reason": "deploy script noscript/deploy.sh does not exist"},
        ])
    );

    for (service, why) in [
        ("noscript", "the deploy script noscript/deploy.sh does not exist"),
        ("noexec", "the deploy script noexec/deploy.sh is not executable"),
    ] {
        let token = service_token(&stack, &admin, service).await;
        let id = start(&stack, &token, None).await["id"].as_i64().unwrap();
        let done = wait_finished(&stack, &token, id).await;
        assert_eq!(
            steps_of(&done["steps"]),
            [step("failed step", "failure", why)],
            "{service}: {done}"
        );
    }
}

/// Contract 4.9, 4.10: a step that failed already says why; a non-zero exit after it
/// adds no `failed step`.
async fn a_failed_step_then_a_bad_exit_shows_only_the_failed_step(backend: Backend) {
    let script = reporting_script(
        &[
            json!({"name": "build", "state": "success", "message": "built"}),
            json!({"name": "migrate", "state": "failure", "message": "boom"}),
        ],
        1,
    );
    let stack = Stack::start_with(backend, |root| {
        write_service(
            root,
            "alpha",
            json!({"steps": [{"name": "build"}, {"name": "migrate"}]}),
            &script,
        );
    })
    .await;
    let admin = stack.admin_token().await;
    let token = service_token(&stack, &admin, "alpha").await;
    let id = start(&stack, &token, None).await["id"].as_i64().unwrap();
    let done = wait_finished(&stack, &token, id).await;
    assert_eq!(
        steps_of(&done["steps"]),
        [step("build", "success", "built"), step("migrate", "failure", "boom")],
        "{done}"
    );
}

/// Contract 4.10 step 6: a name whose step already finished is a new step, so a
/// retried `migrate` shows both attempts, each with its own id.
async fn a_retried_step_shows_every_attempt(backend: Backend) {
    let script = reporting_script(
        &[
            json!({"name": "migrate", "state": "failure", "message": "locked"}),
            json!({"name": "migrate", "state": "success", "message": "migrated"}),
        ],
        0,
    );
    let stack = Stack::start_with(backend, |root| {
        write_service(root, "alpha", json!({"steps": [{"name": "migrate"}]}), &script);
    })
    .await;
    let admin = stack.admin_token().await;
    let token = service_token(&stack, &admin, "alpha").await;
    let id = start(&stack, &token, None).await["id"].as_i64().unwrap();
    let done = wait_finished(&stack, &token, id).await;
    let both = [
        step("migrate", "failure", "locked"),
        step("migrate", "success", "migrated"),
    ];
    assert_eq!(steps_of(&done["steps"]), both, "{done}");
    let (status, steps) = get(&stack, &format!("/steps/?deployment_id={id}"), &admin).await;
    assert_eq!(status, 200, "{steps}");
    assert_eq!(steps_of(&steps), both);
    assert_ne!(steps[0]["id"], steps[1]["id"]);
}

/// Reports `build`, copies its config to `<spool>/<service>.json`, waits for
/// `<spool>/<service>.go`, then exits 3.
fn finish_script(spool: &Path, service: &str) -> String {
    let spool = spool.display();
    format!(
        r#"#!/bin/sh
echo '{{"name": "build", "state": "success", "message": "built"}}'
cp "$2" "{spool}/{service}.json.tmp" && mv "{spool}/{service}.json.tmp" "{spool}/{service}.json"
while [ ! -f "{spool}/{service}.go" ]; do sleep 0.1; done
echo "done after finish"
exit 3
"#
    )
}

/// Contract 2.13: `PUT /deployments/finish/` finishes at once, while the script still
/// runs: `finished` set and every running or pending step gone before the answer.
/// The script's later exit (3) changes nothing, and is logged.
async fn finish_ends_the_deployment_at_once(backend: Backend) {
    let stack = Stack::start_with(backend, |root| {
        let spool = spool(root.parent().unwrap());
        let config = json!({"steps": [{"name": "build"}, {"name": "deploy"}, {"name": "verify"}]});
        write_service(root, "alpha", config, &finish_script(&spool, "alpha"));
    })
    .await;
    let spool = spool(stack.dir.path());
    let admin = stack.admin_token().await;
    let token = service_token(&stack, &admin, "alpha").await;
    let id = start(&stack, &token, None).await["id"].as_i64().unwrap();
    let deployment_token = gated_config(&stack, &spool, "alpha").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/deployments/{id}");
    wait_until(&stack, "build reported", async || {
        let steps = get(&stack, &path, &token).await.1["steps"].clone();
        steps_of(&steps).first() == Some(&step("build", "success", "built"))
    })
    .await;

    let (status, body) = send(
        &stack,
        Method::PUT,
        "/deployments/finish/",
        Some(&deployment_token),
        None,
    )
    .await;
    assert_eq!(
        (status, body),
        (200, json!({"detail": format!("Deployment {id} finished")}))
    );
    let (_, finished) = get(&stack, &path, &token).await;
    assert!(is_utc_micros(&finished["finished"]), "{finished}");
    assert_eq!(steps_of(&finished["steps"]), [step("build", "success", "built")]);

    // The script still runs, so the next deployment of alpha waits for it (one run
    // per service at a time).
    let body = json!({"service": "alpha"});
    let (status, queued) = send(&stack, Method::POST, "/v1/deployments", Some(&admin), Some(body)).await;
    assert_eq!(status, 200, "{queued}");
    assert_eq!(queued["status"], "DEPLOYMENT_STATUS_QUEUED", "{queued}");

    // When it exits 3, the outcome recorded at finish stays.
    release(&spool, "alpha");
    wait_until(&stack, "the late exit logged", async || {
        stack.log("deploy").contains("after its deployment was finished")
    })
    .await;
    let (_, after) = get(&stack, &path, &token).await;
    assert_eq!(after, finished, "the script's exit changed the finished deployment");
    let (_, v1) = get(&stack, &format!("/v1/deployments/{id}"), &admin).await;
    assert_eq!(v1["status"], "DEPLOYMENT_STATUS_SUCCEEDED", "{v1}");
    let next: i64 = queued["id"].as_str().unwrap().parse().unwrap();
    wait_finished(&stack, &token, next).await;
}

/// Contract 2.9 and 4.3: a service's deployments go with it, whether its folder is
/// removed and synced or it is deleted; a new service of the same name starts afresh
/// (its plan too, contract 4.5).
async fn deployments_of_removed_services_are_not_listed(backend: Backend) {
    let script = reporting_script(&[json!({"name": "build", "state": "success", "message": ""})], 0);
    let stack = Stack::start_with(backend, |root| {
        write_service(root, "alpha", json!({}), &script);
        write_service(root, "beta", json!({}), &script);
    })
    .await;
    let admin = stack.admin_token().await;
    let mut ids = Vec::new();
    for service in ["alpha", "beta"] {
        let token = service_token(&stack, &admin, service).await;
        let id = start(&stack, &token, None).await["id"].as_i64().unwrap();
        wait_finished(&stack, &token, id).await;
        ids.push(id);
    }
    let listed = async || -> Vec<i64> {
        let (status, list) = get(&stack, "/deployments/", &admin).await;
        assert_eq!(status, 200, "{list}");
        list.as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(listed().await, ids);

    // beta's folder removed and synced: its deployment is gone.
    std::fs::remove_dir_all(stack.services_dir().join("beta")).unwrap();
    let (status, _) = send(&stack, Method::POST, "/services/sync", Some(&admin), None).await;
    assert_eq!(status, 200);
    assert_eq!(listed().await, [ids[0]]);
    let (status, body) = get(&stack, &format!("/steps/?deployment_id={}", ids[1]), &admin).await;
    assert_eq!((status, body), (404, json!({"detail": "Deployment not found"})));
    // Slipway's own API keeps the history when asked, marked.
    let (status, history) = get(&stack, "/v1/deployments?include_removed_services=true", &admin).await;
    assert_eq!(status, 200, "{history}");
    let marked: Vec<(String, bool)> = history["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["service"].as_str().unwrap().to_owned(), d["serviceRemoved"] == true))
        .collect();
    assert_eq!(marked, [("alpha".to_owned(), false), ("beta".to_owned(), true)]);
    let (_, listed_v1) = get(&stack, "/v1/deployments", &admin).await;
    assert_eq!(
        listed_v1["deployments"].as_array().map_or(0, Vec::len),
        1,
        "{listed_v1}"
    );

    // alpha deleted, then synced back with a new id: its old deployment stays gone,
    // even for a token of the new alpha.
    let (_, services) = get(&stack, "/services/", &admin).await;
    let alpha_id = services[0]["id"].as_i64().unwrap();
    let (status, _) = send(
        &stack,
        Method::DELETE,
        &format!("/services/{alpha_id}"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(listed().await, Vec::<i64>::new());
    let (status, _) = send(&stack, Method::POST, "/services/sync", Some(&admin), None).await;
    assert_eq!(status, 200);
    let new_alpha = service_token(&stack, &admin, "alpha").await;
    assert_eq!(listed().await, Vec::<i64>::new());
    let (status, body) = get(&stack, &format!("/deployments/{}", ids[0]), &new_alpha).await;
    assert_eq!((status, body), (403, json!({"detail": "Wrong service token"})));
    // Its plan does not come from the old alpha's success (which reported `build`).
    let body = json!({"service": "alpha"});
    let (status, started) = send(&stack, Method::POST, "/v1/deployments", Some(&admin), Some(body)).await;
    assert_eq!(status, 200, "{started}");
    assert_eq!(started["steps"][0]["name"], "Unknown step", "{started}");
    let id: i64 = started["id"].as_str().unwrap().parse().unwrap();
    wait_finished(&stack, &new_alpha, id).await;
    assert_eq!(listed().await, [id]);
}

/// Issue 10.10: a deployment token the script prints inside `deployed_service` is
/// not published.
async fn a_token_inside_deployed_service_is_redacted(backend: Backend) {
    let stack = Stack::start_with(backend, |root| {
        let spool = spool(root.parent().unwrap());
        let script = format!(
            r#"#!/bin/sh
token=$(sed -n 's/^  "access_token": "\(.*\)",$/\1/p' "$2")
cp "$2" "{spool}/alpha.json"
echo "{{\"deployed_service\": {{\"url\": \"https://alpha\", \"auth\": \"Bearer $token\", \"tokens\": [\"$token\"]}}}}"
"#,
            spool = spool.display()
        );
        write_service(root, "alpha", json!({}), &script);
    })
    .await;
    let spool = spool(stack.dir.path());
    let admin = stack.admin_token().await;
    let token = service_token(&stack, &admin, "alpha").await;
    let id = start(&stack, &token, None).await["id"].as_i64().unwrap();
    wait_finished(&stack, &token, id).await;
    let deployment_token = gated_config(&stack, &spool, "alpha").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(deployment_token.len() > 20);
    let config_token = signed(&stack, TokenType::Config, 600);
    let (status, published) = get(&stack, "/deployed-services/", &config_token).await;
    assert_eq!(status, 200, "{published}");
    assert_eq!(
        published[0]["config"],
        json!({"url": "https://alpha", "auth": "Bearer [redacted]", "tokens": ["[redacted]"]}),
        "{published}"
    );
    assert!(!published.to_string().contains(&deployment_token));
}

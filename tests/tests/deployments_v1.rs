//! Slipway's `/v1` deployment routes and `slipway deploy --wait`, against real deploy
//! scripts in a services directory. On SQLite and PostgreSQL.

use reqwest::Method;
use serde_json::{Value, json};
use tests::support::*;
use tests::{Backend, Stack, on_every_backend};

on_every_backend!(v1_deployment_routes, slipway_deploy_wait_exit_codes,);

/// `/v1`: proto3 JSON, permissions as 403, a deployment token bound to its own run.
async fn v1_deployment_routes(backend: Backend) {
    let stack = Stack::start_with(backend, gated_services).await;
    let spool = spool(stack.dir.path());
    let admin = stack.admin_token().await;
    let alpha = service_token(&stack, &admin, "alpha").await;
    let beta = service_token(&stack, &admin, "beta").await;
    let (status, _, started) = call(
        &stack,
        Method::POST,
        "/v1/deployments",
        Some(&alpha),
        Some(json!({"env": {"a": "b"}})),
    )
    .await;
    assert_eq!(status, 200, "{started}");
    assert_eq!(
        (started["service"].as_str(), started["context"].clone()),
        (Some("alpha"), json!({"env": {"a": "b"}}))
    );
    let id: i64 = started["id"].as_str().unwrap().parse().unwrap();
    let token = gated_config(&stack, &spool, "alpha").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();

    let (status, got) = get(&stack, &format!("/v1/deployments/{id}"), &alpha).await;
    assert_eq!(
        (status, got["id"].as_str()),
        (200, Some(id.to_string().as_str())),
        "{got}"
    );
    assert!(
        got["status"].as_str().unwrap().starts_with("DEPLOYMENT_STATUS_"),
        "{got}"
    );
    let (status, _) = get(&stack, &format!("/v1/deployments/{id}"), &beta).await;
    assert_eq!(status, 403);
    let (status, list) = get(&stack, "/v1/deployments?service=alpha&page_size=10", &admin).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["deployments"][0]["id"], json!(id.to_string()));
    let (status, body) = get(&stack, "/v1/deployments?bogus=1", &admin).await;
    assert_eq!(status, 400, "{body}");

    // A deployment token reports steps of its own run, and may not start or cancel.
    let step = json!({"name": "v1 step", "state": "success", "started": "2026-01-01T00:00:00Z", "message": "via v1"});
    let (status, _, reported) = call(&stack, Method::POST, "/v1/steps", Some(&token), Some(step.clone())).await;
    assert_eq!(status, 200, "{reported}");
    assert_eq!(reported["deploymentId"], json!(id.to_string()));
    let (status, _, _) = call(&stack, Method::POST, "/v1/steps", Some(&admin), Some(step)).await;
    assert_eq!(status, 403, "a user token has no deployment to report to");
    let (status, _, _) = call(&stack, Method::POST, "/v1/deployments", Some(&token), None).await;
    assert_eq!(status, 403);
    let (status, _, _) = call(
        &stack,
        Method::POST,
        &format!("/v1/deployments/{id}/cancel"),
        Some(&alpha),
        None,
    )
    .await;
    assert_eq!(status, 403, "a service token may not cancel");
    let (status, steps) = get(&stack, &format!("/v1/deployments/{id}/steps"), &admin).await;
    assert_eq!(status, 200);
    assert!(
        steps["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "v1 step"),
        "{steps}"
    );
    let (status, _, _) = call(
        &stack,
        Method::POST,
        &format!("/v1/deployments/{}/finish", id + 1000),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, 403, "a deployment token finishes its own run only");
    let (status, _) = get(&stack, "/v1/deployments", "not-a-token").await;
    assert_eq!(status, 401);

    // A user cancels; the run ends cancelled and its token dies.
    let (status, _, cancelled) = call(
        &stack,
        Method::POST,
        &format!("/v1/deployments/{id}/cancel"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, 200, "{cancelled}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, got) = get(&stack, &format!("/v1/deployments/{id}"), &admin).await;
        if got["status"] == "DEPLOYMENT_STATUS_CANCELLED" && got["finished"].is_string() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not cancelled: {got}\n{}",
            stack.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    release(&spool, "alpha");
}

async fn slipway(stack: &Stack, token: Option<&str>, args: &[&str]) -> (i32, String, String) {
    let mut command = tokio::process::Command::new(tests::process::bin_dir().join("slipway"));
    command
        .arg("deploy")
        .args(args)
        .env("SLIPWAY_URL", stack.url(""))
        .env_remove("SLIPWAY_TOKEN");
    if let Some(token) = token {
        command.env("SLIPWAY_TOKEN", token);
    }
    let output = command.output().await.unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (
        output.status.code().unwrap_or(-1),
        text(&output.stdout),
        text(&output.stderr),
    )
}

/// `slipway deploy SERVICE --wait`: 0 for a passing script, 1 for a failing one, 2 for
/// a usage or token problem.
async fn slipway_deploy_wait_exit_codes(backend: Backend) {
    let stack = Stack::start_with(backend, |root| {
        write_service(root, "alpha", steps_config(), &passing_script());
        write_service(root, "beta", steps_config(), &failing_script());
    })
    .await;
    let admin = stack.admin_token().await;
    let alpha = service_token(&stack, &admin, "alpha").await;
    let beta = service_token(&stack, &admin, "beta").await;

    let (code, out, err) = slipway(&stack, Some(&alpha), &["alpha", "--wait", "--env", "A=1"]).await;
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}\n{}", stack.logs());
    assert!(
        out.contains("success  build: built") && out.contains("success  migrate: migrated"),
        "{out}"
    );
    assert!(out.contains("succeeded"), "{out}");

    let (code, out, err) = slipway(&stack, Some(&beta), &["beta", "--wait"]).await;
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("failure  migrate: boom"), "{out}");

    let (code, out, err) = slipway(&stack, Some(&alpha), &["--wait", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let last: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(last["status"], "DEPLOYMENT_STATUS_SUCCEEDED");
    assert!(err.contains("build"), "progress goes to stderr with --json: {err}");

    let (code, out, _) = slipway(&stack, Some(&alpha), &["--json"]).await;
    assert_eq!(code, 0);
    let started: Value = serde_json::from_str(&out).unwrap();
    assert!(started["details"].as_str().unwrap().starts_with("http://"), "{started}");

    for (token, args, says) in [
        (
            Some(alpha.as_str()),
            vec!["beta", "--wait"],
            "for service \"alpha\", not \"beta\"",
        ),
        (None, vec!["alpha"], "needs a service token"),
        (Some(admin.as_str()), vec!["alpha"], "\"user\" token"),
        (Some("garbage"), vec!["alpha"], "401"),
        (Some(alpha.as_str()), vec!["--env", "novalue"], "KEY=VALUE"),
    ] {
        let (code, out, err) = slipway(&stack, token, &args).await;
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    // No gateway there: a connection problem is 2 too.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let output = tokio::process::Command::new(tests::process::bin_dir().join("slipway"))
        .args(["deploy", "--url", &format!("http://{free}"), "--token", &alpha])
        .output()
        .await
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

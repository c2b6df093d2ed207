//! fastDeploy's deployment routes through the gateway (contract 1.3, 2.10–2.13, 3.3):
//! deployment tokens bound to their own run, canonical paths and methods, and the
//! start body's forms, against real deploy scripts in a services directory. On
//! SQLite and PostgreSQL.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tests::support::*;
use tests::{Backend, Stack, on_every_backend, wait_until};

on_every_backend!(
    deployment_tokens_report_and_finish_their_own_run,
    trailing_slashes_and_methods,
    start_body_variants,
);

/// Deployment tokens against their own run and another's (contract 3.3). Every
/// route against every kind of token is the one matrix in authorization.rs; here,
/// what happens to the runs: each token's step lands in its own deployment, finishing
/// one run leaves the other alone, and a finished run's token is refused.
async fn deployment_tokens_report_and_finish_their_own_run(backend: Backend) {
    let stack = Stack::start_with(backend, gated_services).await;
    let spool = spool(stack.dir.path());
    let kinds = token_kinds(&stack).await;
    let (admin, alpha, beta, dep_a, dep_b) = (&kinds.admin, &kinds.alpha, &kinds.beta, &kinds.dep_a, &kinds.dep_b);
    let (a, b) = (kinds.a, kinds.b);
    let step = json!({"name": "remote", "state": "success", "started": "2026-01-01T00:00:00Z",
                      "finished": "2026-01-01T00:00:01Z", "message": "from the test"});
    for (name, token) in [("deployment", dep_a), ("deployment of another", dep_b)] {
        let (status, _, answer) = call(&stack, Method::POST, "/steps/", Some(token), Some(step.clone())).await;
        assert_eq!(status, 200, "POST /steps/ with a {name} token: {answer}");
    }
    let (status, _, body) = call(&stack, Method::POST, "/deployments/", None, None).await;
    assert_eq!((status, body), (401, json!({"detail": "Not authenticated"})));

    // A missing deployment looks like another service's: ids cannot be probed.
    let (status, challenge, body) = call(&stack, Method::GET, "/deployments/999999", Some(alpha), None).await;
    assert_eq!(
        (status, challenge.as_deref(), body),
        (403, Some("Bearer"), json!({"detail": "Wrong service token"}))
    );

    // Each deployment token reported to its own deployment only.
    let (_, steps_a) = get(&stack, &format!("/steps/?deployment_id={a}"), admin).await;
    let (_, steps_b) = get(&stack, &format!("/steps/?deployment_id={b}"), admin).await;
    let remote = |steps: &Value| {
        steps
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["name"] == "remote")
            .count()
    };
    assert_eq!((remote(&steps_a), remote(&steps_b)), (1, 1), "{steps_a} {steps_b}");

    // Finishing: a deployment token finishes its own deployment (once its script has
    // ended, here when the gate opens); then the token is revoked.
    let (status, _, body) = call(&stack, Method::PUT, "/deployments/finish/", Some(dep_b), None).await;
    assert_eq!(
        (status, body),
        (200, json!({"detail": format!("Deployment {b} finished")}))
    );
    release(&spool, "beta");
    let deployment_b = wait_finished(&stack, beta, b).await;
    assert!(is_utc_micros(&deployment_b["finished"]), "{deployment_b}");
    let (_, deployment_a) = get(&stack, &format!("/deployments/{a}"), alpha).await;
    assert!(
        deployment_a["finished"].is_null(),
        "finishing b touched a: {deployment_a}"
    );
    let late = Some(step);
    wait_until(Duration::from_secs(5), async || {
        match call(&stack, Method::POST, "/steps/", Some(dep_b), late.clone()).await.0 {
            401 => Ok(()),
            _ => Err("a finished deployment's token still reports".to_owned()),
        }
    })
    .await;
    release(&spool, "alpha");
    let done = wait_finished(&stack, alpha, a).await;
    assert!(
        done["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "build" && s["state"] == "success"),
        "{done}"
    );
}

/// Contract 1.3: exact canonical paths, 307 for a missing or extra slash, 405 for a
/// known path with the wrong method.
async fn trailing_slashes_and_methods(backend: Backend) {
    let stack = Stack::start(backend).await;
    let host = stack.gateway.to_string();
    for (method, path, location) in [
        (Method::GET, "/deployments", "/deployments/"),
        (Method::POST, "/deployments", "/deployments/"),
        (Method::GET, "/deployments/1/", "/deployments/1"),
        (Method::POST, "/steps", "/steps/"),
        (Method::GET, "/steps?deployment_id=3", "/steps/?deployment_id=3"),
        (Method::GET, "/v1/deployments/", "/v1/deployments"),
        (Method::POST, "/v1/steps/", "/v1/steps"),
    ] {
        let (status, _, _) = call(&stack, method.clone(), path, None, None).await;
        assert_eq!(status, 307, "{method} {path}");
        let response = stack
            .http
            .request(method.clone(), stack.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.headers()["location"].to_str().unwrap(),
            format!("http://{host}{location}"),
            "{method} {path}"
        );
    }
    for (method, path) in [
        (Method::PUT, "/deployments/finish"),
        (Method::GET, "/deployments/finish/"),
        (Method::DELETE, "/deployments/"),
        (Method::POST, "/deployments/1"),
        (Method::PUT, "/steps/"),
        (Method::DELETE, "/v1/deployments/1"),
    ] {
        let (status, _, body) = call(&stack, method.clone(), path, None, None).await;
        assert_eq!(
            (status, body),
            (405, json!({"detail": "Method Not Allowed"})),
            "{method} {path}"
        );
    }
    // A plain HTTP request to the WebSocket path is 404, as in fastDeploy.
    let (status, _, body) = call(
        &stack,
        Method::GET,
        &format!("/deployments/ws/{}", uuid::Uuid::new_v4()),
        None,
        None,
    )
    .await;
    assert_eq!((status, body), (404, json!({"detail": "Not Found"})));
    // Authentication comes before path and query validation.
    let (status, _, _) = call(&stack, Method::GET, "/deployments/abc", None, None).await;
    assert_eq!(status, 401);
    let (status, _, _) = call(&stack, Method::GET, "/steps/", None, None).await;
    assert_eq!(status, 401);
}

async fn post_raw(stack: &Stack, token: Option<&str>, content_type: Option<&str>, body: &str) -> (u16, Value) {
    let mut request = stack.http.post(stack.url("/deployments/")).body(body.to_owned());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

/// Contract 2.11: the body is optional; every empty form means `{"env": {}}`.
async fn start_body_variants(backend: Backend) {
    let stack = Stack::start_with(backend, |root| {
        write_service(root, "alpha", steps_config(), &passing_script());
    })
    .await;
    let admin = stack.admin_token().await;
    let alpha = service_token(&stack, &admin, "alpha").await;
    let json_type = Some("application/json");
    let mut ids = Vec::new();
    for (content_type, body, env) in [
        (None, "", json!({})),
        (json_type, "", json!({})),
        (json_type, "  ", json!({})),
        (json_type, "{}", json!({})),
        (json_type, "null", json!({})),
        (json_type, r#"{"env": {}}"#, json!({})),
        (
            json_type,
            r#"{"env": {"foo": "bar", "n": 1}, "dropped": true}"#,
            json!({"foo": "bar", "n": 1}),
        ),
    ] {
        let (status, started) = post_raw(&stack, Some(&alpha), content_type, body).await;
        assert_eq!(status, 200, "body {body:?}: {started}");
        assert_eq!(started["context"], json!({"env": env}), "body {body:?}");
        assert_eq!(
            keys(&started),
            [
                "context",
                "details",
                "finished",
                "id",
                "origin",
                "service_id",
                "started",
                "user"
            ]
        );
        let id = started["id"].as_i64().unwrap();
        assert_eq!(started["details"], json!(stack.url(&format!("/deployments/{id}"))));
        assert_eq!(
            (started["origin"].as_str(), started["user"].as_str()),
            (Some("ci"), Some("admin"))
        );
        assert!(is_utc_micros(&started["started"]), "{started}");
        assert!(started["finished"].is_null());
        ids.push(id);
    }
    let (_, services) = get(&stack, "/services/", &admin).await;
    let (_, listed) = get(&stack, "/deployments/", &admin).await;
    let listed = listed.as_array().unwrap();
    assert_eq!(
        listed.iter().map(|d| d["id"].as_i64().unwrap()).collect::<Vec<_>>(),
        ids,
        "ascending ids"
    );
    assert!(
        listed
            .iter()
            .all(|d| d["service_id"] == services[0]["id"] && d.get("steps").is_none())
    );
    assert_eq!(
        keys(&listed[0]),
        ["context", "finished", "id", "origin", "service_id", "started", "user"]
    );

    for (body, kind, loc) in [
        (r#"{"env": "x"}"#, "dict_type", json!(["body", "env"])),
        (r#"{"env": null}"#, "dict_type", json!(["body", "env"])),
        ("[1, 2]", "model_attributes_type", json!(["body"])),
        ("\"text\"", "model_attributes_type", json!(["body"])),
    ] {
        let (status, answer) = post_raw(&stack, Some(&alpha), json_type, body).await;
        assert_eq!(status, 422, "{body}: {answer}");
        assert_eq!(
            (&answer["detail"][0]["type"], &answer["detail"][0]["loc"]),
            (&json!(kind), &loc),
            "{answer}"
        );
    }
    // Not JSON at all: 422 with a valid token (of any type, as FastAPI decodes the body
    // first); without a valid token the body is never read: 401.
    for token in [Some(alpha.as_str()), Some(admin.as_str())] {
        let (status, answer) = post_raw(&stack, token, json_type, "{nope").await;
        assert_eq!(
            (status, &answer["detail"][0]["type"]),
            (422, &json!("json_invalid")),
            "{answer}"
        );
    }
    for body in ["{}", "{nope"] {
        let (status, _) = post_raw(&stack, None, json_type, body).await;
        assert_eq!(status, 401, "{body}");
        let (status, _) = post_raw(&stack, Some("not-a-token"), json_type, body).await;
        assert_eq!(status, 401, "{body}");
    }
    let (_, after) = get(&stack, "/deployments/", &admin).await;
    assert_eq!(
        after.as_array().unwrap().len(),
        ids.len(),
        "a refused start created a deployment"
    );

    // `details` follows the Host the client used, and X-Forwarded-Proto from a local proxy.
    let response = stack
        .http
        .post(stack.url("/deployments/"))
        .bearer_auth(&alpha)
        .header("host", "deploy.example.test:8443")
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    let started: Value = response.json().await.unwrap();
    let id = started["id"].as_i64().unwrap();
    assert_eq!(
        started["details"],
        json!(format!("https://deploy.example.test:8443/deployments/{id}"))
    );
    let done = wait_finished(&stack, &alpha, id).await;
    assert!(
        done["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["state"] == "success"),
        "{done}"
    );
}

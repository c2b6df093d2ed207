//! fastDeploy's deployment and step routes through the gateway (contract 2.10–2.15,
//! 3.3), Slipway's `/v1` deployment routes and `slipway deploy --wait`, against real
//! deploy scripts in a services directory. On SQLite and PostgreSQL.

use tests::support;

use std::path::Path;

use reqwest::Method;
use serde_json::{Value, json};
use support::*;
use tests::{Backend, Stack, on_every_backend};

on_every_backend!(
    authorization_matrix,
    trailing_slashes_and_methods,
    start_body_variants,
    step_and_query_validation,
    scripts_run_to_completion,
    v1_deployment_routes,
    slipway_deploy_wait_exit_codes
);

const STEPS: &[&str] = &["build", "migrate"];

fn steps_config() -> Value {
    json!({"description": "test service", "steps": STEPS.iter().map(|s| json!({"name": s})).collect::<Vec<_>>()})
}

fn passing_script() -> String {
    reporting_script(
        &[
            json!({"name": "build", "state": "success", "message": "built"}),
            json!({"name": "migrate", "state": "success", "message": "migrated"}),
        ],
        0,
    )
}

fn failing_script() -> String {
    reporting_script(
        &[
            json!({"name": "build", "state": "success", "message": "built"}),
            json!({"name": "migrate", "state": "failure", "message": "boom"}),
        ],
        1,
    )
}

/// Reports over HTTP like fastDeploy's deploy helper: a step to `steps_url`, then
/// `deployment_finish_url`, with the deployment token from its config file.
const REMOTE_SCRIPT: &str = r#"#!/usr/bin/env python3
import datetime, json, sys, urllib.request
config = json.load(open(sys.argv[sys.argv.index("--config") + 1]))
def call(method, url, body):
    data = None if body is None else json.dumps(body).encode()
    headers = {"Authorization": "Bearer " + config["access_token"], "Content-Type": "application/json"}
    urllib.request.urlopen(urllib.request.Request(url, data=data, method=method, headers=headers)).read()
now = datetime.datetime.now(datetime.timezone.utc).isoformat()
greeting = config["context"]["env"].get("greeting", "")
call("POST", config["steps_url"], {"id": None, "deployment_id": None, "name": "remote", "state": "success",
                                   "started": now, "finished": now, "message": "posted over HTTP: " + greeting})
call("PUT", config["deployment_finish_url"], None)
"#;

fn gated_services(root: &Path) {
    let spool = spool(root.parent().unwrap());
    for name in ["alpha", "beta"] {
        write_service(root, name, steps_config(), &gated_script(&spool, name));
    }
}

/// Every deployment route against every kind of token (contract 3.3; 401 for a wrong
/// type, the one 403 for another service's deployment, or a missing one).
async fn authorization_matrix(backend: Backend) {
    let stack = Stack::start_with(backend, gated_services).await;
    let spool = spool(stack.dir.path());
    let kinds = token_kinds(&stack).await;
    let (admin, alpha, beta, dep_b) = (&kinds.admin, &kinds.alpha, &kinds.beta, &kinds.dep_b);
    let (a, b) = (kinds.a, kinds.b);
    let tokens = kinds.named();
    let step = json!({"name": "remote", "state": "success", "started": "2026-01-01T00:00:00Z",
                      "finished": "2026-01-01T00:00:01Z", "message": "from the test"});
    // Expected status per token, in the order above (finish comes last, below).
    let routes: [(Method, String, Option<Value>, [u16; 8]); 4] = [
        (
            Method::GET,
            "/deployments/".into(),
            None,
            [200, 401, 401, 401, 401, 401, 401, 401],
        ),
        (
            Method::GET,
            format!("/deployments/{a}"),
            None,
            [401, 200, 403, 401, 401, 401, 401, 401],
        ),
        (
            Method::GET,
            format!("/steps/?deployment_id={a}"),
            None,
            [200, 401, 401, 401, 401, 401, 401, 401],
        ),
        (
            Method::POST,
            "/steps/".into(),
            Some(step),
            [401, 401, 401, 200, 200, 401, 401, 401],
        ),
    ];
    for (method, path, body, expected) in &routes {
        for ((name, token), want) in tokens.iter().zip(expected) {
            let (status, challenge, answer) = call(&stack, method.clone(), path, Some(token), body.clone()).await;
            assert_eq!(status, *want, "{method} {path} with a {name} token: {answer}");
            match status {
                401 => {
                    assert_eq!(answer, json!({"detail": "Could not validate credentials"}), "{name}");
                    assert_eq!(challenge.as_deref(), Some("Bearer"));
                }
                403 => {
                    assert_eq!(answer, json!({"detail": "Wrong service token"}));
                    assert_eq!(challenge.as_deref(), Some("Bearer"), "the 403 carries the challenge");
                }
                _ => {}
            }
        }
    }
    // Starting: a service token only (of any service: it starts its own).
    for (name, token) in tokens.iter().filter(|(n, _)| !n.starts_with("service")) {
        let (status, _, body) = call(&stack, Method::POST, "/deployments/", Some(token), None).await;
        assert_eq!(status, 401, "start with a {name} token: {body}");
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
    for (name, token) in tokens.iter().filter(|(n, _)| !n.starts_with("deployment")) {
        let (status, _, body) = call(&stack, Method::PUT, "/deployments/finish/", Some(token), None).await;
        assert_eq!(status, 401, "finish with a {name} token: {body}");
    }
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
    let late = routes[3].2.clone();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while call(&stack, Method::POST, "/steps/", Some(dep_b), late.clone()).await.0 != 401 {
        assert!(
            std::time::Instant::now() < deadline,
            "a finished deployment's token still reports"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
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

/// Contract 2.14 and 2.15: the step body and the query parameter in FastAPI's 422
/// shapes; an unknown state is 400 with a reason; an unknown deployment 404, not 500.
async fn step_and_query_validation(backend: Backend) {
    let stack = Stack::start_with(backend, gated_services).await;
    let spool = spool(stack.dir.path());
    let admin = stack.admin_token().await;
    let alpha = service_token(&stack, &admin, "alpha").await;
    let id = start(&stack, &alpha, None).await["id"].as_i64().unwrap();
    let token = gated_config(&stack, &spool, "alpha").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let good = json!({"id": null, "deployment_id": null, "name": "check", "state": "success",
                      "started": "2026-01-01T00:00:00+00:00", "finished": "2026-01-01T00:00:02Z", "message": "ok"});
    let post = |body: Option<Value>| call(&stack, Method::POST, "/steps/", Some(&token), body);

    let mut missing = good.as_object().unwrap().clone();
    missing.remove("state");
    missing.remove("message");
    let (status, _, answer) = post(Some(Value::Object(missing.clone()))).await;
    assert_eq!(status, 422);
    assert_eq!(
        answer["detail"],
        json!([
            {"type": "missing", "loc": ["body", "state"], "msg": "Field required", "input": missing},
            {"type": "missing", "loc": ["body", "message"], "msg": "Field required", "input": missing},
        ])
    );
    for (field, value, kind) in [
        ("started", json!(null), "datetime_type"),
        ("finished", json!(null), "datetime_type"),
        ("started", json!("abc"), "datetime_from_date_parsing"),
        ("name", json!(5), "string_type"),
        ("message", json!(null), "string_type"),
    ] {
        let mut body = good.clone();
        body[field] = value.clone();
        let (status, _, answer) = post(Some(body)).await;
        assert_eq!(status, 422, "{field}={value}: {answer}");
        assert_eq!(answer["detail"][0]["type"], kind, "{answer}");
        assert_eq!(answer["detail"][0]["loc"], json!(["body", field]));
        assert_eq!(answer["detail"][0]["input"], value);
    }
    let (status, _, answer) = post(None).await;
    assert_eq!(
        (status, &answer["detail"][0]["loc"]),
        (422, &json!(["body"])),
        "{answer}"
    );
    let (status, _, answer) = post(Some(json!([good.clone()]))).await;
    assert_eq!(
        (status, &answer["detail"][0]["type"]),
        (422, &json!("model_attributes_type"))
    );

    let mut unknown = good.clone();
    unknown["state"] = json!("exploded");
    let (status, _, answer) = post(Some(unknown)).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["detail"]
            .as_str()
            .is_some_and(|d| d.contains("exploded") || d.contains("state")),
        "{answer}"
    );

    let (_, steps) = get(&stack, &format!("/steps/?deployment_id={id}"), &admin).await;
    assert!(
        !steps.to_string().contains("exploded"),
        "a refused report was stored: {steps}"
    );
    let (status, _, answer) = post(Some(good.clone())).await;
    assert_eq!((status, answer), (200, json!({"detail": "step processed"})));
    let (status, steps) = get(&stack, &format!("/steps/?deployment_id={id}"), &admin).await;
    assert_eq!(status, 200);
    let check = steps
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "check")
        .cloned()
        .unwrap();
    assert_eq!(
        keys(&check),
        ["deployment_id", "finished", "id", "message", "name", "started", "state"]
    );
    assert_eq!(
        (check["state"].as_str(), check["deployment_id"].as_i64()),
        (Some("success"), Some(id))
    );
    assert!(
        is_utc_micros(&check["started"]) && is_utc_micros(&check["finished"]),
        "{check}"
    );

    for (query, kind, input) in [
        ("", "missing", json!(null)),
        ("?deployment_id=x", "int_parsing", json!("x")),
        ("?other=1", "missing", json!(null)),
    ] {
        let (status, answer) = get(&stack, &format!("/steps/{query}"), &admin).await;
        assert_eq!(status, 422, "{query}");
        let error = &answer["detail"][0];
        assert_eq!(
            (&error["type"], &error["loc"], &error["input"]),
            (&json!(kind), &json!(["query", "deployment_id"]), &input)
        );
    }
    let (status, answer) = get(&stack, "/steps/?deployment_id=999999", &admin).await;
    assert_eq!((status, answer), (404, json!({"detail": "Deployment not found"})));
    let (status, _, answer) = call(&stack, Method::GET, "/deployments/abc", Some(&alpha), None).await;
    assert_eq!(status, 422);
    assert_eq!(
        (&answer["detail"][0]["type"], &answer["detail"][0]["loc"]),
        (&json!("int_parsing"), &json!(["path", "deployment_id"]))
    );
    release(&spool, "alpha");
    wait_finished(&stack, &alpha, id).await;
}

/// Real scripts: JSON lines on stdout (passing and failing), and one that reports over
/// HTTP to the URLs in its config file; each followed with its service token.
async fn scripts_run_to_completion(backend: Backend) {
    let stack = Stack::start_with(backend, |root| {
        write_service(root, "alpha", steps_config(), &passing_script());
        write_service(root, "beta", steps_config(), &failing_script());
        write_service(root, "gamma", json!({"steps": [{"name": "remote"}]}), REMOTE_SCRIPT);
    })
    .await;
    let admin = stack.admin_token().await;
    let mut runs = Vec::new();
    for (service, body) in [
        ("alpha", Some(json!({"env": {}}))),
        ("beta", None),
        ("gamma", Some(json!({"env": {"greeting": "hello"}}))),
    ] {
        let token = service_token(&stack, &admin, service).await;
        let id = start(&stack, &token, body).await["id"].as_i64().unwrap();
        runs.push((service, token, id));
    }
    let mut finished = Vec::new();
    for (service, token, id) in &runs {
        let deployment = wait_finished(&stack, token, *id).await;
        assert_eq!(
            keys(&deployment),
            [
                "context",
                "finished",
                "id",
                "origin",
                "service_id",
                "started",
                "steps",
                "user"
            ],
            "{service}"
        );
        assert!(is_utc_micros(&deployment["finished"]), "{deployment}");
        for step in deployment["steps"].as_array().unwrap() {
            assert_eq!(
                keys(step),
                ["deployment_id", "finished", "id", "message", "name", "started", "state"]
            );
            assert_ne!(
                step["state"], "running",
                "a finished deployment has no running step: {deployment}"
            );
        }
        finished.push(deployment);
    }
    let states = |d: &Value| steps_of(&d["steps"]);
    let pair = |n: &str, s: &str, m: &str| (n.to_owned(), s.to_owned(), m.to_owned());
    assert_eq!(
        states(&finished[0]),
        [
            pair("build", "success", "built"),
            pair("migrate", "success", "migrated")
        ],
        "{}",
        stack.logs()
    );
    let beta = states(&finished[1]);
    assert_eq!(beta[0], pair("build", "success", "built"));
    assert!(beta.iter().any(|(_, state, _)| state == "failure"), "{beta:?}");
    let gamma = states(&finished[2]);
    assert!(
        gamma.contains(&pair("remote", "success", "posted over HTTP: hello")),
        "{gamma:?}\n{}",
        stack.log("deploy")
    );
    assert!(gamma.iter().all(|(_, state, _)| state == "success"), "{gamma:?}");
    assert_eq!(finished[2]["context"], json!({"env": {"greeting": "hello"}}));
}

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

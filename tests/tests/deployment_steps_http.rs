//! fastDeploy's step routes through the gateway (contract 2.14, 2.15) and real scripts
//! run to completion, reporting on stdout or over HTTP. On SQLite and PostgreSQL.

use reqwest::Method;
use serde_json::{Value, json};
use tests::support::*;
use tests::{Backend, Stack, on_every_backend};

on_every_backend!(step_and_query_validation, scripts_run_to_completion,);

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

//! The registry through the gateway: fastDeploy's service and deployed-service
//! routes, the /v1 service routes and `slipway services`. On SQLite and PostgreSQL.

use std::fs;

use serde_json::{Value, json};
use tests::registry_fixture::*;
use tests::{Backend, Stack, on_every_backend};

on_every_backend!(
    fastdeploy_services_routes,
    fastdeploy_deployed_services_and_wrong_token_types,
    v1_services_routes,
    slipway_services_sync_and_list,
);

async fn http(stack: &Stack, method: reqwest::Method, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = stack.http.request(method, stack.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn token_of_type(stack: &Stack, token_type: common::token::TokenType) -> String {
    let mut claims = tests::user_claims("admin");
    claims.token_type = token_type;
    match token_type {
        common::token::TokenType::Service => claims.service = Some("alpha".into()),
        common::token::TokenType::Deployment => claims.deployment = Some(1),
        _ => {}
    }
    stack.sign_with_real_key(&claims)
}

async fn fastdeploy_services_routes(backend: Backend) {
    use reqwest::Method;
    let stack = Stack::start_with(backend, initial_services).await;
    let token = stack.admin_token().await;
    let t = Some(token.as_str());

    let (status, body) = http(&stack, Method::GET, "/services/", t).await;
    assert_eq!(status, 200, "{body}");
    let rows = body.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    for row in rows {
        let mut keys: Vec<&str> = row.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["data", "id", "name"]);
        assert!(row["id"].is_i64());
    }
    assert_eq!(rows[1]["name"], "beta");
    assert_eq!(rows[1]["data"], json!({"deploy_script": "deploy.sh", "port": 8000}));
    assert_eq!(rows[1]["data"]["port"].to_string(), "8000", "integers stay integers");

    let (status, body) = http(&stack, Method::GET, "/services/names/", t).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!(["alpha", "bad-json", "beta", "not-executable"]));

    // Sync answers 200 although a folder has a problem; the good new one is synced.
    write_service(&stack.services_dir(), "gamma", "{}", 0o755);
    let (status, body) = http(&stack, Method::POST, "/services/sync", t).await;
    assert_eq!((status, body), (200, json!({"detail": "Services synced"})));
    let (_, body) = http(&stack, Method::GET, "/services/", t).await;
    let gamma = body.as_array().unwrap().iter().find(|s| s["name"] == "gamma").unwrap()["id"]
        .as_i64()
        .unwrap();

    let path = format!("/services/{gamma}");
    let (status, body) = http(&stack, Method::DELETE, &path, t).await;
    assert_eq!(
        (status, body),
        (200, json!({"detail": format!("Service {gamma} deleted")}))
    );
    let (status, body) = http(&stack, Method::DELETE, &path, t).await;
    assert_eq!((status, body), (404, json!({"detail": "Service does not exist"})));
    let (status, body) = http(&stack, Method::DELETE, "/services/abc", t).await;
    assert_eq!(status, 422);
    assert_eq!(
        body,
        json!({"detail": [{
            "type": "int_parsing",
            "loc": ["path", "service_id"],
            "msg": "Input should be a valid integer, unable to parse string as an integer",
            "input": "abc",
        }]})
    );
    // Authentication comes before validation.
    let (status, body) = http(&stack, Method::DELETE, "/services/abc", None).await;
    assert_eq!((status, body), (401, json!({"detail": "Not authenticated"})));

    // fastDeploy's redirects and 405s around these paths.
    let response = stack
        .http
        .get(stack.url("/services"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 307);
    assert!(response.headers()["location"].to_str().unwrap().ends_with("/services/"));
    assert_eq!(http(&stack, Method::GET, "/services/names", t).await.0, 405);
    assert_eq!(http(&stack, Method::GET, "/services/sync", t).await.0, 405);
    let response = stack
        .http
        .post(stack.url("/services/sync/"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 307);
}

async fn fastdeploy_deployed_services_and_wrong_token_types(backend: Backend) {
    use common::token::TokenType;
    use reqwest::Method;
    let stack = Stack::start_with(backend, initial_services).await;
    let user = stack.admin_token().await;
    let credential = deploy_credential(&stack);
    let alpha = publish(
        &stack,
        credential.request(published(4, "alpha", json!({"url": "https://a"}))),
    )
    .await
    .unwrap();
    let beta = publish(
        &stack,
        credential.request(published(5, "beta", json!({"port": 8000, "tags": ["x"]}))),
    )
    .await
    .unwrap();

    let all = config_token(&stack, None);
    let (status, body) = http(&stack, Method::GET, "/deployed-services/", Some(&all)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!([
            {"id": alpha.id, "deployment_id": 4, "config": {"url": "https://a"}},
            {"id": beta.id, "deployment_id": 5, "config": {"port": 8000, "tags": ["x"]}},
        ])
    );
    let only_beta = config_token(&stack, Some(&["beta"]));
    let (status, body) = http(&stack, Method::GET, "/deployed-services/", Some(&only_beta)).await;
    assert_eq!(status, 200);
    assert_eq!(body.as_array().unwrap().len(), 1);
    assert_eq!(body[0]["id"], beta.id);

    // A token of the wrong type is 401 on every fastDeploy route, as fastDeploy answers.
    let invalid = json!({"detail": "Could not validate credentials"});
    let service = token_of_type(&stack, TokenType::Service);
    let deployment = token_of_type(&stack, TokenType::Deployment);
    for (method, path) in [
        (Method::GET, "/services/"),
        (Method::GET, "/services/names/"),
        (Method::POST, "/services/sync"),
        (Method::DELETE, "/services/1"),
    ] {
        for wrong in [&service, &deployment, &all] {
            let (status, body) = http(&stack, method.clone(), path, Some(wrong)).await;
            assert_eq!((status, &body), (401, &invalid), "{method} {path}");
        }
    }
    for wrong in [&user, &service, &deployment] {
        let (status, body) = http(&stack, Method::GET, "/deployed-services/", Some(wrong)).await;
        assert_eq!((status, &body), (401, &invalid));
    }
    let (status, body) = http(&stack, Method::GET, "/deployed-services/", None).await;
    assert_eq!((status, body), (401, json!({"detail": "Not authenticated"})));
    // A user token narrowed to reading cannot sync.
    let mut claims = tests::user_claims("admin");
    claims.permissions = Some(vec![common::scope::SERVICES_READ.into()]);
    let reader = stack.sign_with_real_key(&claims);
    assert_eq!(http(&stack, Method::GET, "/services/", Some(&reader)).await.0, 200);
    let (status, body) = http(&stack, Method::POST, "/services/sync", Some(&reader)).await;
    assert_eq!((status, body), (401, invalid));
}

async fn v1_services_routes(backend: Backend) {
    use common::token::TokenType;
    use reqwest::Method;
    let stack = Stack::start_with(backend, initial_services).await;
    let token = stack.admin_token().await;
    let t = Some(token.as_str());

    let (status, body) = http(&stack, Method::GET, "/v1/services", t).await;
    assert_eq!(status, 200, "{body}");
    let services = body["services"].as_array().unwrap();
    assert_eq!(services.len(), 3);
    assert_eq!(services[0]["name"], "alpha");
    let alpha_id = services[0]["id"].as_str().unwrap().to_owned(); // int64 as a string

    fs::remove_dir_all(stack.services_dir().join("beta")).unwrap();
    let (status, body) = http(&stack, Method::POST, "/v1/services/sync", t).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["deleted"], json!(["beta"]));
    let problems = body["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{body}");
    assert_eq!(problems[0]["service"], "bad-json");
    assert_eq!(
        body["warnings"],
        json!([{"service": "not-executable", "reason": "deploy script not-executable/deploy.sh is not executable"}])
    );

    let (status, body) = http(&stack, Method::DELETE, &format!("/v1/services/{alpha_id}"), t).await;
    assert_eq!((status, body), (200, json!({})));
    let (status, body) = http(&stack, Method::DELETE, &format!("/v1/services/{alpha_id}"), t).await;
    assert_eq!((status, body), (404, json!({"detail": "Service does not exist"})));
    assert_eq!(http(&stack, Method::DELETE, "/v1/services/abc", t).await.0, 400);

    let credential = deploy_credential(&stack);
    write_service(&stack.services_dir(), "delta", "{}", 0o755);
    http(&stack, Method::POST, "/v1/services/sync", t).await;
    publish(&stack, credential.request(published(7, "delta", json!({"a": 1}))))
        .await
        .unwrap();
    let (status, body) = http(
        &stack,
        Method::GET,
        "/v1/deployed-services",
        Some(&config_token(&stack, None)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["deployedServices"][0]["service"], "delta");
    assert_eq!(body["deployedServices"][0]["deploymentId"], "7");

    // On /v1 a valid token that may not do this is 403, an invalid one 401.
    let service = token_of_type(&stack, TokenType::Service);
    assert_eq!(http(&stack, Method::GET, "/v1/services", Some(&service)).await.0, 403);
    assert_eq!(
        http(&stack, Method::GET, "/v1/deployed-services", Some(&service))
            .await
            .0,
        403
    );
    assert_eq!(
        http(
            &stack,
            Method::POST,
            "/v1/services/sync",
            Some(&config_token(&stack, None))
        )
        .await
        .0,
        403
    );
    assert_eq!(http(&stack, Method::GET, "/v1/services", Some("nope")).await.0, 401);
}

async fn slipway(stack: &Stack, token: &str, args: &[&str]) -> (bool, String, String) {
    let output = tokio::process::Command::new(tests::process::bin_dir().join("slipway"))
        .args(args)
        .args(["--url", &stack.url("")])
        .env("SLIPWAY_TOKEN", token)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    (
        output.status.success(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

async fn slipway_services_sync_and_list(backend: Backend) {
    let stack = Stack::start_with(backend, initial_services).await;
    let token = stack.admin_token().await;
    let root = stack.services_dir();
    write_service(
        &root,
        "gamma",
        r#"{"description": "third", "steps": [{"name": "a"}, {"name": "b"}]}"#,
        0o755,
    );
    fs::remove_dir_all(root.join("beta")).unwrap();

    let (ok, out, err) = slipway(&stack, &token, &["services", "sync"]).await;
    assert!(ok, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "added    gamma");
    assert_eq!(lines[1], "deleted  beta");
    assert!(
        lines[2].starts_with("problem  bad-json: config.json is not valid JSON"),
        "{out}"
    );
    assert_eq!(
        lines[3],
        "warning  not-executable: deploy script not-executable/deploy.sh is not executable"
    );
    assert_eq!(lines.len(), 4, "{out}");

    let (ok, out, err) = slipway(&stack, &token, &["services", "sync", "--json"]).await;
    assert!(ok, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["problems"].as_array().unwrap().len(), 1);
    assert_eq!(report["warnings"].as_array().unwrap().len(), 1);

    let (ok, out, err) = slipway(&stack, &token, &["services", "list"]).await;
    assert!(ok, "{err}");
    assert!(out.lines().next().unwrap().contains("NAME"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("gamma") && l.contains("third") && l.contains(" 2 ")),
        "{out}"
    );
    let (ok, out, _) = slipway(&stack, &token, &["services", "list", "--json"]).await;
    assert!(ok);
    let listed: Value = serde_json::from_str(&out).unwrap();
    let names: Vec<&str> = listed["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha", "not-executable", "gamma"]);

    let (ok, _, err) = slipway(&stack, "not-a-token", &["services", "list"]).await;
    assert!(!ok);
    assert!(err.contains("401"), "{err}");
}

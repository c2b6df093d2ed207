//! Operations at the gateway: every response carries a request id (the client's, if
//! sane), the backends log it, and `/metrics` counts requests by route and status,
//! latency by route and token refusals by reason. On SQLite and PostgreSQL.

use tests::{Backend, Stack, on_every_backend};

on_every_backend!(request_ids_and_metrics);

async fn request_ids_and_metrics(backend: Backend) {
    let stack = Stack::start(backend).await;
    let token = stack.admin_token().await;

    // A client's id is kept, echoed, and reaches the backend's log lines.
    let response = stack
        .http
        .post(stack.url("/token"))
        .header("x-request-id", "ci-run-42.step-7")
        .form(&[("username", "admin"), ("password", "wrong password")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["x-request-id"], "ci-run-42.step-7");
    let auth_log = stack.log("auth");
    let line = auth_log
        .lines()
        .find(|l| l.contains("login refused"))
        .unwrap_or_else(|| panic!("no login refusal logged:\n{auth_log}"));
    assert!(line.contains("ci-run-42.step-7"), "{line}");

    // Without one (or with a bad one) the gateway makes one up.
    for sent in [None, Some("bad id with spaces")] {
        let mut request = stack.http.get(stack.url("/users/me")).bearer_auth(&token);
        if let Some(id) = sent {
            request = request.header("x-request-id", id);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        let id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    }

    // Refusals by reason.
    stack.http.get(stack.url("/users/me")).send().await.unwrap();
    stack
        .http
        .get(stack.url("/users/me"))
        .bearer_auth("garbage")
        .send()
        .await
        .unwrap();
    stack.http.get(stack.url("/no/such/path")).send().await.unwrap();

    let response = stack.http.get(stack.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    for expected in [
        r#"slipway_http_requests_total{method="GET",route="/users/me",status="200"} 2"#,
        r#"slipway_http_requests_total{method="GET",route="/users/me",status="401"} 2"#,
        r#"slipway_http_requests_total{method="POST",route="/token",status="401"} 1"#,
        r#"slipway_http_requests_total{method="GET",route="unmatched",status="404"} 1"#,
        r#"slipway_http_request_duration_seconds_count{route="/users/me"} 4"#,
        r#"slipway_http_request_duration_seconds_bucket{route="/users/me",le="+Inf"} 4"#,
        r#"slipway_auth_refusals_total{reason="missing"} 1"#,
        r#"slipway_auth_refusals_total{reason="malformed"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == expected), "missing {expected} in:\n{text}");
    }
}

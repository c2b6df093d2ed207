//! The gateway's one authorization matrix: every HTTP route that needs a token,
//! against every kind of token a caller can hold (user; service of this service and
//! of another; deployment token of this run and of another; config; expired;
//! revoked), each cell with its expected status written out by hand, so the running
//! gateway is checked against the intended policy rather than against its own scope
//! table. (It also holds the cells of what was the fastDeploy deployment routes' own
//! matrix in deployments_http.rs, contract 3.3.)
//! A route in the scope table without a row here fails the test. On SQLite and
//! PostgreSQL, with real deploy scripts holding real deployment tokens.

use tests::support;

use common::scope_table::Access;
use gateway::routes::{Credential, ROUTES};
use reqwest::Method;
use serde_json::{Value, json};
use support::*;
use tests::{Backend, Stack, on_every_backend};

on_every_backend!(every_route_against_every_token_kind);

/// One row: method, path template, the body sent, and the expected answer per token
/// kind, in the order of [`TokenKinds::named`]:
/// user, service, service of another, deployment, deployment of another, config,
/// expired, revoked. Each cell is a status or `A`:
/// - `A`: admitted: the gateway lets it through (whatever the handler then answers,
///   it is not a refusal: never 401 or 403);
/// - `401`: not authenticated for this route: on fastDeploy routes every refusal, on
///   `/v1` an expired or revoked token; the body is fastDeploy's
///   `{"detail": "Could not validate credentials"}` (and on fastDeploy routes the
///   answer carries `WWW-Authenticate: Bearer`);
/// - `403`: on `/v1`, a valid token without the permission or not for this resource;
///   on fastDeploy routes, another service's deployment (`Wrong service token`, with
///   the challenge);
/// - `200`: admitted and served.
///
/// Bodies are chosen so an admitted call changes nothing that later rows depend on
/// (not an object where one is needed, ids that do not exist); the rows that end a
/// deployment come last.
struct Row {
    method: &'static str,
    path: &'static str,
    body: Option<Value>,
    cells: &'static str,
}

fn rows() -> Vec<Row> {
    let row = |method, path, body, cells| Row {
        method,
        path,
        body,
        cells,
    };
    let not_an_object = || Some(json!([]));
    let step = || {
        Some(
            json!({"name": "remote", "state": "success", "started": "2026-01-01T00:00:00Z",
                    "finished": "2026-01-01T00:00:01Z", "message": "from the test"}),
        )
    };
    vec![
        //                                                 user svc svc' dep dep' cfg exp rev
        row("GET", "/users/me", None, "A 401 401 401 401 401 401 401"),
        row(
            "POST",
            "/service-token",
            Some(json!({"service": "alpha", "origin": "matrix"})),
            "A 401 401 401 401 401 401 401",
        ),
        row("GET", "/services/", None, "A 401 401 401 401 401 401 401"),
        row("GET", "/services/names/", None, "A 401 401 401 401 401 401 401"),
        row("POST", "/services/sync", None, "A 401 401 401 401 401 401 401"),
        row(
            "DELETE",
            "/services/{service_id}",
            None,
            "A 401 401 401 401 401 401 401",
        ),
        row("GET", "/deployments/", None, "200 401 401 401 401 401 401 401"),
        row("POST", "/deployments/", not_an_object(), "401 A A 401 401 401 401 401"),
        row(
            "GET",
            "/deployments/{deployment_id}",
            None,
            "401 200 403 401 401 401 401 401",
        ),
        row("GET", "/steps/", None, "200 401 401 401 401 401 401 401"),
        row("POST", "/steps/", step(), "401 401 401 200 200 401 401 401"),
        row("GET", "/deployed-services/", None, "401 401 401 401 401 A 401 401"),
        row("GET", "/v1/tokens", None, "A 403 403 403 403 403 401 401"),
        row("POST", "/v1/tokens", not_an_object(), "A 403 403 403 403 403 401 401"),
        row(
            "POST",
            "/v1/tokens/service",
            not_an_object(),
            "A 403 403 403 403 403 401 401",
        ),
        row("POST", "/v1/tokens/attenuate", not_an_object(), "A A A A A A 401 401"),
        row("DELETE", "/v1/tokens/{id}", None, "A 403 403 403 403 403 401 401"),
        row(
            "POST",
            "/v1/users/me/password",
            not_an_object(),
            "A 403 403 403 403 403 401 401",
        ),
        row("GET", "/v1/users/me", None, "A 403 403 403 403 403 401 401"),
        row("GET", "/v1/users", None, "A 403 403 403 403 403 401 401"),
        row("POST", "/v1/users", not_an_object(), "A 403 403 403 403 403 401 401"),
        // No such user ("alpha"): admitted calls change nothing.
        row(
            "POST",
            "/v1/users/{name}/disable",
            None,
            "A 403 403 403 403 403 401 401",
        ),
        row("POST", "/v1/users/{name}/enable", None, "A 403 403 403 403 403 401 401"),
        row("DELETE", "/v1/users/{name}", None, "A 403 403 403 403 403 401 401"),
        row("GET", "/v1/services", None, "A 403 403 403 403 403 401 401"),
        row("POST", "/v1/services/sync", None, "A 403 403 403 403 403 401 401"),
        row("DELETE", "/v1/services/{id}", None, "A 403 403 403 403 403 401 401"),
        row("GET", "/v1/services/{id}", None, "A 403 403 403 403 403 401 401"),
        row(
            "GET",
            "/v1/services/by-name/{name}",
            None,
            "A 403 403 403 403 403 401 401",
        ),
        row("GET", "/v1/service-names", None, "A 403 403 403 403 403 401 401"),
        row("GET", "/v1/services/watch", None, "A 403 403 403 403 403 401 401"),
        row("GET", "/v1/deployments/watch", None, "A A A A A 403 401 401"),
        row("GET", "/v1/revocations/watch", None, "A 403 403 403 403 403 401 401"),
        row("GET", "/v1/deployed-services", None, "A 403 403 403 403 A 401 401"),
        row("GET", "/v1/deployments", None, "A A A A A 403 401 401"),
        row("POST", "/v1/deployments", not_an_object(), "A A A 403 403 403 401 401"),
        row("GET", "/v1/deployments/{id}", None, "A A 403 A 403 403 401 401"),
        row("GET", "/v1/deployments/{id}/steps", None, "A A 403 A 403 403 401 401"),
        row("GET", "/v1/deployments/{id}/log", None, "A A 403 A 403 403 401 401"),
        row(
            "GET",
            "/v1/deployments/{id}/log/watch",
            None,
            "A A 403 A 403 403 401 401",
        ),
        row("POST", "/v1/steps", not_an_object(), "403 403 403 A A 403 401 401"),
        row("POST", "/v1/keys/rotate", None, "A 403 403 403 403 403 401 401"),
        // Last: these end deployments (finishing is recorded while the gated script
        // still runs; cancelling ends the other run).
        row("PUT", "/deployments/finish/", None, "401 401 401 A A 401 401 401"),
        row(
            "POST",
            "/v1/deployments/{id}/finish",
            None,
            "A 403 403 A 403 403 401 401",
        ),
        row(
            "POST",
            "/v1/deployments/{id}/cancel",
            None,
            "A 403 403 403 403 403 401 401",
        ),
    ]
}

fn gated_services(root: &std::path::Path) {
    let spool = spool(root.parent().unwrap());
    for name in ["alpha", "beta"] {
        write_service(
            root,
            name,
            json!({"steps": [{"name": "build"}]}),
            &gated_script(&spool, name),
        );
    }
}

/// Sends one request; the `WWW-Authenticate` header and the body of a refusal or a
/// 200 (an admitted call may be a stream, which is not read).
async fn send(
    stack: &Stack,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&Value>,
) -> (u16, Option<String>, Value) {
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = stack.http.request(method, stack.url(path)).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    if status == 401 || status == 403 {
        let text = response.text().await.unwrap();
        return (
            status,
            challenge,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        );
    }
    (status, challenge, Value::Null)
}

async fn every_route_against_every_token_kind(backend: Backend) {
    let stack = Stack::start_with(backend, gated_services).await;
    let spool = spool(stack.dir.path());
    let kinds = token_kinds(&stack).await;
    let (a, b) = (kinds.a, kinds.b);

    let rows = rows();
    // Every route that takes a token has exactly one row, and every row is a route.
    for route in ROUTES {
        let has_row = rows
            .iter()
            .filter(|r| (r.method, r.path) == (route.method, route.path))
            .count();
        let needs_row = route.access != Access::Open && route.credential == Credential::Header;
        assert_eq!(
            has_row,
            usize::from(needs_row),
            "{} {}: rows in the matrix",
            route.method,
            route.path
        );
    }

    for row in &rows {
        let cells: Vec<&str> = row.cells.split_whitespace().collect();
        assert_eq!(cells.len(), 8, "{} {}", row.method, row.path);
        let path = row
            .path
            .replace("{deployment_id}", &a.to_string())
            .replace("{service_id}", "999999")
            .replace("/v1/services/{id}", "/v1/services/999999")
            .replace("{name}", "alpha")
            .replace("/v1/tokens/{id}", "/v1/tokens/no-such-token")
            .replace("{id}/cancel", &format!("{b}/cancel"))
            .replace("{id}", &a.to_string());
        let path = if path == "/steps/" && row.method == "GET" {
            format!("/steps/?deployment_id={a}")
        } else {
            path
        };
        let v1 = row.path.starts_with("/v1/");
        // Right to left, so the user's call, which may end a deployment (and so revoke
        // its deployment token), comes after the deployment tokens' calls.
        for ((kind, token), cell) in kinds.named().into_iter().zip(&cells).rev() {
            let (status, challenge, body) = send(&stack, row.method, &path, token, row.body.as_ref()).await;
            let what = format!("{} {path} with a {kind} token", row.method);
            if *cell == "A" {
                assert!(status != 401 && status != 403, "{what}: admitted, got {status} {body}");
                continue;
            }
            let want: u16 = cell.parse().unwrap_or_else(|_| panic!("{what}: unknown cell {cell}"));
            assert_eq!(status, want, "{what}: {body}");
            match status {
                401 => {
                    assert_eq!(body, json!({"detail": "Could not validate credentials"}), "{what}");
                    if !v1 {
                        assert_eq!(challenge.as_deref(), Some("Bearer"), "{what}");
                    }
                }
                403 if !v1 => {
                    assert_eq!(body, json!({"detail": "Wrong service token"}), "{what}");
                    assert_eq!(
                        challenge.as_deref(),
                        Some("Bearer"),
                        "{what}: the 403 carries the challenge"
                    );
                }
                _ => {}
            }
        }
    }
    println!(
        "access matrix: {} routes x 8 token kinds = {} cells",
        rows.len(),
        rows.len() * 8
    );
    release(&spool, "alpha");
    release(&spool, "beta");
}

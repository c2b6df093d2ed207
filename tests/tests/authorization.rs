//! The gateway's authorization matrix: every HTTP route that needs a token, against
//! every kind of token a caller can hold (user; service of this service and of
//! another; deployment token of this run and of another; config; expired; revoked),
//! each cell with its expected outcome written out by hand, so the running gateway
//! is checked against the intended policy rather than against its own scope table.
//! A route in the scope table without a row here fails the test. On SQLite and
//! PostgreSQL, with real deploy scripts holding real deployment tokens.

use tests::support;

use common::scope_table::{Access, Credential, ROUTES};
use reqwest::Method;
use serde_json::{Value, json};
use support::*;
use tests::{Backend, Stack, on_every_backend};

on_every_backend!(every_route_against_every_token_kind);

/// One row: method, path template, the body sent, and a cell per token kind:
/// - `A`: admitted: the gateway lets it through (whatever the handler then answers,
///   it is not a refusal: never 401 or 403);
/// - `R`: refused by the gateway's interceptor: 401 on fastDeploy routes, and on `/v1`
///   401 for an expired or revoked token and 403 for a valid one;
/// - `O`: the token passes the gateway but the resource is not its own: 403.
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
    vec![
        //                                                       user svc svc' dep dep' cfg exp rev
        row("GET", "/users/me", None, "A R R R R R R R"),
        row(
            "POST",
            "/service-token",
            Some(json!({"service": "alpha", "origin": "matrix"})),
            "A R R R R R R R",
        ),
        row("GET", "/services/", None, "A R R R R R R R"),
        row("GET", "/services/names/", None, "A R R R R R R R"),
        row("POST", "/services/sync", None, "A R R R R R R R"),
        row("DELETE", "/services/{service_id}", None, "A R R R R R R R"),
        row("GET", "/deployments/", None, "A R R R R R R R"),
        row("POST", "/deployments/", not_an_object(), "R A A R R R R R"),
        row("GET", "/deployments/{deployment_id}", None, "R A O R R R R R"),
        row("GET", "/steps/", None, "A R R R R R R R"),
        row(
            "POST",
            "/steps/",
            Some(json!({"name": "matrix", "state": "success"})),
            "R R R A A R R R",
        ),
        row("GET", "/deployed-services/", None, "R R R R R A R R"),
        row("GET", "/v1/tokens", None, "A R R R R R R R"),
        row("POST", "/v1/tokens", not_an_object(), "A R R R R R R R"),
        row("POST", "/v1/tokens/service", not_an_object(), "A R R R R R R R"),
        row("POST", "/v1/tokens/attenuate", not_an_object(), "A A A A A A R R"),
        row("DELETE", "/v1/tokens/{id}", None, "A R R R R R R R"),
        row("POST", "/v1/users/me/password", not_an_object(), "A R R R R R R R"),
        row("GET", "/v1/users/me", None, "A R R R R R R R"),
        row("POST", "/v1/users", not_an_object(), "A R R R R R R R"),
        // No such user ("alpha"): admitted calls change nothing.
        row("POST", "/v1/users/{name}/disable", None, "A R R R R R R R"),
        row("POST", "/v1/users/{name}/enable", None, "A R R R R R R R"),
        row("DELETE", "/v1/users/{name}", None, "A R R R R R R R"),
        row("GET", "/v1/services", None, "A R R R R R R R"),
        row("POST", "/v1/services/sync", None, "A R R R R R R R"),
        row("DELETE", "/v1/services/{id}", None, "A R R R R R R R"),
        row("GET", "/v1/services/{id}", None, "A R R R R R R R"),
        row("GET", "/v1/services/by-name/{name}", None, "A R R R R R R R"),
        row("GET", "/v1/service-names", None, "A R R R R R R R"),
        row("GET", "/v1/services/watch", None, "A R R R R R R R"),
        row("GET", "/v1/deployments/watch", None, "A A A A A R R R"),
        row("GET", "/v1/revocations/watch", None, "A R R R R R R R"),
        row("GET", "/v1/deployed-services", None, "A R R R R A R R"),
        row("GET", "/v1/deployments", None, "A A A A A R R R"),
        row("POST", "/v1/deployments", not_an_object(), "A A A R R R R R"),
        row("GET", "/v1/deployments/{id}", None, "A A O A O R R R"),
        row("GET", "/v1/deployments/{id}/steps", None, "A A O A O R R R"),
        row("POST", "/v1/steps", not_an_object(), "R R R A A R R R"),
        row("POST", "/v1/keys/rotate", None, "A R R R R R R R"),
        // Last: these end deployments (finishing is recorded while the gated script
        // still runs; cancelling ends the other run).
        row("PUT", "/deployments/finish/", None, "R R R A A R R R"),
        row("POST", "/v1/deployments/{id}/finish", None, "A R R A O R R R"),
        row("POST", "/v1/deployments/{id}/cancel", None, "A R R R R R R R"),
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

/// Sends one request; the body of a refusal (an admitted call may be a stream, which
/// is not read).
async fn send(stack: &Stack, method: &str, path: &str, token: &str, body: Option<&Value>) -> (u16, Value) {
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = stack.http.request(method, stack.url(path)).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    if status == 401 || status == 403 {
        let text = response.text().await.unwrap();
        return (status, serde_json::from_str(&text).unwrap_or(Value::String(text)));
    }
    (status, Value::Null)
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
        let cells: Vec<char> = row.cells.split_whitespace().flat_map(str::chars).collect();
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
            let (status, body) = send(&stack, row.method, &path, token, row.body.as_ref()).await;
            let what = format!("{} {path} with a {kind} token", row.method);
            match cell {
                'A' => assert!(status != 401 && status != 403, "{what}: admitted, got {status} {body}"),
                'R' => {
                    let valid = !matches!(kind, "expired" | "revoked");
                    let want = if v1 && valid { 403 } else { 401 };
                    assert_eq!(status, want, "{what}: refused at the gateway: {body}");
                    if want == 401 {
                        assert_eq!(body, json!({"detail": "Could not validate credentials"}), "{what}");
                    }
                }
                'O' => assert_eq!(status, 403, "{what}: not its own: {body}"),
                other => panic!("{what}: unknown cell {other}"),
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

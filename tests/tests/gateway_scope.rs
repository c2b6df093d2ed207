//! The gateway enforces the scope table on its own: every RPC (over grpc-web) and
//! every route against no token, token types the entry does not name and tokens
//! without the entry's permission, with the backends stopped for the routes. On
//! SQLite and PostgreSQL.

use std::time::Duration;

use common::{
    scope,
    scope_table::{Access, RPCS},
    token::TokenType,
};
use gateway::routes::{Credential, ROUTES};
use tests::gateway_fixture::*;
use tests::{Backend, Stack, on_every_backend, stack::ADMIN, user_claims};

on_every_backend!(the_gateway_enforces_the_scope_table,);

const TYPES: [TokenType; 4] = [
    TokenType::User,
    TokenType::Service,
    TokenType::Deployment,
    TokenType::Config,
];

/// An authentic token of `token_type` (signed with the auth service's real key),
/// narrowed to `permissions` when given.
fn token_of(stack: &Stack, token_type: TokenType, permissions: Option<Vec<String>>) -> String {
    let mut claims = user_claims(ADMIN);
    claims.token_type = token_type;
    match token_type {
        TokenType::User => {}
        TokenType::Service => claims.service = Some("alpha".into()),
        TokenType::Deployment => claims.deployment = Some(1),
        TokenType::Config => claims.user = None,
    }
    claims.permissions = permissions;
    stack.sign_with_real_key(&claims)
}

/// A user token holding every permission but `missing`.
fn user_without(stack: &Stack, missing: &str) -> String {
    narrowed_without(stack, TokenType::User, missing)
}

/// A token of `token_type` holding every permission but `missing`.
fn narrowed_without(stack: &Stack, token_type: TokenType, missing: &str) -> String {
    let others = scope::ALL
        .iter()
        .filter(|p| **p != missing)
        .map(|p| p.to_string())
        .collect();
    token_of(stack, token_type, Some(others))
}

/// The grpc-status a grpc-web call with an empty message gets in its response headers
/// (where the gateway's own refusals put it), and the message.
async fn grpc_web_answer(stack: &Stack, path: &str, token: Option<&str>) -> (Option<String>, String) {
    let mut request = stack
        .http
        .post(stack.url(path))
        .header("content-type", "application/grpc-web+proto")
        .body(vec![0u8; 5]);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200, "{path}");
    let header = |name: &str| response.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
    (header("grpc-status"), header("grpc-message").unwrap_or_default())
}

async fn grpc_web_status(stack: &Stack, path: &str, token: Option<&str>) -> Option<String> {
    grpc_web_answer(stack, path, token).await.0
}

/// Every entry of the scope table, RPCs and routes, against what the gateway does:
/// no token, every token type the entry does not name, and a token without the
/// entry's permission are all refused; open entries need no token.
async fn the_gateway_enforces_the_scope_table(backend: Backend) {
    let mut stack = Stack::start_with(backend, two_services).await;
    let tokens: Vec<(TokenType, String)> = TYPES.iter().map(|t| (*t, token_of(&stack, *t, None))).collect();

    for rpc in RPCS {
        let (status, message) = grpc_web_answer(&stack, rpc.path, None).await;
        match rpc.access {
            // Forwarded: whatever the backend makes of an empty request, not the
            // gateway's refusal of a missing token.
            Access::Open => assert_ne!(
                message.replace("%20", " "),
                "missing bearer token",
                "{} is open",
                rpc.path
            ),
            Access::Internal => {
                for (_, token) in &tokens {
                    let status = grpc_web_status(&stack, rpc.path, Some(token)).await;
                    assert_eq!(status.as_deref(), Some("7"), "{} is internal", rpc.path);
                }
            }
            Access::AnyToken => {
                assert_eq!(status.as_deref(), Some("16"), "{} needs a token", rpc.path);
                assert_eq!(message.replace("%20", " "), "missing bearer token", "{}", rpc.path);
            }
            Access::Token { types, permission } => {
                assert_eq!(status.as_deref(), Some("16"), "{} needs a token", rpc.path);
                for (token_type, token) in tokens.iter().filter(|(t, _)| !types.contains(t)) {
                    let status = grpc_web_status(&stack, rpc.path, Some(token)).await;
                    assert_eq!(status.as_deref(), Some("7"), "{} with a {token_type} token", rpc.path);
                }
                if let (Some(p), true) = (permission, types.contains(&TokenType::User)) {
                    let status = grpc_web_status(&stack, rpc.path, Some(&user_without(&stack, p.as_str()))).await;
                    assert_eq!(status.as_deref(), Some("7"), "{} without {p}", rpc.path);
                }
            }
        }
    }

    // Routes, checked by the HTTP interceptor with the registry and the deploy service
    // stopped: a refusal that reached either could only be 503, so every exact 401/403
    // below was given by the gateway alone. fastDeploy routes answer every refusal 401
    // (its contract); /v1 routes answer 403 to a valid token the entry does not admit.
    for name in ["registry", "deploy"] {
        stack.proc(name).stop(Duration::from_secs(10));
    }
    let mut checked = 0;
    for route in ROUTES {
        if route.credential == Credential::FirstMessage {
            // The WebSocket: its token comes as a message (tests/websocket.rs).
            continue;
        }
        let path: String = route
            .path
            .split('/')
            .map(|segment| if segment.starts_with('{') { "1" } else { segment })
            .collect::<Vec<_>>()
            .join("/");
        let method = reqwest::Method::from_bytes(route.method.as_bytes()).unwrap();
        let send = |token: Option<String>| {
            let mut request = stack.http.request(method.clone(), stack.url(&path));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            async move {
                let response = request.send().await.unwrap();
                let status = response.status().as_u16();
                // An admitted call may be an endless stream: only refusals are read.
                let body = match status {
                    401 | 403 | 404 | 405 => response.text().await.unwrap(),
                    _ => String::new(),
                };
                (status, body)
            }
        };
        let (anonymous, body) = send(None).await;
        assert_ne!(anonymous, 404, "{} {} is not served: {body}", route.method, route.path);
        assert_ne!(anonymous, 405, "{} {} is not served: {body}", route.method, route.path);
        checked += 1;
        let what = format!("{} {}", route.method, route.path);
        let refused = if route.path.starts_with("/v1/") { 403 } else { 401 };
        match route.access {
            Access::Open => assert_ne!(anonymous, 401, "{what} is open"),
            Access::Internal => panic!("{what}: no route is internal"),
            Access::AnyToken => assert_eq!(anonymous, 401, "{what} needs a token"),
            Access::Token { types, permission } => {
                assert_eq!(anonymous, 401, "{what} needs a token: {body}");
                assert!(body.contains("Not authenticated"), "{what}: {body}");
                for (token_type, token) in tokens.iter().filter(|(t, _)| !types.contains(t)) {
                    let (status, body) = send(Some(token.clone())).await;
                    assert_eq!(status, refused, "{what} with a {token_type} token: {body}");
                }
                for token_type in types {
                    if let Some(p) = permission {
                        let narrowed = narrowed_without(&stack, *token_type, p.as_str());
                        let (status, body) = send(Some(narrowed)).await;
                        assert_eq!(status, refused, "{what}: a {token_type} token without {p}: {body}");
                    }
                }
            }
        }
    }
    assert_eq!(checked, ROUTES.len() - 1, "every route but the WebSocket was checked");
}

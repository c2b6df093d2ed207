//! fastDeploy's WebSocket `/deployments/ws/{client_id}` through the gateway (contract
//! 5) without its faults (contract 8, items 37–43): authentication answers, expiry
//! with a warning, re-auth that extends a session, revocation. On SQLite and
//! PostgreSQL. (What the feed carries: websocket_feed.rs.)

use tests::support;

use std::time::{Duration, Instant};

use common::token::TokenType;
use serde_json::json;
use support::*;
use tests::websocket_fixture::send;
use tests::websocket_fixture::*;
use tests::{Backend, Stack, on_every_backend};
use tokio_tungstenite::{connect_async, tungstenite::protocol::frame::coding::CloseCode};

on_every_backend!(
    handshake_needs_a_uuid,
    authentication_answers,
    expiry_warns_then_closes,
    reauthentication_extends_the_session,
    revoked_token_closes_the_socket,
);

async fn handshake_needs_a_uuid(backend: Backend) {
    let stack = Stack::start(backend).await;
    let refused = connect_async(format!("ws://{}/deployments/ws/not-a-uuid", stack.gateway)).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!("handshake not refused: {other:?}"),
    }
    let mut socket = connect(&stack).await;
    // Connected but unauthenticated: nothing arrives.
    assert_eq!(next(&mut socket, Duration::from_millis(300)).await, Next::Silent);
}

async fn authentication_answers(backend: Backend) {
    let stack = Stack::start(backend).await;
    let admin = stack.admin_token().await;
    let mut socket = connect(&stack).await;
    let ghost = stack.sign_with_real_key(&tests::user_claims("ghost"));
    for token in [
        json!("garbage"),
        json!(signed(&stack, TokenType::User, -120)),
        json!(signed(&stack, TokenType::Service, 600)),
        json!(signed(&stack, TokenType::Deployment, 600)),
        json!(signed(&stack, TokenType::Config, 600)),
        json!(ghost),
        json!(null),
        json!(42),
    ] {
        send(&mut socket, json!({"access_token": token})).await;
        assert_eq!(frame(&mut socket).await, failure(), "token {token}");
    }
    // The same socket is still open and authenticates with a real user token.
    send(&mut socket, json!({"access_token": admin})).await;
    assert_eq!(frame(&mut socket).await, success("admin"));
    // Other JSON is ignored, never echoed or broadcast.
    send(&mut socket, json!({"hello": "world"})).await;
    assert_eq!(next(&mut socket, Duration::from_millis(300)).await, Next::Silent);
}

async fn expiry_warns_then_closes(backend: Backend) {
    let stack = Stack::start(backend).await;
    let signed_at = Instant::now();
    let short = signed(&stack, TokenType::User, 10);
    let mut socket = authenticated(&stack, &short).await;
    // Less than a minute left: the warning comes at once, before the expiry.
    let warning = frame(&mut socket).await;
    assert_eq!(warning["type"], "warning", "{warning}");
    assert!(warning["detail"].as_str().unwrap().contains("expires in"), "{warning}");
    let warned = signed_at.elapsed();
    // The token's whole life may be left after the warning: wait longer than that.
    let expired = match next(&mut socket, Duration::from_secs(20)).await {
        Next::Frame(value) => value,
        other => panic!("expected the expiry frame, got {other:?}"),
    };
    assert_eq!(
        expired,
        json!({"type": "warning", "detail": "Your session has expired."})
    );
    let closed = signed_at.elapsed();
    assert!(
        closed >= Duration::from_secs(9),
        "closed before the token expired: {closed:?}"
    );
    assert!(
        closed - warned >= Duration::from_secs(3),
        "warned only {:?} before",
        closed - warned
    );
    assert_eq!(
        next(&mut socket, Duration::from_secs(5)).await,
        Next::Closed(Some(CloseCode::Normal))
    );
}

async fn reauthentication_extends_the_session(backend: Backend) {
    let stack = Stack::start(backend).await;
    let short = signed(&stack, TokenType::User, 6);
    let mut socket = authenticated(&stack, &short).await;
    assert_eq!(frame(&mut socket).await["type"], "warning");
    let fresh = stack.admin_token().await;
    send(&mut socket, json!({"access_token": fresh})).await;
    assert_eq!(frame(&mut socket).await, success("admin"));
    // The first token's expiry passes: no warning, no close.
    assert_eq!(next(&mut socket, Duration::from_secs(9)).await, Next::Silent);
    send(&mut socket, json!({"access_token": fresh})).await;
    assert_eq!(frame(&mut socket).await, success("admin"), "the socket is alive");
}

async fn revoked_token_closes_the_socket(backend: Backend) {
    let stack = Stack::start(backend).await;
    let admin = stack.admin_token().await;
    let doomed = stack.admin_token().await;
    let mut kept = authenticated(&stack, &admin).await;
    let mut socket = authenticated(&stack, &doomed).await;
    revoke(&stack, &admin, &doomed, "/users/me").await;
    assert_eq!(
        next(&mut socket, Duration::from_secs(5)).await,
        Next::Closed(Some(CloseCode::Policy))
    );
    assert_eq!(
        next(&mut kept, Duration::from_millis(300)).await,
        Next::Silent,
        "the other socket stays"
    );
}

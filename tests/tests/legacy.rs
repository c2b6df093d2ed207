//! Migration from fastDeploy: with legacy acceptance configured, a fastDeploy HS256
//! user token (signed with its SECRET_KEY) works on fastDeploy routes until the
//! cutoff, each use is logged as legacy, and nothing else accepts HS256. Off by
//! default. On SQLite and PostgreSQL.

use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::{Value, json};
use tests::{Backend, Process, Stack, on_every_backend};

on_every_backend!(
    legacy_tokens_work_until_the_cutoff,
    legacy_tokens_are_refused_by_default
);

const SECRET: &str = "the-old-fastdeploy-secret";

fn fastdeploy_token(secret: &str, claims: Value) -> String {
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn in_secs(secs: i64) -> i64 {
    jsonwebtoken::get_current_timestamp() as i64 + secs
}

async fn me(stack: &Stack, token: &str) -> (u16, Value) {
    let response = stack
        .http
        .get(stack.url("/users/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

/// `POST /v1/tokens/exchange`: the status and the body's text.
async fn exchange(stack: &Stack, token: &str) -> (u16, String) {
    let response = stack
        .http
        .post(stack.url("/v1/tokens/exchange"))
        .json(&json!({ "token": token }))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

async fn start(backend: Backend, until: &str) -> Stack {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let stack = Stack::builder(backend)
        .env(
            Process::Auth,
            "SLIPWAY_LEGACY_SECRET_FILE",
            secret_file.to_string_lossy(),
        )
        .env(Process::Auth, "SLIPWAY_LEGACY_UNTIL", until)
        .env(Process::Gateway, "SLIPWAY_LEGACY_TOKENS", "true")
        .start()
        .await;
    // The secret file is read at start; the temp dir may go.
    drop(dir);
    stack
}

async fn legacy_tokens_work_until_the_cutoff(backend: Backend) {
    let stack = start(backend, "2999-01-01T00:00:00Z").await;
    let token = fastdeploy_token(SECRET, json!({"type": "user", "user": "admin", "exp": in_secs(600)}));
    let (status, body) = me(&stack, &token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "admin");
    // Used again: served from the exchange cache, still fine.
    assert_eq!(me(&stack, &token).await.0, 200);
    assert!(stack.log("auth").contains("legacy fastDeploy token used"));
    assert!(!stack.log("auth").contains(SECRET) && !stack.log("gateway").contains(SECRET));

    // The exchange is also offered as such: `POST /v1/tokens/exchange`, no other token.
    let (status, minted) = exchange(&stack, &token).await;
    assert_eq!(status, 200, "{minted}");
    let minted: Value = serde_json::from_str(&minted).unwrap();
    let exchanged = minted["token"].as_str().unwrap();
    assert_ne!(exchanged, token);
    assert_eq!(me(&stack, exchanged).await.0, 200, "{minted}");

    // Wrong secret, expired, unknown user, and a deployment token: refused as fastDeploy would.
    for bad in [
        fastdeploy_token("guess", json!({"type": "user", "user": "admin", "exp": in_secs(600)})),
        fastdeploy_token(SECRET, json!({"type": "user", "user": "admin", "exp": in_secs(-10)})),
        fastdeploy_token(SECRET, json!({"type": "user", "user": "mallory", "exp": in_secs(600)})),
        fastdeploy_token(
            SECRET,
            json!({"type": "deployment", "deployment": 1, "exp": in_secs(600)}),
        ),
    ] {
        let (status, body) = me(&stack, &bad).await;
        assert_eq!(
            (status, body),
            (401, json!({"detail": "Could not validate credentials"}))
        );
    }

    // The exchanged token is recorded as a legacy exchange.
    let admin = stack.admin_token().await;
    let response = stack
        .http
        .get(stack.url("/v1/tokens"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    let listed: Value = response.json().await.unwrap();
    let exchanged: Vec<&Value> = listed["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["name"] == "legacy exchange")
        .collect();
    assert_eq!(
        exchanged.len(),
        2,
        "one exchange by the gateway (then its cache), one asked for: {listed}"
    );
    assert_eq!(exchanged[0]["createdBy"], "legacy:admin");
}

async fn legacy_tokens_are_refused_by_default(backend: Backend) {
    // Configured but past the cutoff...
    let stack = start(backend, "2020-01-01T00:00:00Z").await;
    let token = fastdeploy_token(SECRET, json!({"type": "user", "user": "admin", "exp": in_secs(600)}));
    assert_eq!(me(&stack, &token).await.0, 401);
    drop(stack);
    // ...and not configured at all.
    let stack = Stack::start(backend).await;
    assert_eq!(me(&stack, &token).await.0, 401);
    let (status, body) = exchange(&stack, &token).await;
    assert!((400..500).contains(&status), "{status} {body}");
    assert!(!body.contains("token\""), "no token minted: {body}");
}

//! The token registry through the gateway: every login is recorded and listable,
//! revoking a token by id makes the gateway and the auth service refuse it, and /v1
//! answers 403 to a valid token of the wrong kind. On SQLite and PostgreSQL.

use std::time::{Duration, Instant};

use common::token::TokenType;
use proto::auth::v1::{WhoAmIRequest, auth_service_client::AuthServiceClient};
use serde_json::{Value, json};
use tests::{Backend, Stack, on_every_backend, user_claims};

on_every_backend!(
    revoked_tokens_are_refused_everywhere,
    v1_tokens_refusals,
    key_rotation_keeps_old_tokens_valid
);

fn jti(token: &str) -> String {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let payload = URL_SAFE_NO_PAD.decode(token.split('.').nth(1).unwrap()).unwrap();
    let claims: Value = serde_json::from_slice(&payload).unwrap();
    claims["jti"].as_str().unwrap().to_owned()
}

async fn get(stack: &Stack, path: &str, token: &str) -> (u16, Value) {
    let response = stack.http.get(stack.url(path)).bearer_auth(token).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

async fn delete(stack: &Stack, path: &str, token: &str) -> (u16, Value) {
    let response = stack
        .http
        .delete(stack.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

async fn revoked_tokens_are_refused_everywhere(backend: Backend) {
    let stack = Stack::start(backend).await;
    let a = stack.admin_token().await;
    let b = stack.admin_token().await;
    let (ja, jb) = (jti(&a), jti(&b));

    let (status, list) = get(&stack, "/v1/tokens", &b).await;
    assert_eq!(status, 200, "{list}");
    let tokens = list["tokens"].as_array().unwrap();
    for id in [&ja, &jb] {
        let row = tokens
            .iter()
            .find(|t| t["id"] == **id)
            .unwrap_or_else(|| panic!("{id} not listed: {list}"));
        assert_eq!(row["type"], "TOKEN_TYPE_USER");
        assert_eq!(row["createdBy"], "admin");
        // proto3 canonical JSON: RFC 3339 in UTC with "Z".
        let expires = row["expiresAt"].as_str().unwrap();
        assert!(expires.ends_with('Z'), "{row}");
        chrono::DateTime::parse_from_rfc3339(expires).unwrap();
    }

    let (status, body) = delete(&stack, &format!("/v1/tokens/{ja}"), &b).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"revokedIds": [ja]}));

    // The auth service refuses it at once (it checks its own registry)...
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", stack.auth))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut request = tonic::Request::new(WhoAmIRequest {});
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {a}").parse().unwrap());
    let refused = AuthServiceClient::new(channel).who_am_i(request).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    // ...and the gateway as soon as the revocation feed reaches it (target: 1 s; the
    // poll allows a loaded CI machine some slack, the figure is printed).
    let started = Instant::now();
    loop {
        let response = stack
            .http
            .get(stack.url("/users/me"))
            .bearer_auth(&a)
            .send()
            .await
            .unwrap();
        if response.status() == 401 {
            assert_eq!(
                response.json::<Value>().await.unwrap(),
                json!({"detail": "Could not validate credentials"})
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "revoked token still accepted after 3 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("revocation reached the gateway in {:?}", started.elapsed());
    let (status, me) = get(&stack, "/users/me", &b).await;
    assert_eq!(
        (status, me["name"].clone()),
        (200, json!("admin")),
        "the other token still works"
    );

    // Revoking again changes nothing; the revoked token shows up with include_revoked.
    let (status, body) = delete(&stack, &format!("/v1/tokens/{ja}"), &b).await;
    assert_eq!(status, 200);
    assert!(body.get("revokedIds").is_none_or(|ids| ids == &json!([])), "{body}");
    let (_, list) = get(&stack, "/v1/tokens", &b).await;
    assert!(list["tokens"].as_array().unwrap().iter().all(|t| t["id"] != *ja));
    let (_, list) = get(&stack, "/v1/tokens?include_revoked=true&type=user", &b).await;
    let row = list["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == *ja)
        .cloned()
        .unwrap();
    assert!(row["revokedAt"].is_string(), "{row}");
}

async fn v1_tokens_refusals(backend: Backend) {
    let stack = Stack::start(backend).await;
    let token = stack.admin_token().await;
    let (_, before) = get(&stack, "/v1/tokens", &token).await;

    let (status, body) = delete(&stack, "/v1/tokens/no-such-token", &token).await;
    assert_eq!(
        (status, body),
        (404, json!({"detail": "token no-such-token not found"}))
    );
    let (_, after) = get(&stack, "/v1/tokens", &token).await;
    assert_eq!(before, after, "a refused revoke changed something");

    let (status, body) = get(&stack, "/v1/tokens?type=bogus", &token).await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = get(&stack, "/v1/tokens?unknown=1", &token).await;
    assert_eq!(status, 400);

    let response = stack.http.get(stack.url("/v1/tokens")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    // A valid token of another type: 401 on fastDeploy routes, 403 on /v1.
    let service = stack.sign_with_real_key(&common::token::Claims {
        token_type: TokenType::Service,
        service: Some("hello".into()),
        origin: Some("github".into()),
        ..user_claims("admin")
    });
    let (status, body) = get(&stack, "/v1/tokens", &service).await;
    assert_eq!(
        (status, body),
        (403, json!({"detail": "a service token may not make this call"}))
    );
    let (status, _) = delete(&stack, "/v1/tokens/x", &service).await;
    assert_eq!(status, 403);
    let (status, _) = get(&stack, "/users/me", &service).await;
    assert_eq!(status, 401);
}

async fn key_rotation_keeps_old_tokens_valid(backend: Backend) {
    let stack = Stack::start(backend).await;
    let old = stack.admin_token().await;
    let old_kid = jsonwebtoken::decode_header(&old).unwrap().kid.unwrap();

    let response = stack
        .http
        .post(stack.url("/v1/keys/rotate"))
        .bearer_auth(&old)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let new_kid = response.json::<Value>().await.unwrap()["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(new_kid, old_kid);

    // New tokens carry the new key id; the gateway has never seen it and fetches the
    // key set again on its first use.
    let new = stack.admin_token().await;
    assert_eq!(jsonwebtoken::decode_header(&new).unwrap().kid.unwrap(), new_kid);
    for token in [&new, &old] {
        let (status, me) = get(&stack, "/users/me", token).await;
        assert_eq!((status, me["name"].clone()), (200, json!("admin")), "{}", stack.logs());
    }
    let (status, jwks) = get(&stack, "/.well-known/jwks.json", &new).await;
    assert_eq!(status, 200);
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, [old_kid.as_str(), new_kid.as_str()]);
    assert!(
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["kty"] == "OKP" && k["crv"] == "Ed25519" && k.get("d").is_none())
    );

    // Only a user token may rotate keys.
    let response = stack.http.post(stack.url("/v1/keys/rotate")).send().await.unwrap();
    assert_eq!(response.status(), 401);
}

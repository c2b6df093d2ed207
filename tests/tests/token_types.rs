//! The four token types end to end: config tokens minted over HTTP, attenuation that
//! only narrows, debug introspection and every bad config-token variant refused. On
//! SQLite and PostgreSQL. (Deployment and service tokens, password changes and the
//! CLI: token_issuance.rs.)

use tests::support;

use serde_json::json;
use support::send;
use tests::grpc::claims_of;
use tests::token_fixture::*;
use tests::{Backend, Stack, on_every_backend};

on_every_backend!(
    config_tokens_attenuation_and_debug,
    config_tokens_refuse_every_bad_variant,
);

async fn config_tokens_attenuation_and_debug(backend: Backend) {
    let stack = Stack::start(backend).await;
    let admin = stack.admin_token().await;

    // A config token with extra claims, listed in the registry.
    let (status, minted) = post(
        &stack,
        "/v1/tokens",
        Some(&admin),
        json!({"expirationInDays": 7, "extraClaims": {"team": "ops"}, "name": "monitoring"}),
    )
    .await;
    assert_eq!(status, 200, "{minted}");
    let config = minted["token"].as_str().unwrap().to_owned();
    let claims = claims_of(&config);
    assert_eq!(claims["type"], "config");
    assert_eq!(claims["ext"], json!({"team": "ops"}));
    assert_eq!(claims["user"], "admin");
    let life = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert_eq!(life, 7 * 86400);
    assert_eq!(minted["info"]["name"], "monitoring");
    let (_, listed) = get(&stack, "/v1/tokens?type=config", &admin).await;
    let listed = listed["tokens"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], claims["jti"]);

    // A config token is not a user token: 401 on fastDeploy routes, 403 on /v1.
    let (status, _) = get(&stack, "/users/me", &config).await;
    assert_eq!(status, 401);
    let (status, _) = get(&stack, "/v1/tokens", &config).await;
    assert_eq!(status, 403);
    // Bad requests change nothing.
    let (status, body) = post(&stack, "/v1/tokens", Some(&admin), json!({"expirationInDays": 366})).await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = post(&stack, "/v1/tokens", Some(&admin), json!({"services": ["../x"]})).await;
    assert_eq!(status, 400);
    let (status, _) = post(&stack, "/v1/tokens", Some(&config), json!({})).await;
    assert_eq!(status, 403, "a config token cannot mint");

    // Debug: valid, with the type's permissions.
    let (status, report) = post(&stack, "/v1/tokens/debug", None, json!({"token": config})).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["valid"], true, "{report}");
    assert_eq!(report["permissions"], json!(["deployed-services:read"]));
    assert_eq!(report["header"]["alg"], "EdDSA");
    assert_eq!(report["info"]["createdBy"], "admin");

    // Attenuate the admin's user token to read-only tokens for 60 s.
    let (status, derived) = post(
        &stack,
        "/v1/tokens/attenuate",
        Some(&admin),
        json!({"permissions": ["tokens:read"], "lifetimeSeconds": "60"}),
    )
    .await;
    assert_eq!(status, 200, "{derived}");
    let reader = derived["token"].as_str().unwrap().to_owned();
    let reader_claims = claims_of(&reader);
    assert_eq!(reader_claims["parent"], claims_of(&admin)["jti"]);
    assert_eq!(reader_claims["permissions"], json!(["tokens:read"]));
    assert!(reader_claims["exp"].as_i64().unwrap() <= reader_claims["iat"].as_i64().unwrap() + 60);
    let (status, _) = get(&stack, "/v1/tokens", &reader).await;
    assert_eq!(status, 200);
    let jti = claims["jti"].as_str().unwrap();
    let (status, _) = send(
        &stack,
        reqwest::Method::DELETE,
        &format!("/v1/tokens/{jti}"),
        Some(&reader),
        None,
    )
    .await;
    assert_eq!(status, 403, "the derived token may only read");
    // Never wider: a permission it lacks, a longer life.
    let (status, body) = post(
        &stack,
        "/v1/tokens/attenuate",
        Some(&reader),
        json!({"permissions": ["tokens:revoke"]}),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (status, _) = post(
        &stack,
        "/v1/tokens/attenuate",
        Some(&reader),
        json!({"lifetimeSeconds": "3600"}),
    )
    .await;
    assert_eq!(status, 403);

    // Revoking the parent revokes the derived token.
    let admin_jti = claims_of(&admin)["jti"].as_str().unwrap().to_owned();
    let other_admin = stack.admin_token().await;
    let (status, body) = send(
        &stack,
        reqwest::Method::DELETE,
        &format!("/v1/tokens/{admin_jti}"),
        Some(&other_admin),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let revoked: Vec<&str> = body["revokedIds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(revoked.contains(&reader_claims["jti"].as_str().unwrap()), "{body}");
    wait_status(&stack, "/v1/tokens", &reader, 401).await;
    let (_, report) = post(&stack, "/v1/tokens/debug", None, json!({"token": reader})).await;
    // proto3 JSON leaves out fields at their default, `false` included.
    assert_eq!(report.get("valid"), None, "{report}");
    assert_eq!(report["reason"], "token revoked");
    // Debug explains invalid tokens too, and refuses what is not a JWT.
    let (head, signature) = config.rsplit_once('.').unwrap();
    let flipped = if signature.starts_with('A') { 'B' } else { 'A' };
    let tampered = format!("{head}.{flipped}{}", &signature[1..]);
    let (_, report) = post(&stack, "/v1/tokens/debug", None, json!({"token": tampered})).await;
    assert_eq!(report.get("valid"), None, "{report}");
    assert_eq!(report["reason"], "bad signature");
    let (status, _) = post(&stack, "/v1/tokens/debug", None, json!({"token": "garbage"})).await;
    assert_eq!(status, 400);
}

async fn config_tokens_refuse_every_bad_variant(backend: Backend) {
    let stack = Stack::start(backend).await;
    let admin = stack.admin_token().await;
    let mut good = tests::user_claims("admin");
    good.token_type = common::token::TokenType::Config;
    good.sub = "config:admin".into();
    let path = "/deployed-services/";
    let (status, body) = get(&stack, path, &stack.sign_with_real_key(&good)).await;
    assert_eq!(status, 200, "the good token passes: {body}");

    let invalid = json!({"detail": "Could not validate credentials"});
    let mut bad = tests::bad_tokens::variants(&stack, &good, &tests::bad_tokens::public_x(&stack).await);
    bad.push(("a user token", admin.clone()));
    let mut service = good.clone();
    service.token_type = common::token::TokenType::Service;
    service.service = Some("web".into());
    bad.push(("a service token", stack.sign_with_real_key(&service)));

    // Revoked, and derived from a revoked token.
    let (_, minted) = post(&stack, "/v1/tokens", Some(&admin), json!({})).await;
    let revoked = minted["token"].as_str().unwrap().to_owned();
    let (_, derived) = post(
        &stack,
        "/v1/tokens/attenuate",
        Some(&revoked),
        json!({"lifetimeSeconds": "600"}),
    )
    .await;
    let child = derived["token"].as_str().unwrap().to_owned();
    let (status, _) = get(&stack, path, &child).await;
    assert_eq!(status, 200, "the derived token works before its parent is revoked");
    let jti = claims_of(&revoked)["jti"].as_str().unwrap().to_owned();
    let (status, _) = send(
        &stack,
        reqwest::Method::DELETE,
        &format!("/v1/tokens/{jti}"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, 200);
    wait_status(&stack, path, &revoked, 401).await;
    bad.push(("revoked", revoked));
    bad.push(("derived from a revoked token", child));

    for (what, token) in bad {
        let (status, body) = get(&stack, path, &token).await;
        assert_eq!((status, &body), (401, &invalid), "{what}");
    }
}

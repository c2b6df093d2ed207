//! Who may mint what: a token never mints a token with a permission or a life it lacks
//! itself (a full user token minting service and config tokens is the exception), a
//! token minted by an attenuated token dies with it, each token type as minter; and
//! `/v1/tokens/debug` shows registry data only for tokens whose signature verifies.
//! On SQLite and PostgreSQL.

use tests::support;

use common::identity::{Credential, DEPLOY_SERVICE};
use proto::auth::v1::{
    MintConfigTokenRequest, MintDeploymentTokenRequest, MintServiceTokenRequest, auth_service_client::AuthServiceClient,
};
use reqwest::Method;
use serde_json::{Value, json};
use support::{send, write_service};
use tests::{
    Backend, Process, Stack,
    grpc::{bearer, channel, claims_of},
    on_every_backend,
};

on_every_backend!(
    each_token_type_as_minter,
    debug_shows_registry_data_only_for_verified_tokens
);

async fn post(stack: &Stack, path: &str, token: &str, body: Value) -> (u16, Value) {
    send(stack, Method::POST, path, Some(token), Some(body)).await
}

fn token(minted: &Value) -> String {
    minted["token"].as_str().unwrap().to_owned()
}

async fn attenuate(stack: &Stack, from: &str, body: Value) -> String {
    let (status, minted) = post(stack, "/v1/tokens/attenuate", from, body).await;
    assert_eq!(status, 200, "{minted}");
    token(&minted)
}

fn service(days: u32, permissions: &[&str]) -> Value {
    json!({"service": "web", "origin": "ci", "expirationInDays": days, "permissions": permissions})
}

async fn each_token_type_as_minter(backend: Backend) {
    // User tokens of two days, so a narrowed one can live long enough to mint.
    let stack = Stack::builder(backend)
        .services(|root| write_service(root, "web", json!({}), "#!/bin/sh\nexit 0\n"))
        .env(Process::Auth, "SLIPWAY_USER_TOKEN_MINUTES", "2880")
        .start()
        .await;
    let admin = stack.admin_token().await;

    // A full user token (a login): service and config tokens as before, no parent.
    let (status, minted) = post(&stack, "/v1/tokens", &admin, json!({"expirationInDays": 365})).await;
    assert_eq!(status, 200, "{minted}");
    assert!(claims_of(&token(&minted)).get("parent").is_none());
    let (status, minted) = post(&stack, "/v1/tokens/service", &admin, service(180, &[])).await;
    assert_eq!(status, 200, "{minted}");
    let full_service = token(&minted);

    // The case: narrowed to tokens:mint for 60 s, it mints nothing it lacks.
    let narrow = attenuate(
        &stack,
        &admin,
        json!({"permissions": ["tokens:mint"], "lifetimeSeconds": "60"}),
    )
    .await;
    let (_, before) = send(&stack, Method::GET, "/v1/tokens", Some(&admin), None).await;
    let (status, body) = post(&stack, "/v1/tokens", &narrow, json!({"expirationInDays": 365})).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("deployed-services:read"),
        "{body}"
    );
    let (status, body) = post(&stack, "/v1/tokens/service", &narrow, service(1, &["deployments:read"])).await;
    assert_eq!(status, 403, "{body}");
    // Directly at the auth service too.
    let mut auth = AuthServiceClient::new(channel(stack.auth).await);
    let refused = auth
        .mint_config_token(bearer(
            MintConfigTokenRequest {
                expiration_in_days: 365,
                ..Default::default()
            },
            &narrow,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    let (_, after) = send(&stack, Method::GET, "/v1/tokens", Some(&admin), None).await;
    assert_eq!(before, after, "nothing minted");

    // Narrowed with what it takes: it mints within its permissions and its life, and
    // what it mints is its child.
    let minter = attenuate(
        &stack,
        &admin,
        json!({"permissions": ["tokens:mint", "deployments:read", "deployed-services:read"]}),
    )
    .await;
    let (status, body) = post(&stack, "/v1/tokens/service", &minter, service(1, &["deployments:read"])).await;
    assert_eq!(
        (status, body),
        (
            403,
            json!({"detail": "minting for a service needs services:read, to check that it exists"})
        )
    );
    let minter = attenuate(
        &stack,
        &admin,
        json!({"permissions": ["tokens:mint", "services:read", "deployments:read", "deployed-services:read"]}),
    )
    .await;
    let (status, body) = post(&stack, "/v1/tokens/service", &minter, service(1, &[])).await;
    assert_eq!(status, 403, "deployments:start by default, which it lacks: {body}");
    let (status, body) = post(&stack, "/v1/tokens/service", &minter, service(3, &["deployments:read"])).await;
    assert_eq!(status, 403, "three days outlive it: {body}");
    let (status, minted) = post(&stack, "/v1/tokens/service", &minter, service(1, &["deployments:read"])).await;
    assert_eq!(status, 200, "{minted}");
    let child_service = token(&minted);
    let minter_jti = claims_of(&minter)["jti"].clone();
    assert_eq!(claims_of(&child_service)["parent"], minter_jti);
    assert_eq!(minted["info"]["parentId"], minter_jti);
    let (status, minted) = post(&stack, "/v1/tokens", &minter, json!({"expirationInDays": 1})).await;
    assert_eq!(status, 200, "{minted}");
    let child_config = token(&minted);
    assert_eq!(claims_of(&child_config)["parent"], minter_jti);
    // An origin-pinned minter keeps its children on that origin.
    let pinned = attenuate(&stack, &minter, json!({"origin": "ci"})).await;
    let (status, body) = post(
        &stack,
        "/v1/tokens/service",
        &pinned,
        json!({"service": "web", "origin": "laptop", "expirationInDays": 1, "permissions": ["deployments:read"]}),
    )
    .await;
    assert_eq!(status, 403, "{body}");

    // Revoking the narrowed minter revokes what it minted; the full login's mints live.
    support::revoke(&stack, &admin, &minter, "/v1/deployments").await;
    for child in [&child_service, &child_config] {
        let (_, report) = post(&stack, "/v1/tokens/debug", &admin, json!({"token": child})).await;
        assert_eq!(report["reason"], "token revoked", "{report}");
    }
    assert_eq!(
        send(&stack, Method::GET, "/deployed-services/", Some(&child_config), None)
            .await
            .0,
        401
    );
    assert_eq!(
        send(&stack, Method::GET, "/v1/deployments", Some(&full_service), None)
            .await
            .0,
        200
    );

    // Service, config and deployment tokens: no minting; attenuation only narrows.
    let (_, minted) = post(&stack, "/v1/tokens", &admin, json!({})).await;
    let config = token(&minted);
    let credential = Credential::load(DEPLOY_SERVICE, &stack.dir.path().join("deploy-service.key")).unwrap();
    let deployment = auth
        .mint_deployment_token(credential.request(MintDeploymentTokenRequest {
            deployment_id: 1,
            service: "web".into(),
            lifetime_seconds: 600,
        }))
        .await
        .unwrap()
        .into_inner()
        .token;
    for (kind, held, has) in [
        ("service", &full_service, "deployments:read"),
        ("config", &config, "deployed-services:read"),
        ("deployment", &deployment, "deployments:read"),
    ] {
        for path in ["/v1/tokens", "/v1/tokens/service"] {
            let (status, body) = post(&stack, path, held, service(1, &[])).await;
            assert_eq!(status, 403, "{kind} at {path}: {body}");
        }
        let refused = auth
            .mint_service_token(bearer(
                MintServiceTokenRequest {
                    service: "web".into(),
                    origin: "ci".into(),
                    expiration_in_days: 1,
                    ..Default::default()
                },
                held,
            ))
            .await
            .unwrap_err();
        // A valid token of a type the scope table does not admit: PERMISSION_DENIED, as
        // at the gateway (the one refusal mapping of `common::authz`).
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{kind}");
        for wider in [
            json!({"permissions": ["tokens:mint"]}),
            json!({"lifetimeSeconds": "99999999"}),
        ] {
            let (status, body) = post(&stack, "/v1/tokens/attenuate", held, wider).await;
            assert_eq!(status, 403, "{kind}: {body}");
        }
        let narrower = attenuate(&stack, held, json!({"permissions": [has], "lifetimeSeconds": "60"})).await;
        assert_eq!(claims_of(&narrower)["parent"], claims_of(held)["jti"], "{kind}");
    }
}

async fn debug_shows_registry_data_only_for_verified_tokens(backend: Backend) {
    let stack = Stack::start(backend).await;
    let admin = stack.admin_token().await;
    let (status, report) = post(&stack, "/v1/tokens/debug", &admin, json!({"token": admin})).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        report["info"]["id"],
        claims_of(&admin)["jti"],
        "the real token: {report}"
    );

    // The same claims (so the same, real jti) unsigned or signed by anyone else.
    let claims: common::token::Claims = serde_json::from_value(claims_of(&admin)).unwrap();
    let public_x = tests::bad_tokens::public_x(&stack).await;
    let forged = [
        "another token's signature",
        "alg none",
        "hs256 with the public key as secret",
        "unknown key",
    ];
    let mut variants = tests::bad_tokens::variants(&stack, &claims, &public_x);
    let other = stack.admin_token().await;
    let (head, _) = admin.rsplit_once('.').unwrap();
    let (_, signature) = other.rsplit_once('.').unwrap();
    variants.push(("another token's signature", format!("{head}.{signature}")));
    let mut seen = 0;
    for (what, token) in variants.iter().filter(|(what, _)| forged.contains(what)) {
        seen += 1;
        let (status, report) = post(&stack, "/v1/tokens/debug", &admin, json!({"token": token})).await;
        assert_eq!(status, 200, "{what}: {report}");
        assert!(report.get("info").is_none(), "{what} got registry data: {report}");
        assert!(report.get("valid").is_none(), "{what}: {report}");
        assert_eq!(report["claims"]["jti"], claims_of(&admin)["jti"], "{what}");
    }
    assert_eq!(seen, forged.len());
}

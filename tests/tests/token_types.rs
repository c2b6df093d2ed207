//! The four token types end to end: config tokens minted over HTTP, deployment tokens
//! only for the deploy service's credential, attenuation that only narrows, debug
//! introspection, password changes revoking a user's tokens, service tokens only for
//! existing services, and the `slipway tokens` CLI. On SQLite and PostgreSQL.

use tests::support;

use std::time::{Duration, Instant};

use common::identity::{Credential, DEPLOY_SERVICE};
use proto::auth::v1::{
    CreateUserRequest, MintDeploymentTokenRequest, RevokeTokensRequest, auth_service_client::AuthServiceClient,
};
use serde_json::{Value, json};
use support::{send, slipway_cli};
use tests::grpc::{bearer, claims_of};
use tests::{Backend, Stack, on_every_backend};

on_every_backend!(
    config_tokens_attenuation_and_debug,
    deployment_tokens_only_for_the_deploy_service,
    password_change_revokes_the_users_tokens,
    service_tokens_only_for_existing_services,
    the_cli_mints_lists_debugs_and_revokes,
    config_tokens_refuse_every_bad_variant,
);

async fn post(stack: &Stack, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    send(stack, reqwest::Method::POST, path, token, Some(body)).await
}

async fn get(stack: &Stack, path: &str, token: &str) -> (u16, Value) {
    send(stack, reqwest::Method::GET, path, Some(token), None).await
}

/// Polls until `path` answers `want` for `token` (revocations reach the gateway
/// through the feed, within about a second).
async fn wait_status(stack: &Stack, path: &str, token: &str, want: u16) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = get(stack, path, token).await;
        if status == want {
            return;
        }
        assert!(Instant::now() < deadline, "{path} still {status} {body}, want {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn auth_client(stack: &Stack) -> AuthServiceClient<tonic::transport::Channel> {
    AuthServiceClient::new(tests::grpc::channel(stack.auth).await)
}

fn credential(stack: &Stack) -> Credential {
    Credential::load(DEPLOY_SERVICE, &stack.dir.path().join("deploy-service.key")).unwrap()
}

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

async fn deployment_tokens_only_for_the_deploy_service(backend: Backend) {
    let stack = Stack::start(backend).await;
    let admin = stack.admin_token().await;
    let mut auth = auth_client(&stack).await;
    let ask = MintDeploymentTokenRequest {
        deployment_id: 42,
        service: "web".into(),
        lifetime_seconds: 600,
    };

    // No credential, a user token, or a forged credential: refused.
    let refused = auth.mint_deployment_token(ask.clone()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    let refused = auth
        .mint_deployment_token(bearer(ask.clone(), &admin))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    let forged_path = stack.dir.path().join("forged.key");
    Credential::create_if_missing(&forged_path).unwrap();
    let forged = Credential::load(DEPLOY_SERVICE, &forged_path).unwrap();
    let refused = auth
        .mint_deployment_token(forged.request(ask.clone()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);

    // The deploy service's credential: a deployment token bound to that run.
    let credential = credential(&stack);
    let minted = auth
        .mint_deployment_token(credential.request(ask.clone()))
        .await
        .unwrap()
        .into_inner();
    let claims = claims_of(&minted.token);
    assert_eq!(claims["type"], "deployment");
    assert_eq!(claims["deployment"], 42);
    assert_eq!(claims["service"], "web");
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 600);
    let bad = MintDeploymentTokenRequest {
        lifetime_seconds: 30 * 24 * 3600,
        ..ask.clone()
    };
    let refused = auth.mint_deployment_token(credential.request(bad)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);

    // A deployment token is not a user token anywhere.
    let (status, _) = get(&stack, "/users/me", &minted.token).await;
    assert_eq!(status, 401);
    let (status, _) = get(&stack, "/v1/tokens", &minted.token).await;
    assert_eq!(status, 403);

    // The credential revokes deployment tokens, and nothing else.
    let admin_jti = claims_of(&admin)["jti"].as_str().unwrap().to_owned();
    let refused = auth
        .revoke_tokens(credential.request(RevokeTokensRequest { ids: vec![admin_jti] }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    let (status, _) = get(&stack, "/users/me", &admin).await;
    assert_eq!(status, 200, "the admin's token was not revoked");
    let id = minted.info.unwrap().id;
    let revoked = auth
        .revoke_tokens(credential.request(RevokeTokensRequest { ids: vec![id.clone()] }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked.revoked_ids, vec![id]);
    let (_, report) = post(&stack, "/v1/tokens/debug", None, json!({"token": minted.token})).await;
    assert_eq!(report["reason"], "token revoked");
}

async fn password_change_revokes_the_users_tokens(backend: Backend) {
    let stack = Stack::start(backend).await;
    let admin = stack.admin_token().await;
    let mut auth = auth_client(&stack).await;
    auth.create_user(bearer(
        CreateUserRequest {
            name: "bob".into(),
            password: "bobs old password".into(),
        },
        &admin,
    ))
    .await
    .unwrap();
    let (status, body) = stack.login("bob", "bobs old password").await;
    assert_eq!(status, 200, "{body}");
    let bob = body["access_token"].as_str().unwrap().to_owned();
    let (status, minted) = post(&stack, "/v1/tokens", Some(&bob), json!({})).await;
    assert_eq!(status, 200, "{minted}");
    let bobs_config = minted["token"].as_str().unwrap().to_owned();

    let change = |old: &str, new: &str| json!({"oldPassword": old, "newPassword": new});
    let (status, _) = post(
        &stack,
        "/v1/users/me/password",
        Some(&bob),
        change("wrong one!", "bobs new password"),
    )
    .await;
    assert_eq!(status, 403);
    let (status, body) = post(
        &stack,
        "/v1/users/me/password",
        Some(&bob),
        change("bobs old password", "short"),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = stack.login("bob", "bobs old password").await;
    assert_eq!(status, 200, "refused changes changed nothing");

    let (status, body) = post(
        &stack,
        "/v1/users/me/password",
        Some(&bob),
        change("bobs old password", "bobs new password"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // Bob's two sessions (the second login above included) and the config token he minted.
    assert_eq!(body["revokedTokens"], 3, "{body}");
    wait_status(&stack, "/users/me", &bob, 401).await;
    let (_, report) = post(&stack, "/v1/tokens/debug", None, json!({"token": bobs_config})).await;
    assert_eq!(report["reason"], "token revoked");
    let (status, _) = stack.login("bob", "bobs old password").await;
    assert_eq!(status, 401);
    let (status, _) = stack.login("bob", "bobs new password").await;
    assert_eq!(status, 200);
    // The admin's tokens are untouched.
    let (status, _) = get(&stack, "/users/me", &admin).await;
    assert_eq!(status, 200);
}

async fn service_tokens_only_for_existing_services(backend: Backend) {
    let stack = Stack::start_with(backend, |dir| {
        let web = dir.join("web");
        std::fs::create_dir_all(&web).unwrap();
        std::fs::write(web.join("config.json"), r#"{"description": "web"}"#).unwrap();
        let script = web.join("deploy.sh");
        std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    })
    .await;
    let admin = stack.admin_token().await;

    // Contract 2.5: 200 {"service_token", "token_type"} for an existing service.
    let (status, body) = post(
        &stack,
        "/service-token",
        Some(&admin),
        json!({"service": "web", "origin": "github", "expiration_in_days": "7"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "bearer");
    let token = body["service_token"].as_str().unwrap();
    let claims = claims_of(token);
    assert_eq!(claims["type"], "service");
    assert_eq!(claims["service"], "web");
    assert_eq!(claims["origin"], "github");
    assert_eq!(claims["user"], "admin");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        7 * 86400
    );
    let (_, listed) = get(&stack, "/v1/tokens?service=web", &admin).await;
    assert_eq!(listed["tokens"][0]["id"], claims["jti"], "{listed}");

    // fastDeploy minted for unknown names; Slipway refuses them.
    let (status, body) = post(
        &stack,
        "/service-token",
        Some(&admin),
        json!({"service": "nope", "origin": "github"}),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (_, listed) = get(&stack, "/v1/tokens?type=service", &admin).await;
    assert_eq!(
        listed["tokens"].as_array().unwrap().len(),
        1,
        "nothing minted: {listed}"
    );

    // The contract's 401/422 cases, in its evaluation order.
    let (status, body) = post(&stack, "/service-token", None, json!({"service": "web", "origin": "x"})).await;
    assert_eq!((status, body), (401, json!({"detail": "Not authenticated"})));
    let (status, body) = post(
        &stack,
        "/service-token",
        Some(token),
        json!({"service": "web", "origin": "x"}),
    )
    .await;
    assert_eq!(
        (status, body),
        (401, json!({"detail": "Could not validate credentials"}))
    );
    let (status, body) = post(
        &stack,
        "/service-token",
        Some(&admin),
        json!({"service": "web", "origin": "x", "expiration_in_days": 181}),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(body["detail"][0]["type"], "less_than_equal");
    let (status, body) = post(&stack, "/service-token", Some(&admin), json!({"origin": "x"})).await;
    assert_eq!(status, 422);
    assert_eq!(body["detail"][0]["loc"], json!(["body", "service"]));
    // Invalid JSON: 422 with a valid token; without one the body is never read (401).
    for (token, want) in [(Some(&admin), 422), (None, 401)] {
        let mut request = stack
            .http
            .post(stack.url("/service-token"))
            .header("content-type", "application/json")
            .body("{not json");
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        assert_eq!(request.send().await.unwrap().status(), want);
    }

    // Over /v1 with narrower permissions: a service token that may only read.
    let (status, minted) = post(
        &stack,
        "/v1/tokens/service",
        Some(&admin),
        json!({"service": "web", "origin": "ci", "expirationInDays": 1, "permissions": ["deployments:read"]}),
    )
    .await;
    assert_eq!(status, 200, "{minted}");
    assert_eq!(
        claims_of(minted["token"].as_str().unwrap())["permissions"],
        json!(["deployments:read"])
    );
    let (status, _) = post(
        &stack,
        "/v1/tokens/service",
        Some(&admin),
        json!({"service": "web", "origin": "ci", "expirationInDays": 1, "permissions": ["services:sync"]}),
    )
    .await;
    assert_eq!(status, 400, "beyond what a service token can have");
}

async fn the_cli_mints_lists_debugs_and_revokes(backend: Backend) {
    let stack = Stack::start(backend).await;
    let admin = stack.admin_token().await;
    let slipway = |args: &[&str]| slipway_cli(&stack, &admin, args);
    let (code, out, err) = slipway(&["tokens", "create", "config", "--days", "3", "--claim", "team=ops"]);
    assert_eq!(code, Some(0), "{err}");
    let token = out.trim().to_owned();
    assert_eq!(claims_of(&token)["ext"], json!({"team": "ops"}));
    let jti = claims_of(&token)["jti"].as_str().unwrap().to_owned();

    let (code, out, err) = slipway(&["tokens", "list", "--type", "config", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed["tokens"][0]["id"], jti.as_str());
    let (code, out, _) = slipway(&["tokens", "list"]);
    assert_eq!(code, Some(0));
    assert!(out.contains(&jti) && out.contains("config"), "{out}");

    let (code, out, _) = slipway(&["tokens", "debug", &token]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("valid now"), "{out}");
    assert!(out.contains("deployed-services:read"), "{out}");

    let (code, out, err) = slipway(&["tokens", "revoke", &jti]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(&format!("revoked {jti}")), "{out}");
    let (_, out, _) = slipway(&["tokens", "debug", &token]);
    assert!(out.starts_with("NOT valid: token revoked"), "{out}");

    // Errors are plain and the exit code says so.
    let (code, _, err) = slipway(&["tokens", "revoke", "no-such-token"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("404") && err.contains("not found"), "{err}");

    let (code, out, err) = slipway(&["keys", "rotate"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("now signing with key "), "{out}");
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

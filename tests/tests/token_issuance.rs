//! Who gets which token: deployment tokens only for the deploy service's credential,
//! service tokens only for existing services, a password change revoking the user's
//! tokens, and the `slipway tokens` CLI. On SQLite and PostgreSQL.

use tests::support;

use common::identity::{Credential, DEPLOY_SERVICE};
use proto::auth::v1::{
    CreateUserRequest, MintDeploymentTokenRequest, RevokeTokensRequest, auth_service_client::AuthServiceClient,
};
use serde_json::{Value, json};
use support::slipway_cli;
use tests::grpc::{bearer, claims_of};
use tests::token_fixture::*;
use tests::{Backend, Stack, on_every_backend};

on_every_backend!(
    deployment_tokens_only_for_the_deploy_service,
    password_change_revokes_the_users_tokens,
    service_tokens_only_for_existing_services,
    the_cli_mints_lists_debugs_and_revokes,
);

async fn auth_client(stack: &Stack) -> AuthServiceClient<tonic::transport::Channel> {
    AuthServiceClient::new(tests::grpc::channel(stack.auth).await)
}

fn credential(stack: &Stack) -> Credential {
    Credential::load(DEPLOY_SERVICE, &stack.dir.path().join("deploy-service.key")).unwrap()
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

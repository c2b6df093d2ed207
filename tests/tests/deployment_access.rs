//! Deployments over gRPC: who may start and read what, and deployment tokens that
//! die with their run. On SQLite and PostgreSQL.

use common::token::{Claims, TokenType};
use proto::deploy::v1::{self as pb};
use serde_json::json;
use tests::deploy_rpc::*;
use tests::grpc::bearer;
use tests::{Backend, on_every_backend, user_claims};
use tonic::Code;

on_every_backend!(who_may_start_and_read_what,);

async fn who_may_start_and_read_what(backend: Backend) {
    let f = Fixture::start(backend, |dir| {
        write_service(
            dir,
            "alpha",
            json!({}),
            "echo '{\"name\": \"done\", \"state\": \"success\"}'\n",
        );
        write_service(dir, "beta", json!({}), "exit 0\n");
    })
    .await;
    let (alpha, beta) = (f.service_token("alpha").await, f.service_token("beta").await);
    let d = f.start_with(&alpha, json!({})).await.unwrap();
    f.finished(d.id).await;
    let mut deploy = f.deploy().await;
    let get = |id: i64, token: &str| bearer(pb::GetDeploymentRequest { id }, token);

    // Another service's deployment and a missing one look the same to a service token.
    let other = deploy.get_deployment(get(d.id, &beta)).await.unwrap_err();
    let missing = deploy.get_deployment(get(999_999, &beta)).await.unwrap_err();
    assert_eq!(
        (other.code(), other.message()),
        (Code::PermissionDenied, "Wrong service token")
    );
    assert_eq!((missing.code(), missing.message()), (other.code(), other.message()));
    let own = deploy.get_deployment(get(d.id, &alpha)).await.unwrap().into_inner();
    assert_eq!(own.id, d.id);
    assert_eq!(own.steps.len(), 1, "with its steps");
    let by_user = deploy.get_deployment(get(999_999, &f.admin)).await.unwrap_err();
    assert_eq!(by_user.code(), Code::NotFound);

    // Starting: a service token for an unknown service is not a valid token (as
    // fastDeploy's 401); a user names the service; a service token only its own.
    let mut ghost = user_claims("admin");
    ghost.token_type = TokenType::Service;
    ghost.service = Some("ghost".into());
    ghost.user = Some("admin".into());
    ghost.sub = "service:ghost".into();
    let ghost = f.stack.sign_with_real_key(&ghost);
    assert_eq!(
        f.start_with(&ghost, json!({})).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let start = |service: &str, token: &str| {
        bearer(
            pb::StartDeploymentRequest {
                env: None,
                service: service.into(),
            },
            token,
        )
    };
    assert_eq!(
        deploy
            .start_deployment(start("ghost", &f.admin))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert_eq!(
        deploy.start_deployment(start("", &f.admin)).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(
        deploy.start_deployment(start("beta", &alpha)).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    let by_admin = deploy
        .start_deployment(start("beta", &f.admin))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((by_admin.service.as_str(), by_admin.user.as_str()), ("beta", "admin"));
    assert_eq!(
        serde_json::to_value(by_admin.context.unwrap()).unwrap(),
        json!({"env": {}})
    );
    f.finished(by_admin.id).await;
    let _third = f.start_with(&alpha, json!({})).await.unwrap();

    // Listing: a user sees all, by pages in id order; a service token its own only.
    let list = |service: &str, size: u32, page: &str, token: &str| {
        bearer(
            pb::ListDeploymentsRequest {
                service: service.into(),
                page_size: size,
                page_token: page.into(),
                ..Default::default()
            },
            token,
        )
    };
    let mut ids = Vec::new();
    let mut page = String::new();
    loop {
        let answer = deploy
            .list_deployments(list("", 1, &page, &f.admin))
            .await
            .unwrap()
            .into_inner();
        ids.extend(answer.deployments.iter().map(|d| d.id));
        if answer.next_page_token.is_empty() {
            break;
        }
        page = answer.next_page_token;
    }
    assert_eq!(ids.len(), 3);
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    let as_beta = deploy
        .list_deployments(list("", 0, "", &beta))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        as_beta.deployments.iter().map(|d| d.id).collect::<Vec<_>>(),
        [by_admin.id]
    );
    let refused = deploy.list_deployments(list("alpha", 0, "", &beta)).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let bad = deploy.list_deployments(list("", 0, "x", &f.admin)).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let alpha_only = deploy
        .list_deployments(list("alpha", 0, "", &f.admin))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(alpha_only.deployments.len(), 2);

    // No token, a forged one, a config token: refused.
    let none = deploy
        .get_deployment(tonic::Request::new(pb::GetDeploymentRequest { id: d.id }))
        .await
        .unwrap_err();
    assert_eq!(none.code(), Code::Unauthenticated);
    let mut config: Claims = user_claims("admin");
    config.token_type = TokenType::Config;
    let config = f.stack.sign_with_real_key(&config);
    let refused = deploy.get_deployment(get(d.id, &config)).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
}

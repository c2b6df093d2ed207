//! fastDeploy's web frontend sends `"origin": ""` from its service-token form when the
//! field is left empty; fastDeploy mints the token and so does Slipway (issue 11.10).
//! The record stores the empty origin, and the token starts deployments. On SQLite and
//! PostgreSQL.

use tests::support;

use reqwest::Method;
use sea_orm::EntityTrait;
use serde_json::json;
use support::{call, jti, start, write_service};
use tests::{Backend, Stack, grpc::claims_of, on_every_backend};

on_every_backend!(an_empty_origin_is_accepted_as_fastdeploy_does);

async fn an_empty_origin_is_accepted_as_fastdeploy_does(backend: Backend) {
    let stack = Stack::start_with(backend, |dir| {
        write_service(dir, "web", json!({"description": "web"}), "#!/bin/sh\nexit 0\n");
    })
    .await;
    let admin = stack.admin_token().await;

    // The frontend's body, as it sends it.
    let body = json!({"service": "web", "origin": "", "expiration_in_days": 1});
    let (status, _, minted) = call(&stack, Method::POST, "/service-token", Some(&admin), Some(body)).await;
    assert_eq!(status, 200, "{minted}");
    let token = minted["service_token"].as_str().unwrap().to_owned();
    assert_eq!(claims_of(&token)["origin"], "");

    let db = sea_orm::Database::connect(stack.database_url("auth")).await.unwrap();
    let record = auth_service::storage::tokens::Entity::find_by_id(jti(&token))
        .one(&db)
        .await
        .unwrap()
        .expect("the token is recorded");
    assert_eq!(record.origin.as_deref(), Some(""));
    assert_eq!(record.service.as_deref(), Some("web"));

    let started = start(&stack, &token, None).await;
    assert_eq!(started["origin"], "", "{started}");
    assert_eq!(started["user"], "admin", "{started}");
}

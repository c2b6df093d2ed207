//! Native gRPC through the gateway: tonic clients pointed at the gateway's one HTTP
//! listener (h2c) log in, list, sync and watch services; refused calls are answered by
//! the gateway itself, before any backend (proved with the backend stopped); the deploy
//! service's credential never passes the edge; a server stream outlives the gateway's
//! unary deadline. On SQLite and PostgreSQL.

use std::{fs, time::Duration};

use common::identity::{Credential as DeployCredential, DEPLOY_SERVICE};
use proto::{
    auth::v1::{self as auth, auth_service_client::AuthServiceClient},
    registry::v1::{self as reg, registry_service_client::RegistryServiceClient},
};
use tests::gateway_fixture::*;
use tests::grpc::{attenuated, bearer};
use tests::{Backend, Process, Stack, on_every_backend, stack::ADMIN, stack::ADMIN_PASSWORD};
use tonic::{Code, transport::Channel};

on_every_backend!(
    login_list_and_sync_over_native_grpc,
    server_streams_outlive_the_unary_deadline,
    refused_calls_never_reach_a_backend,
    deploy_service_credential_never_passes_the_gateway,
);

async fn channel(addr: std::net::SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn jti(token: &str) -> String {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let payload = URL_SAFE_NO_PAD.decode(token.split('.').nth(1).unwrap()).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    claims["jti"].as_str().unwrap().to_owned()
}

async fn login(auth: &mut AuthServiceClient<Channel>) -> String {
    auth.login(auth::LoginRequest {
        username: ADMIN.into(),
        password: ADMIN_PASSWORD.into(),
    })
    .await
    .unwrap()
    .into_inner()
    .access_token
}

fn names(services: &[reg::Service]) -> Vec<String> {
    services.iter().map(|s| s.name.clone()).collect()
}

/// The services directory's folder names, sorted.
fn folders(stack: &Stack) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(stack.services_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

async fn login_list_and_sync_over_native_grpc(backend: Backend) {
    let stack = Stack::start_with(backend, two_services).await;
    let gateway = channel(stack.gateway).await;
    let mut auth = AuthServiceClient::new(gateway.clone());
    let mut registry = RegistryServiceClient::new(gateway.clone());

    let wrong = auth
        .login(auth::LoginRequest {
            username: ADMIN.into(),
            password: "wrong".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    assert_eq!(wrong.message(), "Incorrect username or password");
    let token = login(&mut auth).await;
    let me = auth.who_am_i(bearer(auth::WhoAmIRequest {}, &token)).await.unwrap();
    assert_eq!(me.into_inner().name, ADMIN);
    let jwks = auth.get_jwks(auth::GetJwksRequest {}).await.unwrap().into_inner();
    assert!(!jwks.keys.is_empty() && jwks.keys.iter().all(|k| k.alg == "EdDSA"));

    let listed = registry
        .list_services(bearer(reg::ListServicesRequest::default(), &token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&listed.services), folders(&stack));
    assert_eq!(names(&listed.services), ["alpha", "beta"]);

    write_service(&stack.services_dir(), "gamma");
    let report = registry
        .sync_services(bearer(reg::SyncServicesRequest {}, &token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(report.added, ["gamma"], "{report:?}");
    assert!(report.problems.is_empty(), "{report:?}");
    let listed = registry
        .list_services(bearer(reg::ListServicesRequest::default(), &token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&listed.services), folders(&stack));

    // A config token minted over gRPC reads deployed services through the gateway.
    let config = auth
        .mint_config_token(bearer(
            auth::MintConfigTokenRequest {
                services: vec!["alpha".into()],
                expiration_in_days: 1,
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner()
        .token;
    let deployed = registry
        .list_deployed_services(bearer(reg::ListDeployedServicesRequest {}, &config))
        .await
        .unwrap()
        .into_inner();
    assert!(deployed.deployed_services.is_empty());
    // ...and nothing else.
    let refused = registry
        .list_services(bearer(reg::ListServicesRequest::default(), &config))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

    // Anything the gateway does not route is UNIMPLEMENTED (health is per backend).
    let health = tonic_health::pb::health_client::HealthClient::new(gateway)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap_err();
    assert_eq!(health.code(), Code::Unimplemented);
}

async fn server_streams_outlive_the_unary_deadline(backend: Backend) {
    let stack = Stack::builder(backend)
        .services(two_services)
        .env(Process::Gateway, "SLIPWAY_BACKEND_TIMEOUT_MS", "1000")
        .start()
        .await;
    let gateway = channel(stack.gateway).await;
    let token = login(&mut AuthServiceClient::new(gateway.clone())).await;
    let mut registry = RegistryServiceClient::new(gateway);
    let mut events = registry
        .watch_services(bearer(reg::WatchServicesRequest::default(), &token))
        .await
        .unwrap()
        .into_inner();

    // Longer than the gateway's 1 s backend deadline: the stream must stay open.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    write_service(&stack.services_dir(), "delta");
    let report = registry
        .sync_services(bearer(reg::SyncServicesRequest {}, &token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(report.added, ["delta"]);
    let event = tokio::time::timeout(Duration::from_secs(10), events.message())
        .await
        .expect("an event within 10 s")
        .unwrap()
        .expect("the stream is still open");
    let service = event.service.unwrap();
    assert_eq!((service.name.as_str(), event.deleted), ("delta", false));

    let alpha = registry
        .list_services(bearer(reg::ListServicesRequest::default(), &token))
        .await
        .unwrap()
        .into_inner()
        .services
        .into_iter()
        .find(|s| s.name == "alpha")
        .unwrap();
    registry
        .delete_service(bearer(reg::DeleteServiceRequest { id: alpha.id }, &token))
        .await
        .unwrap();
    let event = tokio::time::timeout(Duration::from_secs(10), events.message())
        .await
        .expect("an event within 10 s")
        .unwrap()
        .unwrap();
    assert_eq!(event.service.unwrap().id, alpha.id);
    assert!(event.deleted);
}

async fn refused_calls_never_reach_a_backend(backend: Backend) {
    let mut stack = Stack::start_with(backend, two_services).await;
    let gateway = channel(stack.gateway).await;
    let mut auth = AuthServiceClient::new(gateway.clone());
    let admin = login(&mut auth).await;
    let service = auth
        .mint_service_token(bearer(
            auth::MintServiceTokenRequest {
                service: "alpha".into(),
                origin: "ci".into(),
                expiration_in_days: 1,
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .token;
    // A user token narrowed to reading deployments, derived over gRPC.
    let request = auth::AttenuateTokenRequest {
        permissions: vec!["deployments:read".into()],
        ..Default::default()
    };
    let reader = attenuated(stack.auth, &admin, request).await;

    // With the registry stopped, a call that reached it could only fail UNAVAILABLE:
    // every other answer below comes from the gateway alone.
    stack.proc("registry").stop(Duration::from_secs(10));
    let mut registry = RegistryServiceClient::new(gateway.clone());
    let anonymous = registry
        .list_services(reg::ListServicesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated, "{anonymous:?}");
    let garbage = registry
        .list_services(bearer(reg::ListServicesRequest::default(), "not.a.token"))
        .await
        .unwrap_err();
    assert_eq!(garbage.code(), Code::Unauthenticated, "{garbage:?}");
    let wrong_type = registry
        .sync_services(bearer(reg::SyncServicesRequest {}, &service))
        .await
        .unwrap_err();
    assert_eq!(wrong_type.code(), Code::PermissionDenied, "{wrong_type:?}");
    assert!(wrong_type.message().contains("service token"), "{wrong_type:?}");
    let narrowed = registry
        .list_services(bearer(reg::ListServicesRequest::default(), &reader))
        .await
        .unwrap_err();
    assert_eq!(narrowed.code(), Code::PermissionDenied, "{narrowed:?}");
    assert!(narrowed.message().contains("services:read"), "{narrowed:?}");
    let internal = registry
        .publish_deployed_service(bearer(
            reg::PublishDeployedServiceRequest {
                deployment_id: 1,
                service: "alpha".into(),
                config: None,
            },
            &admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(internal.code(), Code::PermissionDenied, "{internal:?}");

    // An allowed call does reach the stopped backend: UNAVAILABLE, not a hang.
    let down = tokio::time::timeout(
        Duration::from_secs(15),
        registry.list_services(bearer(reg::ListServicesRequest::default(), &admin)),
    )
    .await
    .expect("an answer, not a hang")
    .unwrap_err();
    assert_eq!(down.code(), Code::Unavailable, "{down:?}");
    assert_eq!(down.message(), "registry service unavailable");
    let log = stack.log("gateway");
    assert!(log.matches("grpc call refused at the gateway").count() >= 5, "{log}");
    assert!(!log.contains(&admin) && !log.contains(&reader), "no token in the log");

    // Back up: the same allowed call goes through again.
    stack.restart("registry").await;
    let listed = registry
        .list_services(bearer(reg::ListServicesRequest::default(), &admin))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&listed.services), ["alpha", "beta"]);
}

async fn deploy_service_credential_never_passes_the_gateway(backend: Backend) {
    let stack = Stack::start_with(backend, two_services).await;
    let credential = DeployCredential::load(DEPLOY_SERVICE, &stack.dir.path().join("deploy-service.key")).unwrap();
    let gateway = channel(stack.gateway).await;
    let mut auth_via_gateway = AuthServiceClient::new(gateway.clone());
    let mut registry_via_gateway = RegistryServiceClient::new(gateway);
    let mut auth_direct = AuthServiceClient::new(channel(stack.auth).await);
    let mut registry_direct = RegistryServiceClient::new(channel(stack.registry).await);
    let admin = login(&mut auth_via_gateway).await;
    let publish = || reg::PublishDeployedServiceRequest {
        deployment_id: 7,
        service: "alpha".into(),
        config: None,
    };

    // The credential is real: the registry accepts it directly...
    registry_direct
        .publish_deployed_service(credential.request(publish()))
        .await
        .unwrap();
    // ...and the gateway refuses it, alone or with a user token.
    let refused = registry_via_gateway
        .publish_deployed_service(credential.request(publish()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let mut with_token = bearer(publish(), &admin);
    credential.attach(with_token.metadata_mut());
    let refused = registry_via_gateway
        .publish_deployed_service(with_token)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let mint = || auth::MintDeploymentTokenRequest {
        deployment_id: 7,
        service: "alpha".into(),
        lifetime_seconds: 60,
    };
    auth_direct
        .mint_deployment_token(credential.request(mint()))
        .await
        .unwrap();
    let refused = auth_via_gateway
        .mint_deployment_token(credential.request(mint()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

    // Where the credential would change the outcome, the gateway drops it: with the
    // credential the auth service takes the caller for the deploy service, which may
    // revoke deployment tokens only; through the gateway the admin's own right counts.
    let victim = login(&mut auth_via_gateway).await;
    let revoke = || {
        let mut request = bearer(
            auth::RevokeTokensRequest {
                ids: vec![jti(&victim)],
            },
            &admin,
        );
        credential.attach(request.metadata_mut());
        request
    };
    let direct = auth_direct.revoke_tokens(revoke()).await.unwrap_err();
    assert_eq!(direct.code(), Code::PermissionDenied, "{direct:?}");
    let revoked = auth_via_gateway.revoke_tokens(revoke()).await.unwrap().into_inner();
    assert_eq!(revoked.revoked_ids, [jti(&victim)]);
    let log = stack.log("gateway");
    assert!(log.contains("service credential presented at the edge"), "{log}");
    assert!(!log.contains(&admin), "no token in the log");
}

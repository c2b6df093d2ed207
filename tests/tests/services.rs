//! What every service promises whatever it does: gRPC health and server reflection on
//! its port, a clean stop on SIGTERM; and the auth service's legacy-password path.

use tests::{Backend, Stack, on_every_backend};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

on_every_backend!(
    services_reflect_report_health_and_stop_cleanly,
    fastdeploy_bcrypt_password_logs_in_and_is_rehashed
);

async fn listed_services(addr: std::net::SocketAddr) -> Vec<String> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().expect("one reflection response");
    match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => list.service.into_iter().map(|s| s.name).collect(),
        other => panic!("unexpected reflection answer: {other:?}"),
    }
}

async fn services_reflect_report_health_and_stop_cleanly(backend: Backend) {
    let mut stack = Stack::start(backend).await; // start() already waited for health
    for (addr, service) in [
        (stack.auth, "slipway.auth.v1.AuthService"),
        (stack.registry, "slipway.registry.v1.RegistryService"),
        (stack.deploy, "slipway.deploy.v1.DeployService"),
    ] {
        let names = listed_services(addr).await;
        assert!(
            names.iter().any(|n| n == service),
            "{service} not reflected at {addr}: {names:?}"
        );
        assert!(names.iter().any(|n| n == "grpc.health.v1.Health"), "{names:?}");
    }
    let killed = stack.stop();
    assert!(killed.is_empty(), "needed SIGKILL: {killed:?}\n{}", stack.logs());
    for (name, line) in [
        ("auth", r#"stopped service="auth-service""#),
        ("registry", r#"stopped service="registry-service""#),
        ("deploy", r#"stopped service="deploy-service""#),
        ("gateway", r#"stopped service="gateway""#),
    ] {
        assert!(
            stack.log(name).contains(line),
            "{name} did not shut down gracefully:\n{}",
            stack.log(name)
        );
    }
}

async fn fastdeploy_bcrypt_password_logs_in_and_is_rehashed(backend: Backend) {
    let stack = Stack::start(backend).await;
    // A user migrated from fastDeploy, with a passlib-style bcrypt hash.
    let url = stack.database_url("auth");
    let store = auth_service::storage::Store::open(&url).await.unwrap();
    let legacy = bcrypt::hash("old-fastdeploy-pw", 4).unwrap();
    store.create_user("carol", &legacy).await.unwrap();

    assert_eq!(stack.login("carol", "wrong").await.0, 401);
    assert_eq!(
        store.find_user("carol").await.unwrap().unwrap().password_hash,
        legacy,
        "a refused login changes nothing"
    );
    let (status, body) = stack.login("carol", "old-fastdeploy-pw").await;
    assert_eq!(status, 200, "{body}");
    let stored = store.find_user("carol").await.unwrap().unwrap().password_hash;
    assert!(stored.starts_with("$argon2id$"), "hash not replaced: {stored}");
    // And the same password still works against the new hash.
    assert_eq!(stack.login("carol", "old-fastdeploy-pw").await.0, 200);
}

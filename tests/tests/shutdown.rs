//! Every service stops within 5 s of SIGTERM whatever streams are open, and ends them
//! cleanly: its stream clients see UNAVAILABLE or the end of the stream, never a hang
//! or a broken connection. The gateway's streams (native gRPC, grpc-web, NDJSON) and
//! each backend's own (the auth service's revocation feeds, which the other services
//! follow too, the registry's and the deploy service's watches). On SQLite and
//! PostgreSQL.

use std::time::Duration;

use proto::{
    auth::v1::{self as auth, auth_service_client::AuthServiceClient},
    deploy::v1::{self as dep, deploy_service_client::DeployServiceClient},
    registry::v1::{self as reg, registry_service_client::RegistryServiceClient},
};
use tests::{
    Backend, Stack,
    grpc::{bearer, channel, grpc_web_trailers},
    on_every_backend,
};
use tokio::task::JoinHandle;
use tonic::{Code, Streaming};

on_every_backend!(every_service_stops_within_5_s_with_streams_open);

/// Streams opened on each process.
const PER_SERVICE: usize = 5;

/// Waits for a quiet gRPC stream to end; returns how, or panics on anything unclean.
fn follow<T: std::fmt::Debug + Send + 'static>(what: String, mut stream: Streaming<T>) -> JoinHandle<String> {
    tokio::spawn(async move {
        loop {
            match stream.message().await {
                // The revocation feed's snapshot and heartbeats.
                Ok(Some(_)) if what.contains("revocations") => continue,
                Ok(Some(message)) => panic!("{what}: unexpected message {message:?}"),
                Ok(None) => return format!("{what}: end of stream"),
                Err(status) if status.code() == Code::Unavailable => return format!("{what}: {status:?}"),
                Err(status) => panic!("{what}: not a clean end: {status:?}"),
            }
        }
    })
}

/// Stops `name` with SIGTERM, requiring it to exit within 5 s, then requires every
/// client stream it served to have ended cleanly by then.
async fn stop_and_check(stack: &mut Stack, name: &str, clients: Vec<JoinHandle<String>>) {
    let exited = tokio::task::block_in_place(|| stack.proc(name).stop(Duration::from_secs(5)));
    assert!(exited, "{name} still running 5 s after SIGTERM\n{}", stack.logs());
    for client in clients {
        let how = tokio::time::timeout(Duration::from_secs(1), client)
            .await
            .unwrap_or_else(|_| panic!("a stream of {name} still open after it exited"))
            .unwrap();
        assert!(!how.is_empty());
    }
}

async fn every_service_stops_within_5_s_with_streams_open(backend: Backend) {
    let mut stack = Stack::start(backend).await;
    let admin = stack.admin_token().await;
    let gateway = channel(stack.gateway).await;
    let (mut auth_clients, mut registry_clients, mut deploy_clients, mut gateway_clients) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for n in 0..PER_SERVICE {
        let feed = AuthServiceClient::new(channel(stack.auth).await)
            .watch_revocations(bearer(auth::WatchRevocationsRequest::default(), &admin))
            .await
            .unwrap()
            .into_inner();
        auth_clients.push(follow(format!("auth revocations {n}"), feed));
        let services = RegistryServiceClient::new(channel(stack.registry).await)
            .watch_services(bearer(reg::WatchServicesRequest::default(), &admin))
            .await
            .unwrap()
            .into_inner();
        registry_clients.push(follow(format!("registry watch {n}"), services));
        let events = DeployServiceClient::new(channel(stack.deploy).await)
            .watch_events(bearer(dep::WatchEventsRequest::default(), &admin))
            .await
            .unwrap()
            .into_inner();
        deploy_clients.push(follow(format!("deploy watch {n}"), events));
        let proxied = DeployServiceClient::new(gateway.clone())
            .watch_events(bearer(dep::WatchEventsRequest::default(), &admin))
            .await
            .unwrap()
            .into_inner();
        gateway_clients.push(follow(format!("gateway gRPC watch {n}"), proxied));

        let mut web = stack
            .http
            .post(stack.url("/slipway.registry.v1.RegistryService/WatchServices"))
            .header("content-type", "application/grpc-web+proto")
            .bearer_auth(&admin)
            .body(vec![0u8; 5])
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .unwrap();
        assert_eq!(web.status(), 200);
        gateway_clients.push(tokio::spawn(async move {
            match grpc_web_trailers(&mut web).await {
                Some((code, message)) => {
                    assert_eq!(code, "14", "grpc-web {n}: not a clean end: {message}");
                    format!("grpc-web {n}: {message}")
                }
                None => format!("grpc-web {n}: end of body"),
            }
        }));

        let mut ndjson = stack
            .http
            .get(stack.url("/v1/deployments/watch"))
            .bearer_auth(&admin)
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .unwrap();
        assert_eq!(ndjson.status(), 200);
        gateway_clients.push(tokio::spawn(async move {
            let mut body = Vec::new();
            while let Some(chunk) = ndjson.chunk().await.expect("the NDJSON body broke off") {
                body.extend_from_slice(&chunk);
            }
            format!("ndjson {n}: {}", String::from_utf8_lossy(&body))
        }));
    }

    // The edge first, as `slipway up` does; then the auth service while the others
    // still follow its feed; then the rest.
    stop_and_check(&mut stack, "gateway", gateway_clients).await;
    stop_and_check(&mut stack, "auth", auth_clients).await;
    stop_and_check(&mut stack, "registry", registry_clients).await;
    stop_and_check(&mut stack, "deploy", deploy_clients).await;
}

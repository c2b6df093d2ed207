//! Revocation as verifiers see it: live streams (native gRPC to a backend, native gRPC
//! and grpc-web through the gateway) end when their token is revoked or expires; the
//! revocation feed has no gap under concurrent revocations; a revoked token stays
//! refused through the verification leeway after its expiry. On SQLite and PostgreSQL.

use std::time::{Duration, Instant};

use proto::{
    auth::v1::{self as auth, auth_service_client::AuthServiceClient},
    deploy::v1::{self as dep, deploy_service_client::DeployServiceClient},
    registry::v1::{self as reg, registry_service_client::RegistryServiceClient},
};
use tests::{
    Backend, Process, Stack,
    grpc::{attenuated, bearer, channel, claims_of, grpc_web_trailers},
    on_every_backend,
};
use tonic::{Code, Status, Streaming};

on_every_backend!(
    streams_end_when_their_token_is_revoked,
    streams_end_when_their_token_expires,
    concurrent_revocations_reach_every_verifier,
    a_revoked_token_stays_refused_through_the_leeway,
);

/// A token derived from `parent` by the auth service (recorded, so revocable), living
/// `lifetime_secs` (0: as long as its parent).
async fn derived(stack: &Stack, parent: &str, lifetime_secs: u64) -> String {
    let request = auth::AttenuateTokenRequest {
        lifetime_seconds: lifetime_secs,
        ..Default::default()
    };
    attenuated(stack.auth, parent, request).await
}

async fn revoke(stack: &Stack, admin: &str, tokens: &[&str]) {
    let ids = tokens
        .iter()
        .map(|t| claims_of(t)["jti"].as_str().unwrap().to_owned())
        .collect();
    AuthServiceClient::new(channel(stack.auth).await)
        .revoke_tokens(bearer(auth::RevokeTokensRequest { ids }, admin))
        .await
        .unwrap();
}

/// Every live stream a token can open, by the three ways in.
struct Streams {
    registry_direct: Streaming<reg::ServiceEvent>,
    deploy_direct: Streaming<dep::Event>,
    gateway_grpc: Streaming<dep::Event>,
    gateway_grpc_web: reqwest::Response,
}

async fn open_streams(stack: &Stack, token: &str) -> Streams {
    let registry_direct = RegistryServiceClient::new(channel(stack.registry).await)
        .watch_services(bearer(reg::WatchServicesRequest::default(), token))
        .await
        .unwrap()
        .into_inner();
    let deploy_direct = DeployServiceClient::new(channel(stack.deploy).await)
        .watch_events(bearer(dep::WatchEventsRequest::default(), token))
        .await
        .unwrap()
        .into_inner();
    let gateway_grpc = DeployServiceClient::new(channel(stack.gateway).await)
        .watch_events(bearer(dep::WatchEventsRequest::default(), token))
        .await
        .unwrap()
        .into_inner();
    let gateway_grpc_web = stack
        .http
        .post(stack.url("/slipway.registry.v1.RegistryService/WatchServices"))
        .header("content-type", "application/grpc-web+proto")
        .bearer_auth(token)
        .body(vec![0u8; 5])
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap();
    assert_eq!(gateway_grpc_web.status(), 200);
    assert!(
        gateway_grpc_web.headers().get("grpc-status").is_none(),
        "the grpc-web stream was refused at once"
    );
    Streams {
        registry_direct,
        deploy_direct,
        gateway_grpc,
        gateway_grpc_web,
    }
}

/// How a native gRPC stream ended: the status it ended with (no message may come).
async fn grpc_end<T: std::fmt::Debug>(stream: &mut Streaming<T>) -> Status {
    match stream.message().await {
        Err(status) => status,
        Ok(other) => panic!("expected the stream to end with a status, got {other:?}"),
    }
}

/// Every stream ends within `within` with UNAUTHENTICATED and a message naming `why`.
async fn all_end(streams: &mut Streams, within: Duration, why: &str, stack: &Stack) {
    let deadline = tokio::time::Instant::now() + within;
    let (registry, deploy, gateway, web) = tokio::join!(
        tokio::time::timeout_at(deadline, grpc_end(&mut streams.registry_direct)),
        tokio::time::timeout_at(deadline, grpc_end(&mut streams.deploy_direct)),
        tokio::time::timeout_at(deadline, grpc_end(&mut streams.gateway_grpc)),
        tokio::time::timeout_at(deadline, grpc_web_trailers(&mut streams.gateway_grpc_web)),
    );
    for (way, status) in [
        ("registry direct", registry),
        ("deploy direct", deploy),
        ("gateway gRPC", gateway),
    ] {
        let status = status.unwrap_or_else(|_| panic!("{way}: still open after {within:?}\n{}", stack.logs()));
        assert_eq!(status.code(), Code::Unauthenticated, "{way}: {status:?}");
        assert!(status.message().contains(why), "{way}: {status:?}");
    }
    let (code, message) = web
        .unwrap_or_else(|_| panic!("gateway grpc-web: still open after {within:?}"))
        .expect("gateway grpc-web: a trailer frame before the body ends");
    assert_eq!(code, "16", "gateway grpc-web: {message}");
    assert!(message.contains(why), "gateway grpc-web: {message}");
}

async fn streams_end_when_their_token_is_revoked(backend: Backend) {
    let stack = Stack::start(backend).await;
    let admin = stack.admin_token().await;
    let token = derived(&stack, &admin, 0).await;
    let mut streams = open_streams(&stack, &token).await;
    // Open, quiet streams: nothing ends them but the revocation.
    tokio::time::sleep(Duration::from_millis(500)).await;
    revoke(&stack, &admin, &[&token]).await;
    all_end(&mut streams, Duration::from_secs(1), "revoked", &stack).await;

    // The token that opened nothing is untouched: a stream opened with it stays open.
    let mut other = open_streams(&stack, &admin).await;
    let quiet = tokio::time::timeout(Duration::from_millis(1500), other.registry_direct.message()).await;
    assert!(quiet.is_err(), "a valid token's stream ended: {quiet:?}");
}

async fn streams_end_when_their_token_expires(backend: Backend) {
    let stack = Stack::start(backend).await;
    let admin = stack.admin_token().await;
    let token = derived(&stack, &admin, 3).await;
    let exp_ms = claims_of(&token)["exp"].as_i64().unwrap() * 1000;
    let mut streams = open_streams(&stack, &token).await;
    all_end(&mut streams, Duration::from_secs(10), "expired", &stack).await;
    let ended_ms = chrono::Utc::now().timestamp_millis();
    assert!(ended_ms >= exp_ms, "ended {} ms before exp", exp_ms - ended_ms);
    assert!(ended_ms < exp_ms + 1000, "ended {} ms after exp", ended_ms - exp_ms);
}

/// Whether each verifier refuses `token` right now: the gateway (a route it answers
/// itself: 403 to a valid user token, 401 to a refused one), the registry and the
/// deploy service (directly, UNAUTHENTICATED).
async fn accepted_by(
    stack: &Stack,
    registry: &mut RegistryServiceClient<tonic::transport::Channel>,
    deploy: &mut DeployServiceClient<tonic::transport::Channel>,
    token: &str,
) -> Vec<&'static str> {
    let mut accepted = Vec::new();
    let gateway = stack
        .http
        .post(stack.url("/v1/steps"))
        .bearer_auth(token)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap()
        .status();
    if gateway != 401 {
        accepted.push("gateway");
    }
    let listed = registry
        .list_services(bearer(reg::ListServicesRequest::default(), token))
        .await;
    if listed.err().map(|s| s.code()) != Some(Code::Unauthenticated) {
        accepted.push("registry");
    }
    let listed = deploy
        .list_deployments(bearer(dep::ListDeploymentsRequest::default(), token))
        .await;
    if listed.err().map(|s| s.code()) != Some(Code::Unauthenticated) {
        accepted.push("deploy");
    }
    accepted
}

/// 1,000 revocations from 8 concurrent tasks: once the last one has returned, and a
/// second has passed, 16 followers of the feed have seen every one and every verifier
/// refuses every revoked token (a revocation the feed skipped would stay accepted
/// until its token expires).
async fn concurrent_revocations_reach_every_verifier(backend: Backend) {
    const TASKS: usize = 8;
    const PER_TASK: usize = 125;
    const FOLLOWERS: usize = 16;
    // More feeds for one user than the default cap allows.
    let stack = Stack::builder(backend)
        .env(Process::Auth, "SLIPWAY_MAX_REVOCATION_STREAMS_PER_TOKEN", "32")
        .start()
        .await;
    let admin = stack.admin_token().await;
    let mut auth = AuthServiceClient::new(channel(stack.auth).await);
    let mut tokens = Vec::with_capacity(TASKS * PER_TASK);
    for _ in 0..TASKS * PER_TASK {
        let minted = auth
            .attenuate_token(bearer(auth::AttenuateTokenRequest::default(), &admin))
            .await
            .unwrap();
        tokens.push(minted.into_inner().token);
    }
    // Followers of the feed itself, besides the services' own: each polls on its own
    // phase, so a gap between two commits is seen by some follower if it exists.
    let mut followers = Vec::new();
    for _ in 0..FOLLOWERS {
        let mut feed = auth
            .watch_revocations(bearer(auth::WatchRevocationsRequest { after_sequence: 0 }, &admin))
            .await
            .unwrap()
            .into_inner();
        followers.push(tokio::spawn(async move {
            let mut seen = std::collections::HashSet::new();
            while let Ok(Some(event)) = feed.message().await {
                seen.extend(event.token_ids);
                if seen.len() >= TASKS * PER_TASK {
                    break;
                }
            }
            seen
        }));
        tokio::time::sleep(Duration::from_millis(13)).await;
    }
    let mut tasks = Vec::new();
    for chunk in tokens.chunks(PER_TASK) {
        let (chunk, admin, mut auth) = (chunk.to_vec(), admin.clone(), auth.clone());
        tasks.push(tokio::spawn(async move {
            for token in chunk {
                let id = claims_of(&token)["jti"].as_str().unwrap().to_owned();
                auth.revoke_tokens(bearer(auth::RevokeTokensRequest { ids: vec![id] }, &admin))
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (n, follower) in followers.into_iter().enumerate() {
        assert!(
            follower.is_finished(),
            "feed follower {n} lacks revocations 1 s after the last"
        );
        assert_eq!(follower.await.unwrap().len(), TASKS * PER_TASK);
    }
    let mut registry = RegistryServiceClient::new(channel(stack.registry).await);
    let mut deploy = DeployServiceClient::new(channel(stack.deploy).await);
    let mut missed = Vec::new();
    for (n, token) in tokens.iter().enumerate() {
        let accepted = accepted_by(&stack, &mut registry, &mut deploy, token).await;
        if !accepted.is_empty() {
            missed.push((n, accepted));
        }
    }
    assert!(
        missed.is_empty(),
        "{} revoked tokens still accepted (index, by): {missed:?}",
        missed.len()
    );
    // The checks themselves are sound: the admin's token is accepted everywhere.
    assert_eq!(
        accepted_by(&stack, &mut registry, &mut deploy, &admin).await,
        ["gateway", "registry", "deploy"]
    );
}

/// A token verifies until `exp` + 5 s leeway, so its revocation must hold that long,
/// even when later feed events come after `exp`.
async fn a_revoked_token_stays_refused_through_the_leeway(backend: Backend) {
    let stack = Stack::start(backend).await;
    let admin = stack.admin_token().await;
    let token = derived(&stack, &admin, 2).await;
    let exp_ms = claims_of(&token)["exp"].as_i64().unwrap() * 1000;
    revoke(&stack, &admin, &[&token]).await;
    // Past exp, but within the leeway; another revocation makes every verifier apply
    // a new event (which is when expired entries were dropped).
    let wait = exp_ms + 1100 - chrono::Utc::now().timestamp_millis();
    tokio::time::sleep(Duration::from_millis(u64::try_from(wait).unwrap_or(0))).await;
    let other = derived(&stack, &admin, 0).await;
    revoke(&stack, &admin, &[&other]).await;
    let mut registry = RegistryServiceClient::new(channel(stack.registry).await);
    let mut deploy = DeployServiceClient::new(channel(stack.deploy).await);
    // Wait until every verifier has the later event (its token refused), then look
    // at the first token while still inside its leeway.
    let deadline = Instant::now() + Duration::from_secs(2);
    while !accepted_by(&stack, &mut registry, &mut deploy, &other).await.is_empty() {
        assert!(Instant::now() < deadline, "the second revocation never arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        chrono::Utc::now().timestamp_millis() < exp_ms + 4000,
        "too slow to check within the leeway"
    );
    assert_eq!(
        accepted_by(&stack, &mut registry, &mut deploy, &token).await,
        Vec::<&str>::new(),
        "a revoked token worked again after its exp, within the leeway"
    );
}

//! Who may follow the revocation feed, and how many feeds may be open: internal
//! services by their credential, users by a token holding `tokens:read`; caps per
//! caller and in total, a closed feed giving its place back. On SQLite and PostgreSQL.

use std::time::{Duration, Instant};

use common::identity::{Credential, GATEWAY};
use proto::{
    auth::v1::{self as auth, auth_service_client::AuthServiceClient},
    deploy::v1::{self as dep, deploy_service_client::DeployServiceClient},
    registry::v1::{self as reg, registry_service_client::RegistryServiceClient},
};
use tests::{
    Backend, Process, Stack,
    grpc::{attenuated, bearer, channel, claims_of},
    on_every_backend,
};
use tonic::{Code, Request, Streaming};

on_every_backend!(
    the_feed_needs_a_credential_or_a_token_that_may_read_tokens,
    feeds_are_capped_per_caller_and_a_closed_one_frees_its_place,
    every_verifier_follows_the_feed_with_its_credential,
    a_token_s_feed_ends_with_its_token,
);

async fn open(
    stack: &Stack,
    request: Request<auth::WatchRevocationsRequest>,
) -> Result<Streaming<auth::RevocationEvent>, tonic::Status> {
    AuthServiceClient::new(channel(stack.auth).await)
        .watch_revocations(request)
        .await
        .map(|r| r.into_inner())
}

fn watch() -> auth::WatchRevocationsRequest {
    auth::WatchRevocationsRequest { after_sequence: 0 }
}

/// `GET /v1/revocations/watch` with `token`, if any.
async fn watch_http(stack: &Stack, token: Option<&str>) -> reqwest::Response {
    let mut request = stack.http.get(stack.url("/v1/revocations/watch"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

async fn the_feed_needs_a_credential_or_a_token_that_may_read_tokens(backend: Backend) {
    let stack = Stack::start(backend).await;
    let admin = stack.admin_token().await;

    // Nothing, or a credential nobody was given: UNAUTHENTICATED / 401.
    let status = open(&stack, Request::new(watch())).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let forged_path = stack.dir.path().join("forged.key");
    Credential::create_if_missing(&forged_path).unwrap();
    let forged = Credential::load(GATEWAY, &forged_path).unwrap();
    let status = open(&stack, forged.request(watch())).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(watch_http(&stack, None).await.status().as_u16(), 401);
    let status = AuthServiceClient::new(channel(stack.gateway).await)
        .watch_revocations(Request::new(watch()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    // A user token narrowed to services:read: PERMISSION_DENIED / 403.
    let request = auth::AttenuateTokenRequest {
        permissions: vec!["services:read".into()],
        ..Default::default()
    };
    let narrow = attenuated(stack.auth, &admin, request).await;
    let status = open(&stack, bearer(watch(), &narrow)).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(watch_http(&stack, Some(&narrow)).await.status().as_u16(), 403);

    // The real gateway credential, and a token holding tokens:read, are served.
    let gateway = Credential::load(GATEWAY, &stack.dir.path().join("gateway.key")).unwrap();
    let mut feed = open(&stack, gateway.request(watch())).await.unwrap();
    assert!(feed.message().await.unwrap().unwrap().snapshot);
    let mut feed = open(&stack, bearer(watch(), &admin)).await.unwrap();
    assert!(feed.message().await.unwrap().unwrap().snapshot);
    let mut response = watch_http(&stack, Some(&admin)).await;
    assert_eq!(response.status().as_u16(), 200);
    let first = response.chunk().await.unwrap().unwrap();
    let line: serde_json::Value = serde_json::from_slice(first.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(line["snapshot"], true, "{line}");
}

async fn feeds_are_capped_per_caller_and_a_closed_one_frees_its_place(backend: Backend) {
    let stack = Stack::builder(backend)
        .env(Process::Auth, "SLIPWAY_MAX_REVOCATION_STREAMS_PER_TOKEN", "2")
        .start()
        .await;
    let admin = stack.admin_token().await;
    // Any token of the same user counts against the same cap.
    let second = stack.admin_token().await;

    let first = open(&stack, bearer(watch(), &admin)).await.unwrap();
    let mut kept = open(&stack, bearer(watch(), &second)).await.unwrap();
    let status = open(&stack, bearer(watch(), &admin)).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(watch_http(&stack, Some(&admin)).await.status().as_u16(), 429);
    // Internal services are counted apart: the verifiers still follow the feed.
    let gateway = Credential::load(GATEWAY, &stack.dir.path().join("gateway.key")).unwrap();
    open(&stack, gateway.request(watch())).await.unwrap();

    // Closing one lets a new one open, over HTTP this time.
    drop(first);
    let mut response = reopen(&stack, &admin).await;
    assert_eq!(response.chunk().await.unwrap().map(|c| !c.is_empty()), Some(true));
    let status = open(&stack, bearer(watch(), &admin)).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    // Closing the HTTP one frees its place too.
    drop(response);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut feed = loop {
        match open(&stack, bearer(watch(), &admin)).await {
            Ok(feed) => break feed,
            Err(status) => assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}"),
        }
        assert!(Instant::now() < deadline, "a closed NDJSON feed kept its place");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(feed.message().await.unwrap().is_some());
    assert!(kept.message().await.unwrap().is_some(), "the kept feed goes on");
}

/// `GET /v1/revocations/watch` until a closed feed's place is given back (429 before).
async fn reopen(stack: &Stack, token: &str) -> reqwest::Response {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let response = watch_http(stack, Some(token)).await;
        match response.status().as_u16() {
            200 => return response,
            429 => assert!(Instant::now() < deadline, "a closed feed kept its place"),
            other => panic!("unexpected {other}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The gateway, the registry and the deploy service each accept a token, then refuse
/// it once revoked: each follows the feed with its own credential.
async fn every_verifier_follows_the_feed_with_its_credential(backend: Backend) {
    let stack = Stack::start(backend).await;
    let admin = stack.admin_token().await;
    let token = attenuated(stack.auth, &admin, auth::AttenuateTokenRequest::default()).await;
    let codes = |token: String| {
        let stack = &stack;
        async move {
            let registry = RegistryServiceClient::new(channel(stack.registry).await)
                .list_services(bearer(reg::ListServicesRequest::default(), &token))
                .await
                .err()
                .map(|s| s.code());
            let deploy = DeployServiceClient::new(channel(stack.deploy).await)
                .list_deployments(bearer(dep::ListDeploymentsRequest::default(), &token))
                .await
                .err()
                .map(|s| s.code());
            let gateway = stack
                .http
                .get(stack.url("/v1/services"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16();
            (registry, deploy, gateway)
        }
    };
    assert_eq!(codes(token.clone()).await, (None, None, 200), "{}", stack.logs());
    let id = claims_of(&token)["jti"].as_str().unwrap().to_owned();
    AuthServiceClient::new(channel(stack.auth).await)
        .revoke_tokens(bearer(auth::RevokeTokensRequest { ids: vec![id] }, &admin))
        .await
        .unwrap();
    let refused = (Some(Code::Unauthenticated), Some(Code::Unauthenticated), 401);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let seen = codes(token.clone()).await;
        if seen == refused {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a verifier still accepts the revoked token: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A token derived from the admin's, living `lifetime_secs` (0: as long as its parent).
async fn derived(stack: &Stack, admin: &str, lifetime_secs: u64) -> String {
    let request = auth::AttenuateTokenRequest {
        lifetime_seconds: lifetime_secs,
        ..Default::default()
    };
    attenuated(stack.auth, admin, request).await
}

/// The status a feed ends with, skipping its events; within `within`.
async fn end_of(feed: &mut Streaming<auth::RevocationEvent>, within: Duration) -> tonic::Status {
    tokio::time::timeout(within, async {
        loop {
            match feed.message().await {
                Ok(Some(_)) => {}
                Ok(None) => panic!("the feed ended without a status"),
                Err(status) => return status,
            }
        }
    })
    .await
    .expect("the feed went on")
}

/// A feed opened with a token ends when the token is revoked or expires; a service's
/// feed goes on.
async fn a_token_s_feed_ends_with_its_token(backend: Backend) {
    let stack = Stack::start(backend).await;
    let admin = stack.admin_token().await;
    let doomed = derived(&stack, &admin, 0).await;
    let mut feed = open(&stack, bearer(watch(), &doomed)).await.unwrap();
    let gateway = Credential::load(GATEWAY, &stack.dir.path().join("gateway.key")).unwrap();
    let mut service_feed = open(&stack, gateway.request(watch())).await.unwrap();
    assert!(feed.message().await.unwrap().unwrap().snapshot);
    let id = claims_of(&doomed)["jti"].as_str().unwrap().to_owned();
    AuthServiceClient::new(channel(stack.auth).await)
        .revoke_tokens(bearer(auth::RevokeTokensRequest { ids: vec![id] }, &admin))
        .await
        .unwrap();
    let status = end_of(&mut feed, Duration::from_secs(3)).await;
    assert_eq!(
        (status.code(), status.message()),
        (Code::Unauthenticated, "token revoked")
    );

    let short = derived(&stack, &admin, 2).await;
    let mut feed = open(&stack, bearer(watch(), &short)).await.unwrap();
    let status = end_of(&mut feed, Duration::from_secs(5)).await;
    assert_eq!(
        (status.code(), status.message()),
        (Code::Unauthenticated, "token expired")
    );

    // The service's feed saw the revocation and is still open.
    assert!(service_feed.message().await.unwrap().is_some());
}

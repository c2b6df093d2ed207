//! The auth side of the scale-out run: a key rotation on one auth replica, tokens
//! revoked on the replicas in turn (each timed until every gateway refuses it), and a
//! checker that keeps presenting valid tokens (of the old key and of the new one) to
//! every gateway and records any refusal.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use proto::auth::v1::{self as auth, auth_service_client::AuthServiceClient};
use tokio_util::sync::CancellationToken;

use crate::{
    grpc::{bearer, claims_of},
    stack::{ADMIN, ADMIN_PASSWORD},
};

/// How long a revoked token may take to be refused everywhere before the run gives up
/// on it (the test's bound is far tighter).
const GIVE_UP: Duration = Duration::from_secs(30);

/// A token presented to every gateway (`GET /v1/services`): each one's status (0: no
/// answer).
pub async fn everywhere(http: &reqwest::Client, gateways: &[SocketAddr], token: &str) -> Vec<u16> {
    let mut statuses = Vec::with_capacity(gateways.len());
    for gateway in gateways {
        let status = http
            .get(format!("http://{gateway}/v1/services?page_size=1"))
            .bearer_auth(token)
            .send()
            .await
            .map_or(0, |r| r.status().as_u16());
        statuses.push(status);
    }
    statuses
}

/// An auth client for one replica (connected lazily: a replica may be down).
pub fn client(addr: SocketAddr) -> AuthServiceClient<tonic::transport::Channel> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("url")
        .timeout(Duration::from_secs(10));
    AuthServiceClient::new(endpoint.connect_lazy())
}

/// Logs the admin in on one replica of `replicas`, trying them from `first` on.
pub async fn login(replicas: &[SocketAddr], first: usize) -> String {
    for turn in 0..replicas.len() * 20 {
        let replica = replicas[(first + turn) % replicas.len()];
        let answer = client(replica)
            .login(auth::LoginRequest {
                username: ADMIN.into(),
                password: ADMIN_PASSWORD.into(),
            })
            .await;
        if let Ok(answer) = answer {
            return answer.into_inner().access_token;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no auth replica logs the admin in")
}

/// `count` revocable tokens derived from `admin`, made on the replicas in turn.
pub async fn tokens(replicas: &[SocketAddr], admin: &str, count: usize) -> Vec<String> {
    let mut tokens = Vec::with_capacity(count);
    for i in 0..count {
        let addr = replicas[i % replicas.len()];
        tokens.push(crate::grpc::attenuated(addr, admin, auth::AttenuateTokenRequest::default()).await);
    }
    tokens
}

/// One revocation: on which replica, and how long until every gateway refused the
/// token (`None`: not within [`GIVE_UP`]).
#[derive(Debug, Clone)]
pub struct Revocation {
    pub replica: SocketAddr,
    pub refused_after: Option<Duration>,
}

/// Revokes each token on the replicas in turn (another one when that one is down, as
/// when it was just killed) and times how long until every gateway refuses it.
pub async fn revoke_all(
    http: &reqwest::Client,
    replicas: &[SocketAddr],
    gateways: &[SocketAddr],
    admin: &str,
    tokens: &[String],
) -> Vec<Revocation> {
    let mut revocations = Vec::with_capacity(tokens.len());
    for (i, token) in tokens.iter().enumerate() {
        let id = claims_of(token)["jti"].as_str().expect("a jti").to_owned();
        let mut replica = None;
        for turn in 0..replicas.len() * 50 {
            let addr = replicas[(i + turn) % replicas.len()];
            let request = bearer(auth::RevokeTokensRequest { ids: vec![id.clone()] }, admin);
            if client(addr).revoke_tokens(request).await.is_ok() {
                replica = Some(addr);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let replica = replica.expect("no auth replica revokes");
        let revoked = Instant::now();
        let refused_after = loop {
            if everywhere(http, gateways, token).await.iter().all(|s| *s == 401) {
                break Some(revoked.elapsed());
            }
            if revoked.elapsed() > GIVE_UP {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        revocations.push(Revocation { replica, refused_after });
    }
    revocations
}

/// Rotates the signing key on `replica`; returns the new key's id.
pub async fn rotate(replica: SocketAddr, admin: &str) -> String {
    client(replica)
        .rotate_keys(bearer(auth::RotateKeysRequest {}, admin))
        .await
        .expect("rotating the signing key")
        .into_inner()
        .kid
}

/// The valid tokens a [`ValidChecker`] presents, and the refusals it recorded; cloned
/// into the tasks that add tokens.
#[derive(Clone, Default)]
pub struct ValidTokens {
    tokens: Arc<Mutex<Vec<String>>>,
    refusals: Arc<Mutex<Vec<String>>>,
}

impl ValidTokens {
    /// Presents `token` to every gateway at once (a token of a new key must be
    /// accepted from the moment it is issued), then has it checked with the others.
    pub async fn add(&self, http: &reqwest::Client, gateways: &[SocketAddr], token: String) {
        check(http, gateways, &token, &self.refusals).await;
        self.tokens.lock().expect("lock").push(token);
    }
}

/// Keeps presenting valid tokens to every gateway until stopped; records each refusal
/// (401 or 403: a valid token refused) as text.
pub struct ValidChecker {
    pub valid: ValidTokens,
    checks: Arc<Mutex<usize>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl ValidChecker {
    pub fn start(http: reqwest::Client, gateways: Vec<SocketAddr>, tokens: Vec<String>) -> ValidChecker {
        let valid = ValidTokens::default();
        valid.tokens.lock().expect("lock").extend(tokens);
        let checks = Arc::new(Mutex::new(0));
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let (valid, checks, stop) = (valid.clone(), checks.clone(), stop.clone());
            async move {
                while !stop.is_cancelled() {
                    let now: Vec<String> = valid.tokens.lock().expect("lock").clone();
                    for token in now {
                        check(&http, &gateways, &token, &valid.refusals).await;
                        *checks.lock().expect("lock") += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        });
        ValidChecker {
            valid,
            checks,
            stop,
            task,
        }
    }

    /// Stops; returns the refusals and how many checks were made.
    pub async fn stop(self) -> (Vec<String>, usize) {
        self.stop.cancel();
        let _ = self.task.await;
        let refusals = self.valid.refusals.lock().expect("lock").clone();
        let checks = *self.checks.lock().expect("lock");
        (refusals, checks)
    }
}

async fn check(http: &reqwest::Client, gateways: &[SocketAddr], token: &str, refusals: &Mutex<Vec<String>>) {
    let statuses = everywhere(http, gateways, token).await;
    for (gateway, status) in gateways.iter().zip(statuses) {
        if status == 401 || status == 403 {
            let kid = jsonwebtoken::decode_header(token)
                .ok()
                .and_then(|h| h.kid)
                .unwrap_or_default();
            refusals.lock().expect("lock").push(format!(
                "gateway {gateway} answered {status} to a valid token of key {kid}"
            ));
        }
    }
}

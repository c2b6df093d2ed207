//! The scale-out run (issue 15, item 9), shared by `tests/scale_out.rs` (CI numbers,
//! asserting) and `benches/scale_out.rs` (full numbers, printing figures): 2 gateways,
//! 2 auth, 2 registry and 3 deploy replicas on one PostgreSQL database; deployments
//! of many services sent through both gateways; a watcher on each gateway; during the
//! run one deploy replica and one auth replica killed with SIGKILL and started again;
//! a key rotation on one auth replica and revocations on both in turn, while valid
//! tokens keep being presented to every gateway.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use proto::deploy::v1::{self as dep, DeploymentStatus, deploy_service_client::DeployServiceClient};
use serde_json::json;

use crate::{
    grpc::bearer,
    replicas::Replicas,
    scale_auth::{self, Revocation, ValidChecker},
    scale_watch::{self, Seen, Watched, Watcher},
    stack::Process,
    support::write_service,
    wait_until,
};

/// The size of a run.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub deployments: usize,
    pub services: usize,
    pub revocations: usize,
    /// Submissions in flight at once.
    pub concurrency: usize,
    /// The deploy replicas' `--max-running` (a limit over all of them, enforced by
    /// the database).
    pub max_running: usize,
}

impl Load {
    /// CI's numbers; `SLIPWAY_SCALE_DEPLOYMENTS`, `SLIPWAY_SCALE_SERVICES` and
    /// `SLIPWAY_SCALE_REVOCATIONS` override them.
    pub fn ci() -> Load {
        Load {
            deployments: 100,
            services: 10,
            revocations: 10,
            concurrency: 8,
            max_running: 8,
        }
        .overridden_by_env()
    }

    /// The numbers (the bench).
    pub fn full() -> Load {
        Load {
            deployments: 1_000,
            services: 100,
            revocations: 100,
            concurrency: 16,
            max_running: 64,
        }
        .overridden_by_env()
    }

    fn overridden_by_env(self) -> Load {
        let read =
            |name: &str, default: usize| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
        Load {
            deployments: read("SLIPWAY_SCALE_DEPLOYMENTS", self.deployments),
            services: read("SLIPWAY_SCALE_SERVICES", self.services).max(1),
            revocations: read("SLIPWAY_SCALE_REVOCATIONS", self.revocations),
            ..self
        }
    }
}

/// One accepted deployment: its id, service, and when its acceptance was answered.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub id: i64,
    pub service: String,
    pub at: Instant,
}

/// What a run recorded, for the test's assertions and the bench's figures.
pub struct Outcome {
    pub accepted: Vec<Accepted>,
    /// Submissions answered with an error (tried again), by answer.
    pub submit_errors: Vec<String>,
    /// Every deployment at the end, oldest first.
    pub deployments: Vec<dep::Deployment>,
    /// Deployments still queued or running when the run stopped waiting.
    pub unfinished: usize,
    pub watched: Vec<Watched>,
    /// The stored events replayed after the run.
    pub replay: Vec<Seen>,
    pub revocations: Vec<Revocation>,
    pub valid_refusals: Vec<String>,
    pub valid_checks: usize,
    /// From the first submission to the last deployment's end.
    pub elapsed: Duration,
}

/// A short deploy script: one step reported, a moment of work.
const SCRIPT: &str = "#!/bin/sh\necho '{\"name\": \"build\", \"state\": \"success\"}'\nsleep 0.05\n";

/// The replicas of the run.
pub async fn start(load: &Load) -> Replicas {
    let services = load.services;
    Replicas::builder()
        .gateways(2)
        .auth(2)
        .registry(2)
        .deploy(3)
        .services(move |dir| {
            for i in 0..services {
                write_service(dir, &service_name(i), json!({}), SCRIPT);
            }
        })
        .env(Process::Deploy, "SLIPWAY_MAX_RUNNING", load.max_running.to_string())
        .start()
        .await
}

pub fn service_name(i: usize) -> String {
    format!("svc-{i:03}")
}

/// Runs the load with its faults on `replicas`; returns what was recorded.
pub async fn run(replicas: &mut Replicas, load: &Load) -> Outcome {
    let admin = replicas.admin_token(0).await;
    let gateways = replicas.gateways.clone();
    let watchers: Vec<Watcher> = gateways.iter().map(|g| Watcher::start(*g, admin.clone())).collect();
    let revocable = scale_auth::tokens(&replicas.auth, &admin, load.revocations).await;
    let checker = ValidChecker::start(replicas.http.clone(), gateways.clone(), vec![admin.clone()]);

    let started = Instant::now();
    let submitted = Arc::new(AtomicUsize::new(0));
    let submit = tokio::spawn(submit_all(*load, gateways.clone(), admin.clone(), submitted.clone()));

    // The auth side, beside the load: a rotation on auth-1, then the revocations on
    // both replicas in turn (auth-2 is killed meanwhile).
    let auth = {
        let (http, auth, gateways, admin) = (
            replicas.http.clone(),
            replicas.auth.clone(),
            gateways.clone(),
            admin.clone(),
        );
        let valid = checker.valid.clone();
        async move {
            scale_auth::rotate(auth[0], &admin).await;
            // Tokens of the new key, from each replica, checked as they are issued.
            for first in 0..auth.len() {
                let fresh = scale_auth::login(&auth, first).await;
                valid.add(&http, &gateways, fresh).await;
            }
            scale_auth::revoke_all(&http, &auth, &gateways, &admin, &revocable).await
        }
    };
    let auth = tokio::spawn(auth);

    // The faults: once a third is submitted, deploy-2 and then auth-2 are killed with
    // SIGKILL, kept down a moment and started again.
    wait_until(Duration::from_secs(600), async || {
        match submitted.load(Ordering::SeqCst) >= load.deployments / 3 {
            true => Ok(()),
            false => Err("a third of the deployments was never submitted".to_owned()),
        }
    })
    .await;
    for name in ["deploy-2", "auth-2"] {
        replicas.kill(name);
        tokio::time::sleep(Duration::from_secs(1)).await;
        replicas.restart(name).await;
    }

    let (accepted, submit_errors) = submit.await.expect("the submissions");
    let revocations = auth.await.expect("the revocations");
    let unfinished = wait_finished(replicas, &admin, load).await;
    let elapsed = started.elapsed();
    let (valid_refusals, valid_checks) = checker.stop().await;
    let deployments = list_all(replicas.gateways[0], &admin).await;

    // The watchers have seen everything stored once they reach the replay's last event.
    let replay = scale_watch::replay(replicas.gateways[1], &admin, Duration::from_secs(2)).await;
    let last = replay.last().map_or(0, |s| s.sequence);
    for watcher in &watchers {
        let _ = tokio::time::timeout(Duration::from_secs(30), async {
            while watcher.last() < last {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
    }
    let mut watched = Vec::new();
    for watcher in watchers {
        watched.push(watcher.stop().await);
    }
    Outcome {
        accepted,
        submit_errors,
        deployments,
        unfinished,
        watched,
        replay,
        revocations,
        valid_refusals,
        valid_checks,
        elapsed,
    }
}

/// Sends every deployment, `concurrency` at a time, through the gateways in turn;
/// a submission answered with an error (a replica just died) is sent again.
pub async fn submit_all(
    load: Load,
    gateways: Vec<SocketAddr>,
    admin: String,
    submitted: Arc<AtomicUsize>,
) -> (Vec<Accepted>, Vec<String>) {
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..load.concurrency {
        let (next, submitted, gateways, admin) = (next.clone(), submitted.clone(), gateways.clone(), admin.clone());
        workers.push(tokio::spawn(async move {
            let mut clients = Vec::new();
            for gateway in &gateways {
                clients.push(DeployServiceClient::new(crate::grpc::channel(*gateway).await));
            }
            let (mut accepted, mut errors) = (Vec::new(), Vec::new());
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= load.deployments {
                    return (accepted, errors);
                }
                let service = service_name(i % load.services);
                for attempt in 0.. {
                    let count = clients.len();
                    let client = &mut clients[(i + attempt) % count];
                    let request = dep::StartDeploymentRequest {
                        service: service.clone(),
                        env: None,
                    };
                    match client.start_deployment(bearer(request, &admin)).await {
                        Ok(answer) => {
                            accepted.push(Accepted {
                                id: answer.into_inner().id,
                                service: service.clone(),
                                at: Instant::now(),
                            });
                            break;
                        }
                        Err(status) if attempt < 50 => {
                            errors.push(format!("{:?}: {}", status.code(), status.message()));
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Err(status) => panic!("deployment {i} of {service} never accepted: {status:?}"),
                    }
                }
                submitted.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    let (mut accepted, mut errors) = (Vec::new(), Vec::new());
    for worker in workers {
        let (a, e) = worker.await.expect("a submitter");
        accepted.extend(a);
        errors.extend(e);
    }
    accepted.sort_by_key(|a| a.id);
    (accepted, errors)
}

/// Waits until no deployment is queued or running (a lost runner's are failed by
/// another replica within 30 s); returns how many still were when it gave up.
async fn wait_finished(replicas: &Replicas, admin: &str, load: &Load) -> usize {
    let within = Duration::from_secs(120 + load.deployments as u64 / 4);
    let deadline = Instant::now() + within;
    loop {
        let all = list_all(replicas.gateways[0], admin).await;
        let open = all.iter().filter(|d| !is_final(d)).count();
        if open == 0 || Instant::now() > deadline {
            return open;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub fn is_final(d: &dep::Deployment) -> bool {
    ![
        DeploymentStatus::Queued,
        DeploymentStatus::Running,
        DeploymentStatus::Unspecified,
    ]
    .contains(&d.status())
}

/// Every deployment, oldest first, through `gateway`.
pub async fn list_all(gateway: SocketAddr, admin: &str) -> Vec<dep::Deployment> {
    let mut client = DeployServiceClient::new(crate::grpc::channel(gateway).await);
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = dep::ListDeploymentsRequest {
            page_size: 500,
            page_token: page_token.clone(),
            include_removed_services: true,
            ..Default::default()
        };
        let page = client
            .list_deployments(bearer(request, admin))
            .await
            .expect("listing the deployments")
            .into_inner();
        all.extend(page.deployments);
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
}

/// Each service's deployments, oldest (first accepted) first.
pub fn by_service(deployments: &[dep::Deployment]) -> HashMap<String, Vec<dep::Deployment>> {
    let mut services: HashMap<String, Vec<dep::Deployment>> = HashMap::new();
    for d in deployments {
        services.entry(d.service.clone()).or_default().push(d.clone());
    }
    for runs in services.values_mut() {
        runs.sort_by_key(|d| d.id);
    }
    services
}

/// A timestamp as (seconds, nanos), for ordering.
pub fn at(t: &Option<proto::wkt::Timestamp>) -> Option<(i64, i32)> {
    t.as_ref().map(|t| (t.seconds, t.nanos))
}

/// The latency from each acceptance to its deployment's first event at each watcher
/// (event fan-out across replicas), sorted.
pub fn fan_out_latencies(outcome: &Outcome) -> Vec<Duration> {
    let accepted: HashMap<i64, Instant> = outcome.accepted.iter().map(|a| (a.id, a.at)).collect();
    let mut latencies = Vec::new();
    for watched in &outcome.watched {
        let mut first: HashMap<i64, Instant> = HashMap::new();
        for (seen, arrived) in &watched.events {
            first.entry(seen.deployment).or_insert(*arrived);
        }
        for (id, arrived) in first {
            if let Some(at) = accepted.get(&id) {
                latencies.push(arrived.saturating_duration_since(*at));
            }
        }
    }
    latencies.sort();
    latencies
}

/// The `q` quantile (0.0 to 1.0) of sorted durations.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

//! Assembles the deploy service: storage, the token guard, the clients of the auth
//! and registry services, the runner and its queue (ending the runs a previous
//! process of this replica left behind), then the `DeployService` API behind the
//! authorization layer, with health and reflection.

use std::time::Duration;

use anyhow::Context;
use common::{guard::Guard, identity::Credential};
use proto::deploy::v1::deploy_service_server::DeployServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    Config,
    api::{ApiParts, DeployApi},
    backends::Backends,
    logs::Logs,
    queue::{Limits, Queue, replica_id},
    runner::{self, Runner, RunnerConfig, ScriptEnv},
    storage::Store,
};

/// How long a stopping service waits for its runs to stop their scripts and end.
const DRAIN_LIMIT: Duration = Duration::from_secs(8);

/// Opens storage, recovers interrupted runs and serves gRPC on `listener` until
/// `shutdown` is cancelled.
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    config
        .storage
        .prepare_data_dir()
        .with_context(|| format!("preparing the data dir {}", config.storage.data_dir.display()))?;
    let url = config.database_url();
    let store = Store::open(&url)
        .await
        .with_context(|| format!("opening {}", common::db::redacted(&url)))?;
    let credential_file = config
        .credential_file
        .as_deref()
        .context("the deploy service needs its credential (--credential-file) to mint deployment tokens")?;
    let credential = Credential::load(common::identity::DEPLOY_SERVICE, credential_file)
        .context("loading the deploy service's credential")?;
    let trusted_gateway: Vec<_> = config
        .gateway
        .trusted()
        .context("loading the gateway's credential")?
        .into_iter()
        .collect();
    let backends = Backends::new(&config.auth.auth_url, &config.registry_url, credential.clone())?;
    let guard = Guard::connect(
        &config.auth.auth_url,
        config.auth.max_stale(),
        Some(credential),
        shutdown.clone(),
    )
    .context("connecting to the auth service")?;
    guard.wait_ready(std::time::Duration::from_secs(5)).await;

    let runs_dir = config.runs_dir();
    runner::prepare_dir(&runs_dir).with_context(|| format!("creating {}", runs_dir.display()))?;
    let services_dir = std::path::absolute(&config.services_dir).unwrap_or_else(|_| config.services_dir.clone());
    // The runs' output: one writer task, stored in batches beside the deployments.
    let logs = Logs::start(store.clone(), config.log_limits());
    let runner = Runner::new(
        store.clone(),
        backends.clone(),
        logs.clone(),
        RunnerConfig {
            services_dir: services_dir.clone(),
            project_root: config.project_root(),
            runs_dir: runs_dir.clone(),
            public_url: config.public_url.clone(),
            env: ScriptEnv {
                path: config.deploy_path.clone(),
                home: std::env::var("HOME").unwrap_or_else(|_| "/".into()),
                lang: std::env::var("LANG").unwrap_or_else(|_| "C.UTF-8".into()),
                denied: config.denied_to_scripts(),
            },
            ssh_auth_sock: std::env::var("SSH_AUTH_SOCK").ok().filter(|s| !s.is_empty()),
        },
    );
    let limits = Limits {
        max_running: config.max_running.max(1),
        max_running_per_service: config.max_running_per_service.max(1),
    };
    // Names this replica in the runs it claims; kept in the data dir across restarts.
    let replica = replica_id(config.replica_id.as_deref(), &config.storage.data_dir)
        .with_context(|| format!("reading the replica id in {}", config.storage.data_dir.display()))?;
    tracing::info!(replica = %replica, "deploy-service replica");
    let queue = Queue::new(runner, limits, replica, shutdown.clone());
    queue.recover(&runs_dir).await.context("recovering interrupted runs")?;

    // Retention prunes in the background, in small batches.
    crate::retention::start(store.clone(), config.retention(), shutdown.clone());
    let api = DeployApi::new(ApiParts {
        store,
        backends,
        logs,
        queue: queue.clone(),
        services_dir,
        default_timeout_secs: config.deploy_timeout_secs,
        shutdown: shutdown.clone(),
    });
    // No internal service calls the deploy service: tokens only.
    let api = guard.layer(trusted_gateway).wrap(DeployServiceServer::new(api));
    let grpc_name = <DeployServiceServer<DeployApi> as tonic::server::NamedService>::NAME;
    // Shutdown order: the server stops accepting and its streams end (watchers follow
    // the same token); the runs, stopped by that token too, end their deployments.
    let served = common::server::serve_grpc(
        "deploy-service",
        grpc_name,
        tonic::service::Routes::new(api),
        listener,
        shutdown,
        // Serving while it can check tokens: the auth service's feed is fresh.
        move || guard.ready(),
    )
    .await;
    queue.drain(DRAIN_LIMIT).await;
    served
}

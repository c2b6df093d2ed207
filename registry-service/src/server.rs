//! The registry service's gRPC server: storage, the token guard, a first sync of the
//! services directory, then the `RegistryService` API behind the authorization layer,
//! with health and reflection.

use anyhow::Context;
use common::guard::Guard;
use proto::registry::v1::registry_service_server::RegistryServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{Config, api::RegistryApi, catalog::Catalog, storage::Store};

/// Opens storage, syncs the services directory and serves gRPC on `listener` until
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
    let mut trusted = config
        .trust
        .trusted()
        .context("loading the deploy service's credential")?;
    trusted.extend(config.gateway.trusted().context("loading the gateway's credential")?);
    let credential = config
        .credential
        .load(common::identity::REGISTRY_SERVICE)
        .context("loading the registry's credential")?;
    let guard = Guard::connect(
        &config.auth.auth_url,
        config.auth.max_stale(),
        credential,
        shutdown.clone(),
    )
    .context("connecting to the auth service")?;
    guard.wait_ready(std::time::Duration::from_secs(5)).await;
    let catalog = Catalog::new(&config.services_dir, config.project_root.as_deref());
    crate::retention::start(store.clone(), shutdown.clone());
    let api = RegistryApi::new(store, catalog, shutdown.clone());
    // A first sync at start; problems are logged and the service serves regardless.
    if let Err(error) = api.sync().await {
        tracing::warn!(error = %error, "services not synced at start");
    }
    let api = guard.layer(trusted).wrap(RegistryServiceServer::new(api));
    let grpc_name = <RegistryServiceServer<RegistryApi> as tonic::server::NamedService>::NAME;
    common::server::serve_grpc(
        "registry-service",
        grpc_name,
        tonic::service::Routes::new(api),
        listener,
        shutdown,
        // Serving while it can check tokens: the auth service's feed is fresh.
        move || guard.ready(),
    )
    .await
}

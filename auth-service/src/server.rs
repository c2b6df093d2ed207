//! The auth service's gRPC server: the `AuthService` API behind the authorization
//! layer (`common::authz`, tokens checked against its own keys and revocations), health
//! and reflection.

use std::sync::Arc;

use anyhow::Context;
use common::authz::AuthzLayer;
use proto::{
    auth::v1::auth_service_server::AuthServiceServer, registry::v1::registry_service_client::RegistryServiceClient,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    Config, accounts::Accounts, keys::KeyRing, login_limits::LoginLimiter, passwords::Hasher, revoked::RevokedSet,
    storage::Store,
};

pub use crate::api::AuthApi;

/// Opens storage and keys, makes sure the admin user exists, and serves gRPC on
/// `listener` until `shutdown` is cancelled.
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    // The files the settings name are checked before anything is opened.
    let trusted = config.trusted()?;
    let kek = config.kek()?;
    config
        .storage
        .prepare_data_dir()
        .with_context(|| format!("preparing the data dir {}", config.storage.data_dir.display()))?;
    let url = config.database_url();
    let store = Store::open(&url)
        .await
        .with_context(|| format!("opening {}", common::db::redacted(&url)))?;
    let keys = Arc::new(
        KeyRing::open(store.clone(), kek, &config.keys_dir())
            .await
            .context("loading the signing keys")?,
    );
    let hasher = Hasher::new(config.hash_threads()).await?.with_queue(config.login_queue);
    let accounts = Accounts::new(store.clone(), hasher);
    accounts.refresh_legacy().await?;
    if let (Some(name), Some(password)) = (&config.admin_user, &config.admin_password)
        && accounts.ensure(name, password).await?
    {
        tracing::info!(user = %name, "admin user created");
    }
    // One registry URL, or several replicas separated by commas.
    let registry = common::balance::channel(&config.registry_url, |endpoint| {
        endpoint
            .connect_timeout(std::time::Duration::from_secs(2))
            .timeout(std::time::Duration::from_secs(10))
    })?;
    let revoked = Arc::new(
        RevokedSet::load(store.clone())
            .await
            .context("reading the revocation log")?,
    );
    // Revocations, key rotations and rehashes made by other replicas on the same database.
    tokio::spawn({
        let (revoked, keys, accounts, shutdown) = (revoked.clone(), keys.clone(), accounts.clone(), shutdown.clone());
        async move { crate::follow::follow(&revoked, &keys, &accounts, shutdown).await }
    });
    // Expired token records and revocations go in the background, in small batches.
    crate::retention::start(store.clone(), config.token_retention(), shutdown.clone());
    let api = AuthApi::new(store, accounts, keys, config.user_token_minutes, revoked)?
        .with_login_limiter(LoginLimiter::new(config.login_limits()))
        .with_trusted(trusted.clone())
        .with_registry(RegistryServiceClient::new(registry))
        .with_stream_limits(config.stream_limits())
        .with_shutdown(shutdown.clone())
        .with_legacy(match (&config.legacy_secret_file, config.legacy_until) {
            (Some(path), Some(until)) => {
                tracing::warn!(%until, "legacy fastDeploy tokens are accepted until the cutoff");
                Some(crate::legacy::Legacy::load(path, until)?)
            }
            _ => None,
        });

    let api = Arc::new(api);
    let authz = AuthzLayer::new(Arc::new(api.token_check()), trusted);
    let api = authz.wrap(AuthServiceServer::from_arc(api));
    let grpc_name = <AuthServiceServer<AuthApi> as tonic::server::NamedService>::NAME;
    common::server::serve_grpc(
        "auth-service",
        grpc_name,
        tonic::service::Routes::new(api),
        listener,
        shutdown,
        // Its database is open and its keys loaded by now.
        || true,
    )
    .await
}

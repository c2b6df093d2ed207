//! The registry tests' fixture: a services directory with good and broken folders,
//! and gRPC helpers to list, sync and publish.

use std::{fs, os::unix::fs::PermissionsExt, path::Path};

use crate::Stack;
use crate::grpc::bearer;
use common::identity::{Credential, DEPLOY_SERVICE};
use proto::registry::v1::{self as pb, registry_service_client::RegistryServiceClient};
use serde_json::Value;
use tonic::transport::Channel;

/// Writes a service folder with an executable `deploy.sh` (mode `mode`).
pub fn write_service(root: &Path, name: &str, config: &str, mode: u32) {
    let dir = root.join(name);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("config.json"), config).unwrap();
    let script = dir.join("deploy.sh");
    fs::write(
        &script,
        "#!/bin/sh\necho '{\"name\": \"build\", \"state\": \"success\"}'\n",
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(mode)).unwrap();
}

/// The services every scenario starts with: two good ones, one whose script is not
/// executable (synced, with a warning) and one that is not a service.
pub fn initial_services(root: &Path) {
    write_service(
        root,
        "alpha",
        r#"{"description": "A", "steps": [{"name": "build"}]}"#,
        0o755,
    );
    write_service(root, "beta", r#"{"deploy_script": "deploy.sh", "port": 8000}"#, 0o755);
    write_service(root, "not-executable", "{}", 0o644);
    write_service(root, "bad-json", r#"{"description": "#, 0o755);
    write_service(root, ".hidden", "{}", 0o755);
    fs::write(root.join("plain-file"), "{}").unwrap();
}

pub async fn registry(stack: &Stack) -> RegistryServiceClient<Channel> {
    RegistryServiceClient::new(crate::grpc::channel(stack.registry).await)
}

pub fn deploy_credential(stack: &Stack) -> Credential {
    Credential::load(DEPLOY_SERVICE, &stack.dir.path().join("deploy-service.key")).unwrap()
}

pub async fn list(stack: &Stack, token: &str) -> Vec<pb::Service> {
    registry(stack)
        .await
        .list_services(bearer(pb::ListServicesRequest::default(), token))
        .await
        .unwrap()
        .into_inner()
        .services
}

pub fn names(services: &[pb::Service]) -> Vec<&str> {
    services.iter().map(|s| s.name.as_str()).collect()
}

pub async fn sync(stack: &Stack, token: &str) -> pb::SyncServicesResponse {
    registry(stack)
        .await
        .sync_services(bearer(pb::SyncServicesRequest {}, token))
        .await
        .unwrap()
        .into_inner()
}

pub fn problem<'a>(response: &'a pb::SyncServicesResponse, service: &str) -> &'a str {
    &response
        .problems
        .iter()
        .find(|p| p.service == service)
        .unwrap_or_else(|| panic!("no problem reported for {service}: {response:?}"))
        .reason
}

pub fn config_token(stack: &Stack, services: Option<&[&str]>) -> String {
    let mut claims = crate::user_claims("admin");
    claims.token_type = common::token::TokenType::Config;
    claims.user = None;
    claims.sub = "config:discovery".into();
    claims.services = services.map(|list| list.iter().map(|s| (*s).to_owned()).collect());
    stack.sign_with_real_key(&claims)
}

pub async fn publish(
    stack: &Stack,
    request: tonic::Request<pb::PublishDeployedServiceRequest>,
) -> Result<pb::DeployedService, tonic::Status> {
    registry(stack)
        .await
        .publish_deployed_service(request)
        .await
        .map(tonic::Response::into_inner)
}

pub fn published(deployment_id: i64, service: &str, config: Value) -> pb::PublishDeployedServiceRequest {
    pb::PublishDeployedServiceRequest {
        deployment_id,
        service: service.into(),
        config: Some(serde_json::from_value(config).unwrap()),
    }
}

pub async fn deployed(stack: &Stack, token: &str) -> Result<Vec<pb::DeployedService>, tonic::Status> {
    registry(stack)
        .await
        .list_deployed_services(bearer(pb::ListDeployedServicesRequest {}, token))
        .await
        .map(|r| r.into_inner().deployed_services)
}

/// Renames a service in the registry's database directly: no event announces it.
/// Returns once the registry at `registry` itself lists the new name (it reads its
/// table again when its copy in memory is two seconds old), so from then on only the
/// gateway's cache can still show the old one.
pub async fn rename_behind_the_back(stack: &Stack, registry: std::net::SocketAddr, token: &str, from: &str, to: &str) {
    use sea_orm::ConnectionTrait;
    let db = sea_orm::Database::connect(stack.database_url("registry"))
        .await
        .unwrap();
    db.execute_unprepared(&format!("UPDATE services SET name = '{to}' WHERE name = '{from}'"))
        .await
        .unwrap();
    db.close().await.unwrap();
    let mut registry = RegistryServiceClient::new(crate::grpc::channel(registry).await);
    crate::wait_until(std::time::Duration::from_secs(10), async || {
        let listed = registry
            .list_services(bearer(pb::ListServicesRequest::default(), token))
            .await
            .map_err(|status| status.to_string())?
            .into_inner();
        match listed.services.iter().any(|s| s.name == to) {
            true => Ok(()),
            false => Err(format!("the registry does not list {to} yet")),
        }
    })
    .await;
}

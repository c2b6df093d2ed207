//! The registry service end to end: services synced from a real services directory
//! (at start and on request, problems reported per folder), read, deleted and watched
//! over gRPC and through the gateway's fastDeploy and /v1 routes; deployed services
//! published by the deploy service only and read with config tokens. On SQLite and
//! PostgreSQL.

use std::{fs, os::unix::fs::PermissionsExt, path::Path};

use common::identity::{Credential, DEPLOY_SERVICE};
use proto::registry::v1::{self as pb, get_service_request::Key, registry_service_client::RegistryServiceClient};
use serde_json::{Value, json};
use tests::grpc::bearer;
use tests::{Backend, Stack, on_every_backend};
use tonic::{Code, transport::Channel};

on_every_backend!(
    sync_at_start_reports_problems_and_keeps_good_services,
    sync_on_request_adds_updates_deletes,
    names_delete_and_watch,
    deployed_services_are_published_by_the_deploy_service_only,
    fastdeploy_services_routes,
    fastdeploy_deployed_services_and_wrong_token_types,
    v1_services_routes,
    slipway_services_sync_and_list,
);

/// Writes a service folder with an executable `deploy.sh` (mode `mode`).
fn write_service(root: &Path, name: &str, config: &str, mode: u32) {
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
fn initial_services(root: &Path) {
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

async fn registry(stack: &Stack) -> RegistryServiceClient<Channel> {
    RegistryServiceClient::new(tests::grpc::channel(stack.registry).await)
}

fn deploy_credential(stack: &Stack) -> Credential {
    Credential::load(DEPLOY_SERVICE, &stack.dir.path().join("deploy-service.key")).unwrap()
}

fn struct_json(data: &Option<proto::wkt::Struct>) -> Value {
    serde_json::to_value(data.clone().unwrap_or_default()).unwrap()
}

async fn list(stack: &Stack, token: &str) -> Vec<pb::Service> {
    registry(stack)
        .await
        .list_services(bearer(pb::ListServicesRequest::default(), token))
        .await
        .unwrap()
        .into_inner()
        .services
}

fn names(services: &[pb::Service]) -> Vec<&str> {
    services.iter().map(|s| s.name.as_str()).collect()
}

async fn sync(stack: &Stack, token: &str) -> pb::SyncServicesResponse {
    registry(stack)
        .await
        .sync_services(bearer(pb::SyncServicesRequest {}, token))
        .await
        .unwrap()
        .into_inner()
}

fn problem<'a>(response: &'a pb::SyncServicesResponse, service: &str) -> &'a str {
    &response
        .problems
        .iter()
        .find(|p| p.service == service)
        .unwrap_or_else(|| panic!("no problem reported for {service}: {response:?}"))
        .reason
}

async fn sync_at_start_reports_problems_and_keeps_good_services(backend: Backend) {
    let stack = Stack::start_with(backend, initial_services).await;
    let token = stack.admin_token().await;
    let services = list(&stack, &token).await;
    assert_eq!(
        names(&services),
        ["alpha", "beta", "not-executable"],
        "{}",
        stack.log("registry")
    );
    assert_eq!(
        struct_json(&services[0].data),
        json!({"description": "A", "steps": [{"name": "build"}]})
    );
    let log = stack.log("registry");
    assert!(log.contains("not-executable") && log.contains("bad-json"), "{log}");

    // The deploy service looks a service up by name with its credential, no token.
    let mut client = registry(&stack).await;
    let by_name = client
        .get_service(deploy_credential(&stack).request(pb::GetServiceRequest {
            key: Some(Key::Name("beta".into())),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_name.id, services[1].id);
    assert_eq!(by_name.name, "beta");
    let by_id = client
        .get_service(bearer(
            pb::GetServiceRequest {
                key: Some(Key::Id(services[0].id)),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_id.name, "alpha");
    let missing = client
        .get_service(bearer(
            pb::GetServiceRequest {
                key: Some(Key::Name("nope".into())),
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(missing.message(), "Service does not exist");
    let anonymous = client
        .get_service(pb::GetServiceRequest {
            key: Some(Key::Name("beta".into())),
        })
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    let anonymous = client
        .list_services(pb::ListServicesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);

    // Syncing again changes nothing and reports the same problems and warnings.
    let again = sync(&stack, &token).await;
    assert!(
        again.added.is_empty() && again.updated.is_empty() && again.deleted.is_empty(),
        "{again:?}"
    );
    assert!(problem(&again, "bad-json").contains("not valid JSON"));
    assert_eq!(
        again.problems.len(),
        1,
        "hidden folders and plain files are not services: {again:?}"
    );
    assert_eq!(again.warnings.len(), 1, "{again:?}");
    assert_eq!(
        (again.warnings[0].service.as_str(), again.warnings[0].reason.as_str()),
        (
            "not-executable",
            "deploy script not-executable/deploy.sh is not executable"
        )
    );
    assert_eq!(list(&stack, &token).await, services, "ids and data unchanged");
}

async fn sync_on_request_adds_updates_deletes(backend: Backend) {
    let stack = Stack::start_with(backend, initial_services).await;
    let token = stack.admin_token().await;
    let before = list(&stack, &token).await;
    let root = stack.services_dir();

    write_service(
        &root,
        "gamma",
        r#"{"steps": [{"name": "one"}, {"name": "two"}]}"#,
        0o755,
    );
    fs::write(root.join("alpha/config.json"), r#"{"description": "changed"}"#).unwrap();
    fs::remove_dir_all(root.join("beta")).unwrap();
    fs::set_permissions(root.join("not-executable/deploy.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    let report = sync(&stack, &token).await;
    assert_eq!(report.added, ["gamma"]);
    assert_eq!(report.updated, ["alpha"]);
    assert_eq!(report.deleted, ["beta"]);
    assert_eq!(report.problems.len(), 1, "{report:?}");
    assert!(report.warnings.is_empty(), "the script is executable now: {report:?}");
    problem(&report, "bad-json");

    let after = list(&stack, &token).await;
    assert_eq!(names(&after), ["alpha", "not-executable", "gamma"]);
    assert_eq!(after[0].id, before[0].id, "an update keeps the id");
    assert_eq!(struct_json(&after[0].data), json!({"description": "changed"}));
    assert!(after[2].id > before[2].id, "new ids are never reused ones");

    // Steps of a service with an Ansible playbook come from its first play; the path
    // is relative to the project root (by default the services directory's parent).
    let project = root.parent().unwrap();
    fs::create_dir_all(project.join("ansible")).unwrap();
    fs::write(
        project.join("ansible/site.yml"),
        "- hosts: all\n  tasks:\n    - name: Pull image\n      command: 'true'\n    - command: 'true'\n    - name: Restart\n      command: 'true'\n",
    )
    .unwrap();
    write_service(&root, "played", r#"{"ansible_playbook": "ansible/site.yml"}"#, 0o755);
    assert_eq!(sync(&stack, &token).await.added, ["played"]);
    let played = list(&stack, &token)
        .await
        .into_iter()
        .find(|s| s.name == "played")
        .unwrap();
    assert_eq!(
        struct_json(&played.data),
        json!({"ansible_playbook": "ansible/site.yml",
               "steps": [{"name": "Gathering Facts"}, {"name": "Pull image"}, {"name": "Restart"}]})
    );
    let after = list(&stack, &token).await;

    // A synced service whose folder turns bad keeps its last good row.
    fs::write(root.join("gamma/config.json"), "not json").unwrap();
    let report = sync(&stack, &token).await;
    assert!(report.deleted.is_empty() && report.updated.is_empty(), "{report:?}");
    assert!(problem(&report, "gamma").contains("not valid JSON"));
    let kept = list(&stack, &token).await;
    assert_eq!(kept, after);

    // A token without the permission is refused; a service token lacks services:sync.
    let mut claims = tests::user_claims("admin");
    claims.token_type = common::token::TokenType::Service;
    claims.service = Some("alpha".into());
    let service_token = stack.sign_with_real_key(&claims);
    let refused = registry(&stack)
        .await
        .sync_services(bearer(pb::SyncServicesRequest {}, &service_token))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
}

fn config_token(stack: &Stack, services: Option<&[&str]>) -> String {
    let mut claims = tests::user_claims("admin");
    claims.token_type = common::token::TokenType::Config;
    claims.user = None;
    claims.sub = "config:discovery".into();
    claims.services = services.map(|list| list.iter().map(|s| (*s).to_owned()).collect());
    stack.sign_with_real_key(&claims)
}

async fn next_event(stream: &mut tonic::Streaming<pb::ServiceEvent>) -> (String, bool) {
    let event = tokio::time::timeout(std::time::Duration::from_secs(10), stream.message())
        .await
        .expect("an event within 10 s")
        .unwrap()
        .expect("the stream is open");
    (event.service.unwrap().name, event.deleted)
}

async fn names_delete_and_watch(backend: Backend) {
    let stack = Stack::start_with(backend, initial_services).await;
    let token = stack.admin_token().await;
    let mut client = registry(&stack).await;

    let folders = client
        .list_service_names(bearer(pb::ListServiceNamesRequest {}, &token))
        .await
        .unwrap()
        .into_inner()
        .names;
    assert_eq!(folders, ["alpha", "bad-json", "beta", "not-executable"]);

    let refused = client
        .watch_services(bearer(pb::WatchServicesRequest {}, &config_token(&stack, None)))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let mut watch = client
        .watch_services(bearer(pb::WatchServicesRequest {}, &token))
        .await
        .unwrap()
        .into_inner();
    // A watcher that never reads must not hold up the others.
    let _idle = registry(&stack)
        .await
        .watch_services(bearer(pb::WatchServicesRequest {}, &token))
        .await
        .unwrap()
        .into_inner();

    let services = list(&stack, &token).await;
    let alpha = services[0].id;
    client
        .delete_service(bearer(pb::DeleteServiceRequest { id: alpha }, &token))
        .await
        .unwrap();
    assert_eq!(next_event(&mut watch).await, ("alpha".into(), true));
    let again = client
        .delete_service(bearer(pb::DeleteServiceRequest { id: alpha }, &token))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::NotFound);
    assert_eq!(again.message(), "Service does not exist");
    assert_eq!(names(&list(&stack, &token).await), ["beta", "not-executable"]);

    // The folder is still there: the next sync brings the service back with a new id.
    let root = stack.services_dir();
    fs::write(root.join("beta/config.json"), r#"{"port": 9000}"#).unwrap();
    let report = sync(&stack, &token).await;
    assert_eq!(
        (report.added.as_slice(), report.updated.as_slice()),
        (&["alpha".to_owned()][..], &["beta".to_owned()][..])
    );
    let mut seen = vec![next_event(&mut watch).await, next_event(&mut watch).await];
    seen.sort();
    assert_eq!(seen, [("alpha".into(), false), ("beta".into(), false)]);
    let back = list(&stack, &token).await;
    assert!(back.iter().find(|s| s.name == "alpha").unwrap().id > alpha);

    fs::remove_dir_all(root.join("beta")).unwrap();
    assert_eq!(sync(&stack, &token).await.deleted, ["beta"]);
    assert_eq!(next_event(&mut watch).await, ("beta".into(), true));
}

async fn publish(
    stack: &Stack,
    request: tonic::Request<pb::PublishDeployedServiceRequest>,
) -> Result<pb::DeployedService, tonic::Status> {
    registry(stack)
        .await
        .publish_deployed_service(request)
        .await
        .map(tonic::Response::into_inner)
}

fn published(deployment_id: i64, service: &str, config: Value) -> pb::PublishDeployedServiceRequest {
    pb::PublishDeployedServiceRequest {
        deployment_id,
        service: service.into(),
        config: Some(serde_json::from_value(config).unwrap()),
    }
}

async fn deployed(stack: &Stack, token: &str) -> Result<Vec<pb::DeployedService>, tonic::Status> {
    registry(stack)
        .await
        .list_deployed_services(bearer(pb::ListDeployedServicesRequest {}, token))
        .await
        .map(|r| r.into_inner().deployed_services)
}

async fn deployed_services_are_published_by_the_deploy_service_only(backend: Backend) {
    let stack = Stack::start_with(backend, initial_services).await;
    let token = stack.admin_token().await;
    let credential = deploy_credential(&stack);

    // Nobody but the deploy service publishes, not even a user.
    let refused = publish(&stack, bearer(published(1, "alpha", json!({})), &token))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let refused = publish(&stack, tonic::Request::new(published(1, "alpha", json!({}))))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let other = stack.dir.path().join("other.key");
    Credential::create_if_missing(&other).unwrap();
    let forged = Credential::load(DEPLOY_SERVICE, &other).unwrap();
    let refused = publish(&stack, forged.request(published(1, "alpha", json!({}))))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let unknown = publish(&stack, credential.request(published(1, "nope", json!({}))))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    let first = publish(
        &stack,
        credential.request(published(1, "alpha", json!({"domain": "a.example", "port": 8000}))),
    )
    .await
    .unwrap();
    assert_eq!((first.deployment_id, first.service.as_str()), (1, "alpha"));
    assert_eq!(
        struct_json(&first.config),
        json!({"domain": "a.example", "port": 8000.0})
    );
    let beta = publish(&stack, credential.request(published(2, "beta", json!({"x": [1, "y"]}))))
        .await
        .unwrap();
    // The next publish for a service replaces its config and keeps its row's id.
    let latest = publish(
        &stack,
        credential.request(published(3, "alpha", json!({"domain": "b.example"}))),
    )
    .await
    .unwrap();
    assert_eq!(latest.id, first.id);
    assert_eq!(latest.deployment_id, 3);

    let everything = deployed(&stack, &config_token(&stack, None)).await.unwrap();
    assert_eq!(everything.len(), 2);
    assert_eq!(everything[0].id, first.id);
    assert_eq!(struct_json(&everything[0].config), json!({"domain": "b.example"}));
    assert_eq!(everything[1], beta);
    let only_beta = deployed(&stack, &config_token(&stack, Some(&["beta", "nope"])))
        .await
        .unwrap();
    assert_eq!(only_beta, std::slice::from_ref(&beta));
    assert!(
        deployed(&stack, &config_token(&stack, Some(&[])))
            .await
            .unwrap()
            .is_empty()
    );
    let mut claims = tests::user_claims("admin");
    claims.token_type = common::token::TokenType::Service;
    claims.service = Some("alpha".into());
    let refused = deployed(&stack, &stack.sign_with_real_key(&claims)).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);

    // Deleting a service deletes its deployed services.
    let alpha = list(&stack, &token).await[0].id;
    registry(&stack)
        .await
        .delete_service(bearer(pb::DeleteServiceRequest { id: alpha }, &token))
        .await
        .unwrap();
    let left = deployed(&stack, &config_token(&stack, None)).await.unwrap();
    assert_eq!(left, [beta]);
}

async fn http(stack: &Stack, method: reqwest::Method, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = stack.http.request(method, stack.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn token_of_type(stack: &Stack, token_type: common::token::TokenType) -> String {
    let mut claims = tests::user_claims("admin");
    claims.token_type = token_type;
    match token_type {
        common::token::TokenType::Service => claims.service = Some("alpha".into()),
        common::token::TokenType::Deployment => claims.deployment = Some(1),
        _ => {}
    }
    stack.sign_with_real_key(&claims)
}

async fn fastdeploy_services_routes(backend: Backend) {
    use reqwest::Method;
    let stack = Stack::start_with(backend, initial_services).await;
    let token = stack.admin_token().await;
    let t = Some(token.as_str());

    let (status, body) = http(&stack, Method::GET, "/services/", t).await;
    assert_eq!(status, 200, "{body}");
    let rows = body.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    for row in rows {
        let mut keys: Vec<&str> = row.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["data", "id", "name"]);
        assert!(row["id"].is_i64());
    }
    assert_eq!(rows[1]["name"], "beta");
    assert_eq!(rows[1]["data"], json!({"deploy_script": "deploy.sh", "port": 8000}));
    assert_eq!(rows[1]["data"]["port"].to_string(), "8000", "integers stay integers");

    let (status, body) = http(&stack, Method::GET, "/services/names/", t).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!(["alpha", "bad-json", "beta", "not-executable"]));

    // Sync answers 200 although a folder has a problem; the good new one is synced.
    write_service(&stack.services_dir(), "gamma", "{}", 0o755);
    let (status, body) = http(&stack, Method::POST, "/services/sync", t).await;
    assert_eq!((status, body), (200, json!({"detail": "Services synced"})));
    let (_, body) = http(&stack, Method::GET, "/services/", t).await;
    let gamma = body.as_array().unwrap().iter().find(|s| s["name"] == "gamma").unwrap()["id"]
        .as_i64()
        .unwrap();

    let path = format!("/services/{gamma}");
    let (status, body) = http(&stack, Method::DELETE, &path, t).await;
    assert_eq!(
        (status, body),
        (200, json!({"detail": format!("Service {gamma} deleted")}))
    );
    let (status, body) = http(&stack, Method::DELETE, &path, t).await;
    assert_eq!((status, body), (404, json!({"detail": "Service does not exist"})));
    let (status, body) = http(&stack, Method::DELETE, "/services/abc", t).await;
    assert_eq!(status, 422);
    assert_eq!(
        body,
        json!({"detail": [{
            "type": "int_parsing",
            "loc": ["path", "service_id"],
            "msg": "Input should be a valid integer, unable to parse string as an integer",
            "input": "abc",
        }]})
    );
    // Authentication comes before validation.
    let (status, body) = http(&stack, Method::DELETE, "/services/abc", None).await;
    assert_eq!((status, body), (401, json!({"detail": "Not authenticated"})));

    // fastDeploy's redirects and 405s around these paths.
    let response = stack
        .http
        .get(stack.url("/services"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 307);
    assert!(response.headers()["location"].to_str().unwrap().ends_with("/services/"));
    assert_eq!(http(&stack, Method::GET, "/services/names", t).await.0, 405);
    assert_eq!(http(&stack, Method::GET, "/services/sync", t).await.0, 405);
    let response = stack
        .http
        .post(stack.url("/services/sync/"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 307);
}

async fn fastdeploy_deployed_services_and_wrong_token_types(backend: Backend) {
    use common::token::TokenType;
    use reqwest::Method;
    let stack = Stack::start_with(backend, initial_services).await;
    let user = stack.admin_token().await;
    let credential = deploy_credential(&stack);
    let alpha = publish(
        &stack,
        credential.request(published(4, "alpha", json!({"url": "https://a"}))),
    )
    .await
    .unwrap();
    let beta = publish(
        &stack,
        credential.request(published(5, "beta", json!({"port": 8000, "tags": ["x"]}))),
    )
    .await
    .unwrap();

    let all = config_token(&stack, None);
    let (status, body) = http(&stack, Method::GET, "/deployed-services/", Some(&all)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!([
            {"id": alpha.id, "deployment_id": 4, "config": {"url": "https://a"}},
            {"id": beta.id, "deployment_id": 5, "config": {"port": 8000, "tags": ["x"]}},
        ])
    );
    let only_beta = config_token(&stack, Some(&["beta"]));
    let (status, body) = http(&stack, Method::GET, "/deployed-services/", Some(&only_beta)).await;
    assert_eq!(status, 200);
    assert_eq!(body.as_array().unwrap().len(), 1);
    assert_eq!(body[0]["id"], beta.id);

    // A token of the wrong type is 401 on every fastDeploy route, as fastDeploy answers.
    let invalid = json!({"detail": "Could not validate credentials"});
    let service = token_of_type(&stack, TokenType::Service);
    let deployment = token_of_type(&stack, TokenType::Deployment);
    for (method, path) in [
        (Method::GET, "/services/"),
        (Method::GET, "/services/names/"),
        (Method::POST, "/services/sync"),
        (Method::DELETE, "/services/1"),
    ] {
        for wrong in [&service, &deployment, &all] {
            let (status, body) = http(&stack, method.clone(), path, Some(wrong)).await;
            assert_eq!((status, &body), (401, &invalid), "{method} {path}");
        }
    }
    for wrong in [&user, &service, &deployment] {
        let (status, body) = http(&stack, Method::GET, "/deployed-services/", Some(wrong)).await;
        assert_eq!((status, &body), (401, &invalid));
    }
    let (status, body) = http(&stack, Method::GET, "/deployed-services/", None).await;
    assert_eq!((status, body), (401, json!({"detail": "Not authenticated"})));
    // A user token narrowed to reading cannot sync.
    let mut claims = tests::user_claims("admin");
    claims.permissions = Some(vec![common::scope::SERVICES_READ.into()]);
    let reader = stack.sign_with_real_key(&claims);
    assert_eq!(http(&stack, Method::GET, "/services/", Some(&reader)).await.0, 200);
    let (status, body) = http(&stack, Method::POST, "/services/sync", Some(&reader)).await;
    assert_eq!((status, body), (401, invalid));
}

async fn v1_services_routes(backend: Backend) {
    use common::token::TokenType;
    use reqwest::Method;
    let stack = Stack::start_with(backend, initial_services).await;
    let token = stack.admin_token().await;
    let t = Some(token.as_str());

    let (status, body) = http(&stack, Method::GET, "/v1/services", t).await;
    assert_eq!(status, 200, "{body}");
    let services = body["services"].as_array().unwrap();
    assert_eq!(services.len(), 3);
    assert_eq!(services[0]["name"], "alpha");
    let alpha_id = services[0]["id"].as_str().unwrap().to_owned(); // int64 as a string

    fs::remove_dir_all(stack.services_dir().join("beta")).unwrap();
    let (status, body) = http(&stack, Method::POST, "/v1/services/sync", t).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["deleted"], json!(["beta"]));
    let problems = body["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{body}");
    assert_eq!(problems[0]["service"], "bad-json");
    assert_eq!(
        body["warnings"],
        json!([{"service": "not-executable", "reason": "deploy script not-executable/deploy.sh is not executable"}])
    );

    let (status, body) = http(&stack, Method::DELETE, &format!("/v1/services/{alpha_id}"), t).await;
    assert_eq!((status, body), (200, json!({})));
    let (status, body) = http(&stack, Method::DELETE, &format!("/v1/services/{alpha_id}"), t).await;
    assert_eq!((status, body), (404, json!({"detail": "Service does not exist"})));
    assert_eq!(http(&stack, Method::DELETE, "/v1/services/abc", t).await.0, 400);

    let credential = deploy_credential(&stack);
    write_service(&stack.services_dir(), "delta", "{}", 0o755);
    http(&stack, Method::POST, "/v1/services/sync", t).await;
    publish(&stack, credential.request(published(7, "delta", json!({"a": 1}))))
        .await
        .unwrap();
    let (status, body) = http(
        &stack,
        Method::GET,
        "/v1/deployed-services",
        Some(&config_token(&stack, None)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["deployedServices"][0]["service"], "delta");
    assert_eq!(body["deployedServices"][0]["deploymentId"], "7");

    // On /v1 a valid token that may not do this is 403, an invalid one 401.
    let service = token_of_type(&stack, TokenType::Service);
    assert_eq!(http(&stack, Method::GET, "/v1/services", Some(&service)).await.0, 403);
    assert_eq!(
        http(&stack, Method::GET, "/v1/deployed-services", Some(&service))
            .await
            .0,
        403
    );
    assert_eq!(
        http(
            &stack,
            Method::POST,
            "/v1/services/sync",
            Some(&config_token(&stack, None))
        )
        .await
        .0,
        403
    );
    assert_eq!(http(&stack, Method::GET, "/v1/services", Some("nope")).await.0, 401);
}

async fn slipway(stack: &Stack, token: &str, args: &[&str]) -> (bool, String, String) {
    let output = tokio::process::Command::new(tests::process::bin_dir().join("slipway"))
        .args(args)
        .args(["--url", &stack.url("")])
        .env("SLIPWAY_TOKEN", token)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    (
        output.status.success(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

async fn slipway_services_sync_and_list(backend: Backend) {
    let stack = Stack::start_with(backend, initial_services).await;
    let token = stack.admin_token().await;
    let root = stack.services_dir();
    write_service(
        &root,
        "gamma",
        r#"{"description": "third", "steps": [{"name": "a"}, {"name": "b"}]}"#,
        0o755,
    );
    fs::remove_dir_all(root.join("beta")).unwrap();

    let (ok, out, err) = slipway(&stack, &token, &["services", "sync"]).await;
    assert!(ok, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "added    gamma");
    assert_eq!(lines[1], "deleted  beta");
    assert!(
        lines[2].starts_with("problem  bad-json: config.json is not valid JSON"),
        "{out}"
    );
    assert_eq!(
        lines[3],
        "warning  not-executable: deploy script not-executable/deploy.sh is not executable"
    );
    assert_eq!(lines.len(), 4, "{out}");

    let (ok, out, err) = slipway(&stack, &token, &["services", "sync", "--json"]).await;
    assert!(ok, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["problems"].as_array().unwrap().len(), 1);
    assert_eq!(report["warnings"].as_array().unwrap().len(), 1);

    let (ok, out, err) = slipway(&stack, &token, &["services", "list"]).await;
    assert!(ok, "{err}");
    assert!(out.lines().next().unwrap().contains("NAME"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("gamma") && l.contains("third") && l.contains(" 2 ")),
        "{out}"
    );
    let (ok, out, _) = slipway(&stack, &token, &["services", "list", "--json"]).await;
    assert!(ok);
    let listed: Value = serde_json::from_str(&out).unwrap();
    let names: Vec<&str> = listed["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha", "not-executable", "gamma"]);

    let (ok, _, err) = slipway(&stack, "not-a-token", &["services", "list"]).await;
    assert!(!ok);
    assert!(err.contains("401"), "{err}");
}

//! The registry service over gRPC: services synced from a real services directory (at
//! start and on request, problems reported per folder), read, deleted and watched;
//! deployed services published by the deploy service only and read with config
//! tokens. On SQLite and PostgreSQL. (Through the gateway: registry_http.rs.)

use std::{fs, os::unix::fs::PermissionsExt};

use common::identity::{Credential, DEPLOY_SERVICE};
use proto::registry::v1::{self as pb, get_service_request::Key};
use serde_json::{Value, json};
use tests::grpc::bearer;
use tests::registry_fixture::*;
use tests::{Backend, Stack, on_every_backend};
use tonic::Code;

on_every_backend!(
    sync_at_start_reports_problems_and_keeps_good_services,
    sync_on_request_adds_updates_deletes,
    names_delete_and_watch,
    deployed_services_are_published_by_the_deploy_service_only,
);

fn struct_json(data: &Option<proto::wkt::Struct>) -> Value {
    serde_json::to_value(data.clone().unwrap_or_default()).unwrap()
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
        .watch_services(bearer(pb::WatchServicesRequest::default(), &config_token(&stack, None)))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let mut watch = client
        .watch_services(bearer(pb::WatchServicesRequest::default(), &token))
        .await
        .unwrap()
        .into_inner();
    // A watcher that never reads must not hold up the others.
    let _idle = registry(&stack)
        .await
        .watch_services(bearer(pb::WatchServicesRequest::default(), &token))
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

//! One storage suite for every service's `Store`, run on SQLite and PostgreSQL:
//! migrations apply (twice, harmlessly), rows round-trip, constraints hold.

use serde_json::json;
use tests::{Backend, TestDatabase, on_every_backend};

on_every_backend!(
    auth_store_users,
    auth_store_token_registry,
    registry_store_services,
    deploy_store_deployments
);

async fn database(backend: Backend, dir: &tempfile::TempDir, service: &str) -> TestDatabase {
    TestDatabase::create(backend, dir.path(), service)
        .await
        .expect("test database")
}

async fn auth_store_users(backend: Backend) {
    use auth_service::storage::{Store, StoreError};
    let dir = tempfile::tempdir().unwrap();
    let db = database(backend, &dir, "auth").await;
    let store = Store::open(&db.url).await.unwrap();
    // Opening again re-runs no migration and loses nothing.
    let alice = store.create_user("alice", "hash-1").await.unwrap();
    let store = Store::open(&db.url).await.unwrap();
    assert_eq!(store.find_user("alice").await.unwrap().unwrap().id, alice.id);
    assert!(store.find_user("bob").await.unwrap().is_none());
    assert!(matches!(
        store.create_user("alice", "hash-2").await,
        Err(StoreError::UserExists(_))
    ));

    let before = store.find_user("alice").await.unwrap().unwrap();
    store.set_password_hash(alice.id, "hash-3", false).await.unwrap();
    let rehashed = store.find_user("alice").await.unwrap().unwrap();
    assert_eq!(rehashed.password_hash, "hash-3");
    assert_eq!(rehashed.password_changed_at, before.password_changed_at);
    store.set_password_hash(alice.id, "hash-4", true).await.unwrap();
    assert!(store.find_user("alice").await.unwrap().unwrap().password_changed_at > before.password_changed_at);
    // Debug output never carries the hash.
    assert!(!format!("{rehashed:?}").contains("hash-3"));
}

async fn auth_store_token_registry(backend: Backend) {
    use auth_service::storage::{Store, StoreError, TokenFilter, tokens};
    let dir = tempfile::tempdir().unwrap();
    let db = database(backend, &dir, "auth").await;
    let store = Store::open(&db.url).await.unwrap();
    let now = chrono::Utc::now();
    let token = |id: &str, parent: Option<&str>, service: Option<&str>| tokens::Model {
        id: id.into(),
        token_type: if service.is_some() { "service" } else { "user" }.into(),
        name: id.into(),
        subject: "user:alice".into(),
        service: service.map(Into::into),
        origin: None,
        permissions: Some(json!(["deployments:start"])),
        created_by: "alice".into(),
        created_at: now,
        expires_at: now + chrono::Duration::hours(1),
        revoked_at: None,
        parent_id: parent.map(Into::into),
        deployment_id: None,
    };
    for t in [
        token("root", None, Some("alpha")),
        token("child", Some("root"), Some("alpha")),
        token("grandchild", Some("child"), Some("alpha")),
        token("other", None, None),
    ] {
        store.record_token(t).await.unwrap();
    }
    let alpha = TokenFilter {
        service: Some("alpha".into()),
        ..Default::default()
    };
    assert_eq!(store.list_tokens(&alpha).await.unwrap().len(), 3);

    // An unknown id refuses the whole request and changes nothing.
    assert!(matches!(
        store.revoke_tokens(&["child".into(), "nope".into()]).await,
        Err(StoreError::UnknownToken(id)) if id == "nope"
    ));
    assert!(!store.is_revoked("child").await.unwrap());
    assert!(store.revocations_after(0).await.unwrap().is_empty());

    // Revoking a token revokes everything derived from it, and only that.
    let revoked = store.revoke_tokens(&["child".into()]).await.unwrap();
    assert_eq!(revoked, ["child", "grandchild"]);
    assert!(!store.is_revoked("root").await.unwrap());
    let revoked = store.revoke_tokens(&["root".into()]).await.unwrap();
    assert_eq!(revoked, ["root"], "already revoked tokens are not revoked twice");
    assert!(!store.is_revoked("other").await.unwrap());
    assert_eq!(store.list_tokens(&alpha).await.unwrap().len(), 0);
    let all = TokenFilter {
        include_revoked: true,
        ..Default::default()
    };
    assert_eq!(store.list_tokens(&all).await.unwrap().len(), 4);

    // The revocation log is numbered, ordered and resumable.
    let log = store.revocations_after(0).await.unwrap();
    assert_eq!(
        log.iter().map(|r| r.token_id.as_str()).collect::<Vec<_>>(),
        ["child", "grandchild", "root"]
    );
    assert!(log.windows(2).all(|w| w[0].seq < w[1].seq));
    let rest = store.revocations_after(log[0].seq).await.unwrap();
    assert_eq!(rest.len(), 2);
}

async fn registry_store_services(backend: Backend) {
    use registry_service::storage::Store;
    let dir = tempfile::tempdir().unwrap();
    let db = database(backend, &dir, "registry").await;
    let store = Store::open(&db.url).await.unwrap();
    let a = store
        .upsert_service("alpha", json!({"steps": [{"name": "one"}]}))
        .await
        .unwrap();
    let b = store.upsert_service("beta", json!({})).await.unwrap();
    let a2 = store
        .upsert_service("alpha", json!({"description": "changed"}))
        .await
        .unwrap();
    assert_eq!(a.id, a2.id, "an update keeps the id");
    let all = store.list_services().await.unwrap();
    assert_eq!(
        all.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["alpha", "beta"]
    );
    assert_eq!(all[0].data, json!({"description": "changed"}));
    assert!(store.delete_service(b.id).await.unwrap());
    assert!(!store.delete_service(b.id).await.unwrap());
    let c = store.upsert_service("beta", json!({})).await.unwrap();
    assert!(c.id > b.id, "ids are never reused");
}

async fn deploy_store_deployments(backend: Backend) {
    use deploy_service::storage::{NewDeployment, Store};
    let dir = tempfile::tempdir().unwrap();
    let db = database(backend, &dir, "deploy").await;
    let store = Store::open(&db.url).await.unwrap();
    let new = NewDeployment {
        service_id: 7,
        service: "alpha".into(),
        origin: "github".into(),
        user: "alice".into(),
        context: json!({"env": {"FOO": "bar"}}),
    };
    let d = store.create_deployment(new).await.unwrap();
    let got = store.get_deployment(d.id).await.unwrap().unwrap();
    assert_eq!(got, d);
    assert_eq!(got.status, "queued");
    assert_eq!(got.context, json!({"env": {"FOO": "bar"}}));
    assert!(got.started.is_some() && got.finished.is_none());
    assert!(store.get_deployment(d.id + 1).await.unwrap().is_none());
}

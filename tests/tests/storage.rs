//! One storage suite for every service's `Store`, run on SQLite and PostgreSQL:
//! migrations apply (twice, harmlessly), rows round-trip, constraints hold.

use serde_json::json;
use tests::{Backend, TestDatabase, on_every_backend};

on_every_backend!(
    auth_store_users,
    auth_store_token_registry,
    auth_store_token_pages,
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

/// ListTokens pages: newest first, ties on the creation time broken by id, every token
/// exactly once however the pages fall, and a token minted between pages lands on a
/// page not yet read or on none (never repeats one already read).
async fn auth_store_token_pages(backend: Backend) {
    use auth_service::{
        paging::{self, Cursor},
        storage::{Store, TokenFilter, tokens},
    };
    let dir = tempfile::tempdir().unwrap();
    let db = database(backend, &dir, "auth").await;
    let store = Store::open(&db.url).await.unwrap();
    // Whole microseconds, so both databases keep the times exactly.
    let base = chrono::DateTime::from_timestamp(1_767_225_600, 0).unwrap();
    let token = |id: String, created_at: chrono::DateTime<chrono::Utc>| tokens::Model {
        id: id.clone(),
        token_type: "config".into(),
        name: id,
        subject: "config".into(),
        service: None,
        origin: None,
        permissions: None,
        created_by: "alice".into(),
        created_at,
        expires_at: base + chrono::Duration::days(3650),
        revoked_at: None,
        parent_id: None,
        deployment_id: None,
    };
    // Eleven tokens over four distinct times: three share each of the first three.
    let mut expected = Vec::new();
    for i in 0..11i64 {
        let at = base + chrono::Duration::microseconds(i / 3);
        let id = format!("t{:02}", (i * 7) % 11);
        store.record_token(token(id.clone(), at)).await.unwrap();
        expected.push((at, id));
    }
    expected.sort_by(|a, b| b.cmp(a));
    let expected: Vec<String> = expected.into_iter().map(|(_, id)| id).collect();
    let all = TokenFilter::default();
    let listed: Vec<String> = store
        .list_tokens(&all)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(listed, expected, "newest first, ties by id descending");

    for size in [1u32, 2, 3, 4, 10, 11, 12] {
        let (mut seen, mut after, mut pages) = (Vec::new(), None::<Cursor>, 0);
        loop {
            let (rows, next) = paging::page(&store, &all, after.as_ref(), size).await.unwrap();
            assert!(rows.len() <= size as usize);
            seen.extend(rows.into_iter().map(|t| t.id));
            pages += 1;
            if next.is_empty() {
                break;
            }
            after = Some(Cursor::decode(&next).expect("a page token this service gave"));
            assert!(pages <= 11, "size {size}: the pages never end");
        }
        assert_eq!(seen, expected, "size {size}: every token once, in order");
        assert_eq!(
            pages,
            11usize.div_ceil(size as usize).max(1),
            "size {size}: no empty last page"
        );
    }

    // A token minted while a client pages (newer than all) is not on the later pages.
    let (first, next) = paging::page(&store, &all, None, 4).await.unwrap();
    store
        .record_token(token("t99".into(), base + chrono::Duration::seconds(60)))
        .await
        .unwrap();
    let (second, _) = paging::page(&store, &all, Cursor::decode(&next).as_ref(), 4)
        .await
        .unwrap();
    let ids: Vec<&str> = first.iter().chain(&second).map(|t| t.id.as_str()).collect();
    assert_eq!(ids, expected[..8].iter().map(String::as_str).collect::<Vec<_>>());
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
    use deploy_service::{
        model::{DeploymentId, Outcome, Report},
        storage::{EventFilter, Limits, NewDeployment, ReportRefused, Store},
    };
    let limits = Limits {
        max_running: 4,
        max_running_per_service: 1,
    };
    let dir = tempfile::tempdir().unwrap();
    let db = database(backend, &dir, "deploy").await;
    let store = Store::open(&db.url).await.unwrap();
    let mut live = store.subscribe();
    let new = |service: &str, steps: &[&str]| NewDeployment {
        service_id: deploy_service::model::ServiceId(7),
        service: service.into(),
        origin: "github".into(),
        user: "alice".into(),
        context: json!({"env": {"FOO": "bar", "N": 1}}),
        deploy_script: format!("{service}/deploy.sh"),
        timeout_secs: 60,
        steps: steps.iter().map(|s| s.to_string()).collect(),
    };
    let (d, planned) = store
        .create_deployment(new("alpha", &["one", "two", "three"]))
        .await
        .unwrap();
    let got = store.get_deployment(d.id).await.unwrap().unwrap();
    assert_eq!(got, d);
    assert_eq!(got.status, "queued");
    assert_eq!(got.context, json!({"env": {"FOO": "bar", "N": 1}}));
    assert!(got.started.is_some() && got.finished.is_none() && !got.finish_requested);
    assert_eq!(got.deploy_script.as_deref(), Some("alpha/deploy.sh"));
    assert!(store.get_deployment(DeploymentId(d.id.0 + 1)).await.unwrap().is_none());
    assert_eq!(planned.iter().map(|s| s.sequence).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(planned.iter().all(|s| s.state == "pending"));

    // Reports before the run starts are refused; starting makes the first step run.
    let report = |name: &str, state: &str| Report::new(name, state, "msg", None).unwrap();
    assert!(matches!(
        store.apply_reports(d.id, &[report("one", "success")], None).await,
        Err(ReportRefused::NotStarted)
    ));
    let (running, claim) = store.claim_next("runner-1", limits).await.unwrap().unwrap();
    assert_eq!(
        (running.id, running.status),
        (d.id, deploy_service::model::Status::Running)
    );
    assert!(
        store.claim_next("runner-1", limits).await.unwrap().is_none(),
        "started once only"
    );
    let steps = store.visible_steps(d.id).await.unwrap();
    assert_eq!(steps[0].state, "running");
    let applied = store
        .apply_reports(
            d.id,
            &[report("one", "success"), report("extra", "success")],
            Some(&claim),
        )
        .await
        .unwrap();
    assert_eq!(
        applied.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["one", "extra"]
    );
    assert_eq!(applied[1].sequence, 4);
    store.set_process(d.id, &claim, 4242, Some(99)).await.unwrap();
    store.set_token(d.id, &claim, "jti-1").await.unwrap();
    let row = store.get_deployment(d.id).await.unwrap().unwrap();
    assert_eq!(
        (row.pid, row.process_start, row.token_id.as_deref()),
        (Some(4242), Some(99), Some("jti-1"))
    );

    // Ending: a failed step says why, unfinished steps are removed but kept.
    let ended = store
        .end_run(d.id, &claim, &Outcome::Failed("boom".into()), Some(3))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (ended.status.as_str(), ended.failure_reason.as_deref()),
        ("failed", Some("boom"))
    );
    assert_eq!(ended.exit_code, Some(3));
    let visible = store.visible_steps(d.id).await.unwrap();
    let names: Vec<(&str, &str)> = visible.iter().map(|s| (s.name.as_str(), s.state.as_str())).collect();
    assert_eq!(
        names,
        [("one", "success"), ("extra", "success"), ("failed step", "failure")]
    );
    assert!(matches!(
        store.apply_reports(d.id, &[report("two", "success")], None).await,
        Err(ReportRefused::Finished)
    ));
    let again = store
        .end_deployment(d.id, &Outcome::Exited, None, false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again, ended, "an ended deployment stays as it ended");

    // Only a succeeded deployment plans the next one, removed steps included.
    assert!(
        store
            .last_succeeded_steps(deploy_service::model::ServiceId(7))
            .await
            .unwrap()
            .is_empty()
    );
    let (d2, _) = store.create_deployment(new("alpha", &["a", "b"])).await.unwrap();
    let (_, claim2) = store.claim_next("runner-1", limits).await.unwrap().unwrap();
    store
        .apply_reports(d2.id, &[report("a", "success")], None)
        .await
        .unwrap();
    let ok = store
        .end_run(d2.id, &claim2, &Outcome::Exited, Some(0))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ok.status, "succeeded");
    let last = store
        .last_succeeded_steps(deploy_service::model::ServiceId(7))
        .await
        .unwrap();
    assert_eq!(
        last.iter().map(|s| (s.name.as_str(), s.removed)).collect::<Vec<_>>(),
        [("a", false), ("b", true)]
    );
    assert!(store.visible_steps(d2.id).await.unwrap().iter().all(|s| s.name == "a"));

    // A queued deployment is cancelled only while queued.
    let (d3, _) = store.create_deployment(new("beta", &["x"])).await.unwrap();
    let cancelled = Outcome::Cancelled("cancelled by alice".into());
    let c = store
        .end_deployment(d3.id, &cancelled, None, true)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.status, "cancelled");
    assert!(
        store
            .end_deployment(d2.id, &cancelled, None, true)
            .await
            .unwrap()
            .is_none()
    );

    // Events: one global increasing sequence, filterable, resumable, broadcast in order.
    let all = store.events_after(0, &EventFilter::default(), 1000).await.unwrap();
    assert!(all.windows(2).all(|w| w[0].sequence < w[1].sequence));
    assert_eq!(store.last_sequence().await.unwrap(), all.last().unwrap().sequence);
    let mut broadcast = Vec::new();
    while let Ok(event) = live.try_recv() {
        broadcast.push(event);
    }
    assert_eq!(broadcast, all);
    let deleted: Vec<_> = all
        .iter()
        .filter(|e| e.deleted)
        .map(|e| e.payload["name"].clone())
        .collect();
    assert_eq!(deleted, [json!("two"), json!("three"), json!("b"), json!("x")]);
    let beta = EventFilter {
        service: Some("beta".into()),
        deployment_id: None,
    };
    let beta_events = store.events_after(0, &beta, 1000).await.unwrap();
    assert!(!beta_events.is_empty() && beta_events.iter().all(|e| e.deployment_id == d3.id));
    let rest = store
        .events_after(all[2].sequence, &EventFilter::default(), 1000)
        .await
        .unwrap();
    assert_eq!(rest, all[3..]);

    // Reopening migrates nothing twice and loses nothing; ids are never reused.
    let store = Store::open(&db.url).await.unwrap();
    assert_eq!(store.get_deployment(d.id).await.unwrap().unwrap(), ended);
    let (d4, steps4) = store.create_deployment(new("alpha", &["z"])).await.unwrap();
    assert!(d4.id > d3.id);
    let max_step = all
        .iter()
        .filter(|e| e.kind == "step")
        .map(|e| e.payload["id"].as_str().unwrap().parse::<i64>().unwrap())
        .max()
        .unwrap();
    assert!(steps4[0].id > max_step);
}

//! The scale-out bench's queue measurement (`tests::claim_rate`, issue 15 item 10) at
//! CI size on PostgreSQL: three stores standing for three deploy replicas claim from
//! one queue in the queue's batches. Runs left running: every deployment claimed once,
//! within the global limit. Runs ended as claimed, with the per-service limit binding:
//! every deployment ran once and succeeded, and the queue is empty at the end.

use deploy_service::{queue::CLAIM_BATCH, storage::Limits};
use sea_orm::{ConnectionTrait, Database, Statement};
use tests::{
    Backend, TestDatabase,
    claim_rate::{self, Runs},
};

const DEPLOYMENTS: usize = 60;

async fn count(url: &str, sql: &str) -> usize {
    let db = Database::connect(url).await.unwrap();
    db.query_all_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap()
        .len()
}

/// A fresh deploy database on PostgreSQL (and the directory it is named after); None
/// where PostgreSQL is not there and not required.
async fn database() -> Option<(tempfile::TempDir, TestDatabase)> {
    if !Backend::Postgres.available().await {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::create(Backend::Postgres, dir.path(), "deploy")
        .await
        .unwrap();
    Some((dir, db))
}

#[tokio::test(flavor = "multi_thread")]
async fn claims_alone_take_every_deployment_once() {
    let Some((_dir, db)) = database().await else {
        return;
    };
    let limits = Limits {
        max_running: DEPLOYMENTS as u32,
        max_running_per_service: 1,
    };
    let rate = claim_rate::measure(
        &db.url,
        3,
        DEPLOYMENTS,
        DEPLOYMENTS,
        CLAIM_BATCH,
        limits,
        Runs::KeepRunning,
    )
    .await
    .unwrap();
    assert_eq!(rate.claimed, DEPLOYMENTS);
    assert!(rate.batches >= DEPLOYMENTS.div_ceil(CLAIM_BATCH), "{rate:?}");
    let running = count(&db.url, "SELECT deployment_id FROM run_queue WHERE state = 'running'").await;
    assert_eq!(running, DEPLOYMENTS, "each claimed once, none left queued");
    let slots = count(&db.url, "SELECT DISTINCT global_slot FROM run_queue").await;
    assert_eq!(slots, DEPLOYMENTS, "every run in a global slot of its own");
}

#[tokio::test(flavor = "multi_thread")]
async fn turn_over_at_the_per_service_limit_runs_every_deployment_once() {
    let Some((_dir, db)) = database().await else {
        return;
    };
    let limits = Limits {
        max_running: 4,
        max_running_per_service: 1,
    };
    let rate = claim_rate::measure(&db.url, 3, DEPLOYMENTS, 6, CLAIM_BATCH, limits, Runs::EndAtOnce)
        .await
        .unwrap();
    assert_eq!(rate.claimed, DEPLOYMENTS);
    let succeeded = count(&db.url, "SELECT id FROM deployments WHERE status = 'succeeded'").await;
    assert_eq!(succeeded, DEPLOYMENTS, "every deployment ran and ended");
    assert_eq!(count(&db.url, "SELECT deployment_id FROM run_queue").await, 0);
}

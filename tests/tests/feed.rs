//! The table feed (`common::feed`) on real databases: rows a process hands over are
//! delivered at once and in order; rows another writer commits arrive by `NOTIFY`
//! (PostgreSQL) or the safety poll (SQLite); a follower on a second connection sees
//! the same rows in the same order; and a gap (a sequence taken by a transaction not
//! yet committed) is held until it fills, or skipped once the hold passes when it was
//! rolled back.

use std::time::Duration;

use common::feed::{Feed, Source, announce};
use sea_orm::{
    ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, Statement, TransactionTrait,
};
use tests::{Backend, db::TestDatabase, on_every_backend, wait_until};
use tokio::sync::broadcast;

on_every_backend!(
    rows_are_delivered_in_order_to_every_follower,
    service_events_are_stored_with_each_change_and_pruned,
);

#[tokio::test(flavor = "multi_thread")]
async fn a_gap_is_held_until_it_fills() {
    if Backend::Postgres.available().await {
        gap_fills().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rolled_back_gap_is_skipped_after_the_hold() {
    if Backend::Postgres.available().await {
        gap_skipped().await;
    }
}

const CHANNEL: &str = "slipway_feed_test";

#[derive(Clone)]
struct Rows(DatabaseConnection);

type Row = (i64, String);

impl Source for Rows {
    type Row = Row;

    fn sequence(row: &Row) -> i64 {
        row.0
    }

    async fn rows_after(&self, after: i64, limit: u64) -> Result<Vec<Row>, DbErr> {
        let sql =
            format!("SELECT sequence, body FROM feed_rows WHERE sequence > {after} ORDER BY sequence LIMIT {limit}");
        let rows = self
            .0
            .query_all_raw(Statement::from_string(self.0.get_database_backend(), sql))
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("", "sequence")?, r.try_get("", "body")?)))
            .collect()
    }

    async fn last_sequence(&self) -> Result<i64, DbErr> {
        let sql = "SELECT COALESCE(MAX(sequence), 0) AS last FROM feed_rows";
        let row = self
            .0
            .query_one_raw(Statement::from_string(self.0.get_database_backend(), sql))
            .await?
            .ok_or_else(|| DbErr::Custom("no row".into()))?;
        row.try_get("", "last")
    }
}

async fn open(backend: Backend, dir: &std::path::Path) -> (TestDatabase, DatabaseConnection) {
    let database = TestDatabase::create(backend, dir, "feed").await.unwrap();
    let db = Database::connect(&database.url).await.unwrap();
    let create = match backend {
        Backend::Sqlite => "CREATE TABLE feed_rows (sequence INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL)",
        Backend::Postgres => "CREATE TABLE feed_rows (sequence BIGSERIAL PRIMARY KEY, body TEXT NOT NULL)",
    };
    db.execute_unprepared(create).await.unwrap();
    (database, db)
}

/// Inserts one row in `txn` (announced, not committed); its sequence.
async fn insert(txn: &DatabaseTransaction, body: &str) -> i64 {
    let backend = txn.get_database_backend();
    let sql = match backend {
        DbBackend::Postgres => "INSERT INTO feed_rows (body) VALUES ($1) RETURNING sequence",
        _ => "INSERT INTO feed_rows (body) VALUES (?) RETURNING sequence",
    };
    let row = txn
        .query_one_raw(Statement::from_sql_and_values(backend, sql, [body.into()]))
        .await
        .unwrap()
        .unwrap();
    let sequence: i64 = row.try_get("", "sequence").unwrap();
    announce(txn, CHANNEL, sequence).await.unwrap();
    sequence
}

async fn write(db: &DatabaseConnection, body: &str) -> Row {
    let txn = db.begin().await.unwrap();
    let sequence = insert(&txn, body).await;
    txn.commit().await.unwrap();
    (sequence, body.to_owned())
}

/// Waits until `receiver` has delivered `count` more rows; returns them.
async fn receive(receiver: &mut broadcast::Receiver<Row>, count: usize) -> Vec<Row> {
    let mut got = Vec::new();
    while got.len() < count {
        match tokio::time::timeout(Duration::from_secs(30), receiver.recv()).await {
            Ok(Ok(row)) => got.push(row),
            other => panic!("after {got:?}: {other:?}"),
        }
    }
    got
}

async fn rows_are_delivered_in_order_to_every_follower(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (database, db) = open(backend, dir.path()).await;
    let before = write(&db, "before").await;
    // Two followers on connections of their own, as two replicas.
    let here = Feed::start(Rows(db.clone()), &db, CHANNEL).await.unwrap();
    let there_db = Database::connect(&database.url).await.unwrap();
    let there = Feed::start(Rows(there_db.clone()), &there_db, CHANNEL).await.unwrap();
    assert_eq!(here.position(), before.0, "a feed starts after the last row");
    let mut on_here = here.subscribe().receiver;
    let mut on_there = there.subscribe().receiver;

    // Written here and handed over: delivered here at once, there by notice or poll.
    let mut written = Vec::new();
    for i in 0..5 {
        let row = write(&db, &format!("row {i}")).await;
        here.committed(vec![row.clone()]);
        written.push(row);
    }
    assert_eq!(receive(&mut on_here, 5).await, written);
    assert_eq!(receive(&mut on_there, 5).await, written);

    // Written by another writer, not handed over: read from the table by both.
    let mut more = Vec::new();
    for i in 0..3 {
        more.push(write(&there_db, &format!("more {i}")).await);
    }
    assert_eq!(receive(&mut on_here, 3).await, more);
    assert_eq!(receive(&mut on_there, 3).await, more);
    let last = more.last().unwrap().0;
    wait_until(Duration::from_secs(10), async || match here.position() == last {
        true => Ok(()),
        false => Err(format!("position {} not {last}", here.position())),
    })
    .await;
}

/// A transaction takes a sequence and stays open while a later one commits.
async fn gap_open(db: &DatabaseConnection) -> (DatabaseTransaction, i64, Row) {
    let open = db.begin().await.unwrap();
    let missing = insert(&open, "slow").await;
    let after = write(db, "fast").await;
    assert_eq!(after.0, missing + 1);
    (open, missing, after)
}

async fn gap_fills() {
    let dir = tempfile::tempdir().unwrap();
    let (database, db) = open(Backend::Postgres, dir.path()).await;
    let first = write(&db, "first").await;
    let feed_db = Database::connect(&database.url).await.unwrap();
    // A hold far longer than the test, so the gap can only end by filling.
    let feed = Feed::start_holding(Rows(feed_db.clone()), &feed_db, CHANNEL, Duration::from_secs(600))
        .await
        .unwrap();
    let mut receiver = feed.subscribe().receiver;
    let (open, missing, after) = gap_open(&db).await;
    let behind = write(&db, "behind").await;
    // Nothing after the gap is delivered while it is open.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(receiver.try_recv().is_err(), "delivered past an open gap");
    assert_eq!(feed.position(), first.0);
    open.commit().await.unwrap();
    let got = receive(&mut receiver, 3).await;
    assert_eq!(got, [(missing, "slow".to_owned()), after, behind]);
}

async fn gap_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let (database, db) = open(Backend::Postgres, dir.path()).await;
    write(&db, "first").await;
    let feed_db = Database::connect(&database.url).await.unwrap();
    let feed = Feed::start_holding(Rows(feed_db.clone()), &feed_db, CHANNEL, Duration::from_millis(300))
        .await
        .unwrap();
    let mut receiver = feed.subscribe().receiver;
    let (open, _missing, after) = gap_open(&db).await;
    open.rollback().await.unwrap();
    assert_eq!(receive(&mut receiver, 1).await, [after]);
}

/// The registry stores an event with each change to a service, in the change's
/// transaction, delivers it through its feed, and prunes old ones.
async fn service_events_are_stored_with_each_change_and_pruned(backend: Backend) {
    use registry_service::storage::Store;
    let dir = tempfile::tempdir().unwrap();
    let database = TestDatabase::create(backend, dir.path(), "registry").await.unwrap();
    let store = Store::open(&database.url).await.unwrap();
    let mut live = store.follow().receiver;
    let alpha = store.upsert_service("alpha", serde_json::json!({})).await.unwrap();
    store.upsert_service("beta", serde_json::json!({})).await.unwrap();
    store
        .upsert_service("alpha", serde_json::json!({"x": 1}))
        .await
        .unwrap();
    assert!(store.delete_service(alpha.id).await.unwrap());
    let mut got = Vec::new();
    while let Ok(event) = live.try_recv() {
        got.push((event.service, event.deleted, event.sequence));
    }
    let names: Vec<(&str, bool)> = got.iter().map(|(s, d, _)| (s.as_str(), *d)).collect();
    assert_eq!(
        names,
        [("alpha", false), ("beta", false), ("alpha", false), ("alpha", true)]
    );
    assert!(got.windows(2).all(|w| w[0].2 < w[1].2), "{got:?}");
    assert_eq!(store.feed_position(), got[3].2);
    let stored = store.service_events_between(0, i64::MAX, 100).await.unwrap();
    assert_eq!(stored.len(), 4);
    assert_eq!(stored[3].payload["name"], "alpha");

    // All but the newest two, then everything older than now.
    assert_eq!(
        store.prune_service_events(chrono::Duration::days(1), 2).await.unwrap(),
        2
    );
    assert_eq!(
        store.service_events_between(0, i64::MAX, 100).await.unwrap(),
        stored[2..]
    );
    assert_eq!(
        store.prune_service_events(chrono::Duration::zero(), 100).await.unwrap(),
        2
    );
}

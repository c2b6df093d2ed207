//! Growth and retention figures on the deploy service's storage (no services running):
//!
//! * output: one run printing `SLIPWAY_BENCH_LOG_LINES` lines (default 1,000,000)
//!   through the run's log to the batched writer with the default bound (10,000 lines,
//!   4 MiB): how fast the runner hands lines over (never waiting for the database),
//!   and how long until the run's log is complete in storage;
//! * retention: a database of `SLIPWAY_BENCH_DEPLOYMENTS` deployments (default
//!   100,000; the figure is 1,000,000) over `SLIPWAY_BENCH_SERVICES` services
//!   (default 1,000; issue: 10,000), 3 steps, 4 events and 2 output lines each,
//!   finished over the last 365 days, pruned to the default policy (90 days, the
//!   newest 50 per service, each service's last success); prints the pruning time,
//!   the latency of paginated lists read during it (p50/p99/max) and the database
//!   size before and after (SQLite: after VACUUM too).
//!
//! SQLite in a temp dir, or PostgreSQL with `SLIPWAY_BENCH_DATABASE_URL`; the batch
//! size with `SLIPWAY_BENCH_BATCH` (default 50, as `--retention-batch`).
//! `cargo bench -p deploy-service --bench retention`

use std::time::{Duration, Instant};

use chrono::Utc;
use deploy_service::{
    logs::{LogLimits, Logs, Stream},
    model::{DeploymentId, ServiceId, Status},
    retention::{self, RetentionPolicy},
    storage::{Store, deployments, events, log_lines, steps},
};
use sea_orm::{ConnectionTrait, DbBackend, EntityTrait, IntoActiveModel, Statement, TransactionTrait};
use serde_json::json;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(bench())
}

async fn bench() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let url =
        std::env::var("SLIPWAY_BENCH_DATABASE_URL").unwrap_or_else(|_| common::db::sqlite_url(dir.path(), "deploy.db"));
    let store = Store::open(&url).await?;
    output(&store).await?;
    retention(&store, dir.path()).await
}

async fn output(store: &Store) -> anyhow::Result<()> {
    let lines = env_or("SLIPWAY_BENCH_LOG_LINES", 1_000_000);
    let logs = Logs::start(store.clone(), LogLimits::default());
    let mut log = logs.run_log(DeploymentId(1_000_000_000));
    let text = "2026-12-01T04:00:00Z building layer 12/40: sha256:0123456789abcdef 12.3 MB/s";
    let started = Instant::now();
    for n in 0..lines {
        log.push(Stream::Stdout, Utc::now(), text);
        // The runner hands over what it has after each read of up to 256 lines.
        if n % 256 == 255 {
            log.flush();
        }
    }
    let handed = started.elapsed();
    log.close().await;
    let stored = started.elapsed();
    let page = store.log_lines(DeploymentId(1_000_000_000), 0, 20_000).await?;
    let summary = store.log_summary(DeploymentId(1_000_000_000)).await?;
    println!(
        "output: {lines} lines handed over in {:.0} ms ({:.0} lines/s on the runner's side); \
         log complete in storage after {:.0} ms; kept {} rows (first line {}), {} dropped",
        handed.as_secs_f64() * 1e3,
        lines as f64 / handed.as_secs_f64(),
        stored.as_secs_f64() * 1e3,
        page.len(),
        page.first().map_or(0, |l| l.line),
        summary.map_or(0, |s| s.dropped_lines),
    );
    Ok(())
}

async fn retention(store: &Store, dir: &std::path::Path) -> anyhow::Result<()> {
    let total = env_or("SLIPWAY_BENCH_DEPLOYMENTS", 100_000);
    let services = env_or("SLIPWAY_BENCH_SERVICES", 1_000).max(1);
    let started = Instant::now();
    fill(store, total, services).await?;
    println!(
        "retention: filled {total} deployments over {services} services in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let before = size(store, dir).await?;
    let policy = RetentionPolicy {
        keep_days: 90,
        keep_per_service: 50,
        batch: env_or("SLIPWAY_BENCH_BATCH", 50) as u32,
        interval: Duration::from_secs(3600),
    };
    // Readers page through deployments of random services while pruning runs.
    let stop = tokio_util::sync::CancellationToken::new();
    let reader = {
        let (store, stop) = (store.clone(), stop.clone());
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut n = 0_usize;
            while !stop.is_cancelled() {
                n += 1;
                let service = format!("svc-{}", (n * 7919) % services);
                let at = Instant::now();
                let page = store.list_deployments(Some(&service), DeploymentId(0), 51).await;
                if let Ok(page) = page
                    && let Some(last) = page.last()
                {
                    let _ = store.list_deployments(Some(&service), last.id, 51).await;
                }
                latencies.push(at.elapsed().as_secs_f64() * 1e3 / 2.0);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            latencies
        })
    };
    let pruning = Instant::now();
    let pass = retention::prune_once(store, policy).await?;
    let took = pruning.elapsed();
    stop.cancel();
    let mut latencies = reader.await?;
    latencies.sort_by(f64::total_cmp);
    let at = |p: f64| latencies[((latencies.len().max(1) - 1) as f64 * p).round() as usize];
    let after = size(store, dir).await?;
    let left = store.connection().query_one_raw(Statement::from_string(
        store.connection().get_database_backend(),
        "SELECT COUNT(*) AS n FROM deployments",
    ));
    let left: i64 = left.await?.map_or(Ok(0), |row| row.try_get("", "n"))?;
    println!(
        "retention: pruned {} deployments in {} batches in {:.1} s ({:.0}/s); {left} left",
        pass.deployments,
        pass.batches,
        took.as_secs_f64(),
        pass.deployments as f64 / took.as_secs_f64()
    );
    if !latencies.is_empty() {
        println!(
            "retention: {} paginated list reads during pruning: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            latencies.len(),
            at(0.5),
            at(0.99),
            at(1.0)
        );
    }
    println!(
        "retention: database size before {:.1} MiB, after pruning {:.1} MiB",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0
    );
    if store.connection().get_database_backend() == DbBackend::Sqlite {
        store.connection().execute_unprepared("VACUUM").await?;
        println!(
            "retention: after VACUUM {:.1} MiB",
            size(store, dir).await? as f64 / 1048576.0
        );
    }
    Ok(())
}

/// Bytes the database takes (SQLite: the file and its WAL; PostgreSQL: the database).
async fn size(store: &Store, dir: &std::path::Path) -> anyhow::Result<u64> {
    let db = store.connection();
    if db.get_database_backend() == DbBackend::Postgres {
        let row = db
            .query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT pg_database_size(current_database()) AS n",
            ))
            .await?;
        return Ok(row.map_or(Ok(0_i64), |r| r.try_get("", "n"))?.max(0) as u64);
    }
    db.execute_unprepared("PRAGMA wal_checkpoint(TRUNCATE)").await?;
    let file = |name: &str| std::fs::metadata(dir.join(name)).map_or(0, |m| m.len());
    Ok(file("deploy.db") + file("deploy.db-wal"))
}

/// Deployments finished over the last 365 days (oldest first), 80% succeeded.
async fn fill(store: &Store, total: usize, services: usize) -> anyhow::Result<()> {
    let db = store.connection();
    let now = Utc::now();
    let chunk = 400;
    let mut next_step = 1_i64;
    for start in (0..total).step_by(chunk) {
        let txn = db.begin().await?;
        let mut ds = Vec::new();
        let mut ss = Vec::new();
        let mut es = Vec::new();
        let mut ls = Vec::new();
        for n in start..(start + chunk).min(total) {
            let id = DeploymentId(n as i64 + 1);
            let age = chrono::Duration::seconds(((total - n) as f64 / total as f64 * 365.0 * 86_400.0) as i64);
            let finished = now - age;
            let service = n % services;
            let status = if n % 5 == 0 { Status::Failed } else { Status::Succeeded };
            ds.push(
                deployments::Model {
                    id,
                    service_id: ServiceId(service as i64 + 1),
                    service: format!("svc-{service}"),
                    origin: "ci".into(),
                    user: "bench".into(),
                    context: json!({"env": {}}),
                    status,
                    started: Some(finished - chrono::Duration::seconds(60)),
                    finished: Some(finished),
                    failure_reason: None,
                    run_started: Some(finished - chrono::Duration::seconds(59)),
                    deploy_script: Some(format!("svc-{service}/deploy.sh")),
                    timeout_secs: Some(3600),
                    runner_id: None,
                    pid: None,
                    process_start: None,
                    token_id: None,
                    finish_requested: false,
                    deployed_config: None,
                    exit_code: Some(0),
                }
                .into_active_model(),
            );
            for (sequence, name) in ["build", "test", "release"].into_iter().enumerate() {
                ss.push(
                    steps::Model {
                        id: next_step,
                        deployment_id: id,
                        sequence: sequence as i64 + 1,
                        name: name.into(),
                        state: "success".into(),
                        started: Some(finished),
                        finished: Some(finished),
                        message: String::new(),
                        removed: false,
                    }
                    .into_active_model(),
                );
                next_step += 1;
            }
            for kind in ["deployment", "step", "step", "step"] {
                let mut event = events::Model {
                    sequence: 0,
                    deployment_id: id,
                    service: format!("svc-{service}"),
                    kind: kind.into(),
                    deleted: false,
                    payload: json!({"id": id.to_string(), "state": "success"}),
                    created_at: finished,
                }
                .into_active_model();
                event.sequence = sea_orm::ActiveValue::NotSet;
                es.push(event);
            }
            for line in 1..=2 {
                ls.push(
                    log_lines::Model {
                        deployment_id: id,
                        line,
                        stream: 1,
                        time: finished,
                        text: "some output of the deploy script".into(),
                    }
                    .into_active_model(),
                );
            }
        }
        deployments::Entity::insert_many(ds).exec(&txn).await?;
        for part in ss.chunks(1000) {
            steps::Entity::insert_many(part.to_vec()).exec(&txn).await?;
        }
        for part in es.chunks(1000) {
            events::Entity::insert_many(part.to_vec()).exec(&txn).await?;
        }
        for part in ls.chunks(1000) {
            log_lines::Entity::insert_many(part.to_vec()).exec(&txn).await?;
        }
        txn.commit().await?;
    }
    Ok(())
}

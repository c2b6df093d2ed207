//! `cargo bench -p tests --bench scale_out`: issue 15's figures. First the queue alone
//! at the storage level (`tests::claim_rate`, three stores standing for three deploy
//! replicas on one PostgreSQL database): claims per second with nothing ending (target
//! 1,000/s), and the turn-over with the per-service limit binding, one per transaction
//! and in the queue's batches. Then the scale-out run (`tests::scale_out`: 2 gateways,
//! 2 auth, 2 registry, 3 deploy replicas; 1,000 deployments over 100 services through
//! both gateways, a watcher on each, a deploy and an auth replica killed and restarted,
//! a key rotation and 100 revocations), printing:
//!
//! - event fan-out latency (acceptance answered to the deployment's first event at the
//!   watcher of each gateway; p50, p95 (target 250 ms), max);
//! - revocation propagation (revoking call answered to every gateway refusing, p50,
//!   p95, max);
//! - then a burst of as many deployments on the settled system: runs started per second
//!   end to end (bounded by the scripts and the gateways, not the queue).
//!
//! Asserts no timing. `SLIPWAY_SCALE_DEPLOYMENTS`, `SLIPWAY_SCALE_SERVICES` and
//! `SLIPWAY_SCALE_REVOCATIONS` change the size.

use std::{
    sync::{Arc, atomic::AtomicUsize},
    time::Duration,
};

use deploy_service::{queue::CLAIM_BATCH, storage::Limits};
use tests::{
    Backend, TestDatabase,
    claim_rate::{self, Runs},
    scale_out::{self, Load, at, quantile},
};

#[tokio::main]
async fn main() {
    assert!(Backend::Postgres.available().await, "the bench needs PostgreSQL");
    let load = Load::full();
    claims(&load).await;
    println!(
        "scale-out: {} deployments over {} services, {} revocations, max running {} over the deploy replicas",
        load.deployments, load.services, load.revocations, load.max_running
    );
    let mut replicas = scale_out::start(&load).await;
    let outcome = scale_out::run(&mut replicas, &load).await;
    println!(
        "run: {:?}; {} still open at the end; {} submissions answered with an error; {} valid tokens refused",
        outcome.elapsed,
        outcome.unfinished,
        outcome.submit_errors.len(),
        outcome.valid_refusals.len()
    );
    let mut errors = outcome.submit_errors.clone();
    errors.sort();
    errors.dedup();
    for error in errors.iter().take(5) {
        println!("  submission answered with: {error}");
    }

    let fan_out = scale_out::fan_out_latencies(&outcome);
    println!(
        "event fan-out across replicas ({} deliveries): p50 {:?}, p95 {:?} (target 250 ms), max {:?}",
        fan_out.len(),
        quantile(&fan_out, 0.5),
        quantile(&fan_out, 0.95),
        fan_out.last().copied().unwrap_or_default()
    );
    let mut revocations: Vec<Duration> = outcome.revocations.iter().filter_map(|r| r.refused_after).collect();
    revocations.sort();
    println!(
        "revocation propagation to every gateway ({} of {} refused within 30 s): p50 {:?}, p95 {:?}, max {:?}",
        revocations.len(),
        outcome.revocations.len(),
        quantile(&revocations, 0.5),
        quantile(&revocations, 0.95),
        revocations.last().copied().unwrap_or_default()
    );

    // The burst: as many again, on the settled system, without faults.
    let admin = replicas.admin_token(0).await;
    let before = outcome.deployments.iter().map(|d| d.id).max().unwrap_or(0);
    let burst = Load {
        concurrency: 32,
        ..load
    };
    scale_out::submit_all(
        burst,
        replicas.gateways.clone(),
        admin.clone(),
        Arc::new(AtomicUsize::new(0)),
    )
    .await;
    let mut all = Vec::new();
    for _ in 0..1200 {
        all = scale_out::list_all(replicas.gateways[0], &admin).await;
        if all.iter().all(scale_out::is_final) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let starts: Vec<(i64, i32)> = all
        .iter()
        .filter(|d| d.id > before)
        .filter_map(|d| at(&d.run_started))
        .collect();
    let (Some(first), Some(last)) = (starts.iter().min(), starts.iter().max()) else {
        println!("claims: no run of the burst started");
        return;
    };
    let span = (last.0 - first.0) as f64 + f64::from(last.1 - first.1) / 1e9;
    println!(
        "end to end, runs started across 3 deploy replicas (per-service limit 1; accepted through the gateways, each a real script): {} over {:.2} s: {:.0}/s",
        starts.len(),
        span,
        starts.len() as f64 / span.max(1e-3)
    );
}

/// The queue's own rate (`tests::claim_rate`), 3 stores standing for 3 replicas:
/// claims alone (every deployment of its own service, nothing ends), then the turn-over
/// of the load's services with the per-service limit 1 (each run ended as claimed);
/// one per transaction and in the queue's batches.
async fn claims(load: &Load) {
    let cases = [
        (Runs::KeepRunning, load.deployments, load.deployments),
        (Runs::EndAtOnce, load.services, load.max_running),
    ];
    for (runs, services, max_running) in cases {
        let limits = Limits {
            max_running: u32::try_from(max_running).unwrap_or(u32::MAX),
            max_running_per_service: 1,
        };
        for batch in [1, CLAIM_BATCH] {
            let dir = tempfile::tempdir().expect("temp dir");
            let db = TestDatabase::create(Backend::Postgres, dir.path(), "deploy")
                .await
                .expect("bench database");
            let rate = claim_rate::measure(&db.url, 3, load.deployments, services, batch, limits, runs)
                .await
                .expect("claims");
            let what = match runs {
                Runs::KeepRunning => "claimed, left running",
                Runs::EndAtOnce => "claimed and ended at once",
            };
            println!(
                "queue across 3 replicas, {services} services, limits {max_running} / 1 per service, at most {batch} per claim: {} {what} in {:.2?} ({} claims): {:.0}/s (target 1,000/s)",
                rate.claimed,
                rate.elapsed,
                rate.batches,
                rate.per_second()
            );
        }
    }
}

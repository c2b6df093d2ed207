//! The scale-out proof (issue 15, item 9), on PostgreSQL (required in CI): 2 gateways,
//! 2 auth, 2 registry and 3 deploy replicas on one database; deployments of many
//! services sent through both gateways with a watcher on each; one deploy replica and
//! one auth replica killed with SIGKILL and started again during the run; a key
//! rotation and revocations on different auth replicas. CI's numbers (100 deployments
//! over 10 services, 10 revocations; `SLIPWAY_SCALE_*` raise them, and
//! `cargo bench -p tests --bench scale_out` runs the 1,000 over 100).

use std::{collections::HashSet, time::Duration};

use tests::{
    Backend,
    scale_out::{self, Load, Outcome, at, by_service, is_final},
};

/// The bound on revocation propagation: every gateway refuses a revoked token within
/// this (measured from the revoking call's answer to the last gateway's 401, polling).
const REVOCATION_BOUND: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_lose_nothing_when_one_of_each_dies() {
    if !Backend::Postgres.available().await {
        return;
    }
    let load = Load::ci();
    let mut replicas = scale_out::start(&load).await;
    let outcome = scale_out::run(&mut replicas, &load).await;
    report(&load, &outcome);
    let logs = || replicas.logs();

    // Every deployment accepted is there, and every deployment ended.
    assert_eq!(outcome.accepted.len(), load.deployments);
    for accepted in &outcome.accepted {
        assert!(
            outcome.deployments.iter().any(|d| d.id == accepted.id),
            "deployment {} is missing",
            accepted.id
        );
    }
    let open: Vec<String> = outcome
        .deployments
        .iter()
        .filter(|d| !is_final(d))
        .map(|d| format!("{} of {}: {:?}", d.id, d.service, d.status()))
        .collect();
    assert!(open.is_empty(), "not finished: {open:?}\n{}", logs());
    assert_eq!(outcome.unfinished, 0);

    // One service's runs never overlapped, and started in the order they were accepted.
    for (service, runs) in by_service(&outcome.deployments) {
        let ran: Vec<_> = runs.iter().filter(|d| d.run_started.is_some()).collect();
        for pair in ran.windows(2) {
            let (earlier, later) = (pair[0], pair[1]);
            assert!(
                at(&later.run_started) >= at(&earlier.run_started),
                "{service}: {} (accepted later) started before {}",
                later.id,
                earlier.id
            );
            let finished = at(&earlier.finished).expect("a finished run has its end");
            assert!(
                at(&later.run_started).expect("it ran") >= finished,
                "{service}: runs {} and {} overlapped",
                earlier.id,
                later.id
            );
        }
    }

    // Both watchers saw every stored event exactly once, in order.
    assert!(!outcome.replay.is_empty());
    for (i, watched) in outcome.watched.iter().enumerate() {
        let seen: Vec<_> = watched.events.iter().map(|(s, _)| s.clone()).collect();
        for pair in seen.windows(2) {
            assert!(
                pair[0].sequence < pair[1].sequence,
                "watcher {i}: {:?} then {:?} (a repeat or out of order)",
                pair[0],
                pair[1]
            );
        }
        let (stored, got): (HashSet<_>, HashSet<_>) = (outcome.replay.iter().collect(), seen.iter().collect());
        let missing: Vec<_> = outcome.replay.iter().filter(|e| !got.contains(e)).take(10).collect();
        let extra: Vec<_> = seen.iter().filter(|e| !stored.contains(e)).take(10).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "watcher {i} (reconnected {} times) saw {} events, {} stored; missed e.g. {missing:?}; \
             saw that are not stored, e.g. {extra:?}",
            watched.reconnects,
            seen.len(),
            outcome.replay.len()
        );
    }

    // Every revoked token was refused by every gateway, within the bound.
    for (i, revocation) in outcome.revocations.iter().enumerate() {
        let after = revocation.refused_after.unwrap_or_else(|| {
            panic!(
                "revoked token {i} (on {}) still accepted after 30 s",
                revocation.replica
            )
        });
        assert!(
            after <= REVOCATION_BOUND,
            "revoked token {i} (on {}) refused everywhere only after {after:?}",
            revocation.replica
        );
    }
    // No valid token was refused, during the rotation or after.
    assert!(
        outcome.valid_refusals.is_empty(),
        "valid tokens refused: {:?}",
        outcome.valid_refusals
    );
    assert!(outcome.valid_checks > 0);
}

/// The run's figures, printed whether or not it passes.
fn report(load: &Load, outcome: &Outcome) {
    let mut revocations: Vec<Duration> = outcome.revocations.iter().filter_map(|r| r.refused_after).collect();
    revocations.sort();
    let fan_out = scale_out::fan_out_latencies(outcome);
    println!(
        "scale-out: {} deployments over {} services in {:?}; {} submissions answered with an error \
         and sent again; watchers reconnected {:?} times; fan-out p95 {:?}; revocation to refusal \
         everywhere ({} tokens) p50 {:?} max {:?}; {} valid-token checks, {} refused",
        load.deployments,
        load.services,
        outcome.elapsed,
        outcome.submit_errors.len(),
        outcome.watched.iter().map(|w| w.reconnects).collect::<Vec<_>>(),
        scale_out::quantile(&fan_out, 0.95),
        revocations.len(),
        scale_out::quantile(&revocations, 0.5),
        revocations.last().copied().unwrap_or_default(),
        outcome.valid_checks,
        outcome.valid_refusals.len(),
    );
}

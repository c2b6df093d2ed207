//! A short soak, on SQLite and PostgreSQL: a minute of mixed load (`tests::soak`:
//! logins and reads, deployments whose scripts report steps, NDJSON and WebSocket
//! watchers coming and going), sampled four times. Asserts only what cannot flake on a
//! busy machine: no request failed, and nothing grew without bound between the first
//! sample and the last (`soak::growth_breaches`: RSS, file descriptors, database size
//! per deployment, open streams), and the gateway's streams are all closed once the
//! watchers are gone. Latencies are printed, not asserted: the 30-minute run with its
//! p99 figures is `cargo bench -p tests --bench soak`.
//!
//! `SLIPWAY_SOAK_SECS` sets the length of each run (default 60).

use std::time::Duration;

use tests::{Backend, on_every_backend, soak, wait_until};

on_every_backend!(mixed_load_grows_nothing_without_bound);

async fn mixed_load_grows_nothing_without_bound(backend: Backend) {
    let secs: u64 = std::env::var("SLIPWAY_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let mut stack = soak::stack(backend).await;
    println!("{}", soak::header());
    let samples = soak::run(&mut stack, Duration::from_secs(secs), Duration::from_secs(secs / 4)).await;
    let failures: usize = samples.iter().map(|s| s.failures).sum();
    assert_eq!(failures, 0, "requests failed during the soak\n{}", stack.logs());
    let breaches = soak::growth_breaches(&samples);
    assert!(breaches.is_empty(), "grew without bound: {breaches:?}");
    let last = samples.last().unwrap();
    assert!(last.deployments > 0, "no deployment finished during the soak");
    wait_until(Duration::from_secs(15), async || {
        match soak::streams_open(&stack).await {
            0 => Ok(()),
            n => Err(format!("{n} streams still open after the watchers left")),
        }
    })
    .await;
}

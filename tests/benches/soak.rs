//! `cargo bench -p tests --bench soak`: 30 minutes of mixed load on a whole stack
//! (`tests::soak`), sampled every minute; prints each sample (RSS and open fds of every
//! process, database sizes, open streams, deployments, p99 of logins, reads and
//! starts), then the growth from the first sample to the last and the end p99 against
//! the start (target: within 20%). Asserts no timing; the growth bounds are checked
//! (and reported) as in tests/soak.rs.
//!
//! `SLIPWAY_SOAK_SECS` (default 1800) and `SLIPWAY_SOAK_SAMPLE_SECS` (default 60) set
//! the length and the interval; `SLIPWAY_SOAK_BACKEND=postgres` runs on PostgreSQL.

use std::time::Duration;

use tests::{Backend, soak};

fn env_secs(name: &str, default: u64) -> Duration {
    Duration::from_secs(std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default))
}

#[tokio::main]
async fn main() {
    let backend = match std::env::var("SLIPWAY_SOAK_BACKEND").as_deref() {
        Ok("postgres") => Backend::Postgres,
        _ => Backend::Sqlite,
    };
    let (duration, every) = (
        env_secs("SLIPWAY_SOAK_SECS", 1800),
        env_secs("SLIPWAY_SOAK_SAMPLE_SECS", 60),
    );
    println!("soak: {backend:?}, {duration:?}, a sample every {every:?}");
    let mut stack = soak::stack(backend).await;
    println!("{}", soak::header());
    let samples = soak::run(&mut stack, duration, every).await;
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        println!("no samples: the run is shorter than one interval");
        return;
    };
    for (i, name) in soak::SERVICES.iter().enumerate() {
        println!(
            "{name:<9} RSS {:>7} -> {:>7} KiB ({:+.1}%)   fds {:>4} -> {:>4}",
            first.rss_kib[i],
            last.rss_kib[i],
            (last.rss_kib[i] as f64 / first.rss_kib[i].max(1) as f64 - 1.0) * 100.0,
            first.fds[i],
            last.fds[i]
        );
    }
    let stored = last.deployments - first.deployments;
    for (i, name) in soak::SERVICES[..3].iter().enumerate() {
        let grown = last.db_bytes[i].saturating_sub(first.db_bytes[i]);
        println!(
            "{name:<9} database {:>9} -> {:>9} bytes ({} bytes per deployment over {stored})",
            first.db_bytes[i],
            last.db_bytes[i],
            grown / (stored.max(1) as u64)
        );
    }
    let change = |a: Duration, b: Duration| (b.as_secs_f64() / a.as_secs_f64().max(1e-9) - 1.0) * 100.0;
    for (kind, a, b) in [
        ("login", first.p99_login, last.p99_login),
        ("read", first.p99_read, last.p99_read),
        ("start", first.p99_start, last.p99_start),
    ] {
        println!(
            "p99 {kind:<5} {:>7.1} -> {:>7.1} ms ({:+.0}%, target within 20%)",
            a.as_secs_f64() * 1e3,
            b.as_secs_f64() * 1e3,
            change(a, b)
        );
    }
    let failures: usize = samples.iter().map(|s| s.failures).sum();
    println!("failed requests: {failures}");
    match soak::growth_breaches(&samples) {
        breaches if breaches.is_empty() => println!("growth: within bounds"),
        breaches => println!("growth: OUT OF BOUNDS {breaches:?}"),
    }
}

//! The one polling loop of the harness: services report readiness, deployments end
//! and revocations spread in their own time, so tests poll instead of sleeping.

use std::time::{Duration, Instant};

/// How often [`wait_until`] polls.
pub const POLL: Duration = Duration::from_millis(50);

/// Polls `check` every [`POLL`] until it answers `Ok`, at most `within`, and returns
/// what it answered. Past the deadline it panics with the last `Err`, which says
/// what was still wrong (and may carry the stack's logs).
pub async fn wait_until<T>(within: Duration, mut check: impl AsyncFnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + within;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(why) => assert!(Instant::now() < deadline, "not within {within:?}: {why}"),
        }
        tokio::time::sleep(POLL).await;
    }
}

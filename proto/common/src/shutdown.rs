//! Graceful shutdown: a cancellation token cancelled on SIGTERM or Ctrl-C, and a
//! bound on how long a stopping server waits for calls still open.

use std::{future::Future, time::Duration};

use tokio_util::sync::CancellationToken;

/// How long a stopping server waits for open calls to finish before dropping them.
/// Streams end by themselves at shutdown; this bounds anything that does not.
pub const DRAIN: Duration = Duration::from_secs(3);

/// Runs `serve` (a server that stops accepting and drains when `shutdown` is
/// cancelled) to its end, but for at most [`DRAIN`] after `shutdown`: connections
/// still open then are dropped, so a process always stops promptly.
pub async fn drain_bounded<E>(
    service: &'static str,
    serve: impl Future<Output = Result<(), E>>,
    shutdown: &CancellationToken,
) -> Result<(), E> {
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(DRAIN).await;
    };
    tokio::select! {
        result = serve => result,
        () = deadline => {
            tracing::warn!(service, drain_secs = DRAIN.as_secs(), "calls still open after the drain time; dropped");
            Ok(())
        }
    }
}

/// Completes on the first SIGTERM or Ctrl-C (SIGINT).
pub async fn signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => tracing::info!(signal = "SIGINT", "shutting down"),
                    _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutting down"),
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops this process");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// A token that is cancelled when [`signal`] completes.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let child = token.clone();
    tokio::spawn(async move {
        signal().await;
        child.cancel();
    });
    token
}

//! Graceful shutdown: a cancellation token cancelled on SIGTERM or Ctrl-C.

use tokio_util::sync::CancellationToken;

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

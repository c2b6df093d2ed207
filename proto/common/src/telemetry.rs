//! Structured logs with `tracing`. The sink is swappable so tests can stay quiet.
//! `SLIPWAY_LOG` sets the filter (default `info`); `SLIPWAY_LOG_FORMAT=json` switches
//! to JSON lines.

use tracing_subscriber::{EnvFilter, fmt::MakeWriter};

const DEFAULT_FILTER: &str = "info,sqlx=warn,sea_orm=warn,sea_orm_migration=warn,h2=warn,hyper=warn,tower=warn";

/// Logs to stderr.
pub fn init(service: &'static str) {
    init_with_writer(service, std::io::stderr);
}

/// Logs to the given sink; a second call (for example from several tests) is a no-op.
pub fn init_with_writer<W>(service: &'static str, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_env("SLIPWAY_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let json = std::env::var("SLIPWAY_LOG_FORMAT").is_ok_and(|v| v == "json");
    // Colours only on a terminal: log files and collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false)
        .with_ansi(ansi);
    let result = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
    if result.is_ok() {
        tracing::info!(service, version = env!("CARGO_PKG_VERSION"), "telemetry started");
    }
}

//! The output of runs: every line a deploy script prints that is not a protocol line,
//! kept per run within a bound, stored in batches by one background writer and
//! broadcast to followers once stored.
//!
//! - The runner hands lines to its run's [`RunLog`] (numbered, redacted, cut to the
//!   longest line kept), which passes them to the writer through a bounded channel
//!   without ever waiting: when the writer is behind, lines wait in the run's own
//!   buffer, itself held to the bound (oldest dropped first). So a script printing
//!   fast is never slowed, and memory stays bounded.
//! - The writer stores each round of lines in one transaction (outside the lock of
//!   deployments and steps, so step reports never wait for output), keeps each run's
//!   log to its last `max_lines` lines and `max_bytes` bytes, and writes a marker line
//!   where lines were dropped ("N earlier lines dropped"), numbered as the last dropped
//!   line, so line numbers never change and a reader resumes without gap or duplicate.
//! - After each commit the new lines are broadcast (followers that fall behind read
//!   the table instead). When a run ends, its last lines are stored and its log is
//!   marked complete before the deployment is ended, so a follower that sees the
//!   deployment finished and reads the table has every line.
//! - A failed write is retried a few times, then the round's lines are lost (logged);
//!   the run goes on.

mod capture;
mod writer;

use std::sync::Arc;

use crate::model::DeploymentId;
use chrono::{DateTime, Utc};
use tokio::sync::{broadcast, mpsc, oneshot};

pub use capture::RunLog;

use crate::storage::{Store, log_lines};

/// Where a line came from (stored as `log_lines.stream`, `LogStream` in the proto).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout = 1,
    Stderr = 2,
    /// Written by Slipway: lines were dropped here.
    Marker = 3,
}

/// How much of each run's output is kept.
#[derive(Debug, Clone, Copy)]
pub struct LogLimits {
    /// The last this many lines of a run are kept.
    pub max_lines: usize,
    /// … and at most this many bytes of text.
    pub max_bytes: usize,
    /// A longer line is cut to this many bytes, with a note.
    pub max_line_bytes: usize,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits {
            max_lines: 10_000,
            max_bytes: 4 * 1024 * 1024,
            max_line_bytes: 16 * 1024,
        }
    }
}

impl LogLimits {
    /// The limits made consistent: at least one line, a line never longer than the
    /// whole log.
    pub fn sane(self) -> LogLimits {
        let max_bytes = self.max_bytes.max(1024);
        LogLimits {
            max_lines: self.max_lines.max(1),
            max_bytes,
            max_line_bytes: self.max_line_bytes.clamp(256, max_bytes),
        }
    }
}

/// A change to a run's log, sent once stored.
#[derive(Debug, Clone)]
pub enum LiveLog {
    /// New lines of a deployment, in line order.
    Lines(DeploymentId, Arc<[log_lines::Model]>),
    /// The run ended: its log is complete.
    Closed(DeploymentId),
}

impl LiveLog {
    pub fn deployment_id(&self) -> DeploymentId {
        match self {
            LiveLog::Lines(id, _) | LiveLog::Closed(id) => *id,
        }
    }
}

enum Msg {
    Lines(DeploymentId, Vec<log_lines::Model>),
    Close(DeploymentId, oneshot::Sender<()>),
}

/// Messages waiting for the writer.
const QUEUE: usize = 256;
/// How many changes a follower may fall behind the broadcast before it reads the table.
const BROADCAST: usize = 1024;

/// The log writer's handle: start runs' logs, follow stored lines.
#[derive(Debug, Clone)]
pub struct Logs {
    queue: mpsc::Sender<Msg>,
    live: broadcast::Sender<LiveLog>,
    limits: LogLimits,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Msg::Lines(id, lines) => write!(f, "Lines({id}, {} lines)", lines.len()),
            Msg::Close(id, _) => write!(f, "Close({id})"),
        }
    }
}

impl Logs {
    /// Starts the writer task; it ends when every handle is dropped.
    pub fn start(store: Store, limits: LogLimits) -> Logs {
        let limits = limits.sane();
        let (queue, incoming) = mpsc::channel(QUEUE);
        let (live, _) = broadcast::channel(BROADCAST);
        tokio::spawn(writer::run(store, limits, incoming, live.clone()));
        Logs { queue, live, limits }
    }

    /// The log of a run about to start.
    pub fn run_log(&self, deployment_id: DeploymentId) -> RunLog {
        RunLog::new(deployment_id, self.queue.clone(), self.limits)
    }

    /// Stored changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<LiveLog> {
        self.live.subscribe()
    }

    pub fn limits(&self) -> LogLimits {
        self.limits
    }
}

/// A line as stored, from a line the script printed.
fn row(deployment_id: DeploymentId, line: i64, stream: Stream, time: DateTime<Utc>, text: String) -> log_lines::Model {
    log_lines::Model {
        deployment_id,
        line,
        stream: stream as i16,
        time,
        text,
    }
}

//! `GetDeploymentLog` and `WatchDeploymentLog`: a run's stored output, a page at a
//! time, or stored lines and then live ones until the run ends. A follower resumes
//! after a line number with no gap and no duplicate: it subscribes to the writer's
//! broadcast before reading the table, sends lines in number order only, and ends
//! once the log is complete and every stored line was sent. Whether the log is
//! complete is judged before the lines are read, so the lines read are all there is.

use std::time::Duration;

use proto::deploy::v1 as pb;
use tokio::sync::{broadcast::error::RecvError, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::internal;
use crate::model::DeploymentId;
use crate::{
    convert,
    logs::{LiveLog, Logs},
    queue::Queue,
    storage::{Store, deployment_logs, deployments},
};

/// Lines answered by `GetDeploymentLog` when the request names no limit, and at most.
const DEFAULT_LIMIT: u32 = 1000;
const MAX_LIMIT: u32 = 5000;
/// Lines sent per read of the table.
const PAGE: u64 = 1000;
/// Lines buffered for one follower.
const BUFFER: usize = 1024;
/// How often a follower asks whether a run that never started (cancelled in the
/// queue) or was ended by a restart is over: such runs broadcast no end.
const RECHECK: Duration = Duration::from_secs(2);

pub type LogStream = ReceiverStream<Result<pb::LogLine, Status>>;

/// Whether a run's log is complete: marked so by the writer, or its deployment ended
/// with no script running for it on any replica (never ran, or ran before a restart
/// or on a replica that was lost).
async fn complete(
    row: &deployments::Model,
    summary: Option<&deployment_logs::Model>,
    queue: &Queue,
) -> Result<bool, sea_orm::DbErr> {
    if summary.is_some_and(|s| s.complete) {
        return Ok(true);
    }
    Ok(row.finished.is_some() && !queue.script_running(row.id).await?)
}

/// One page of a readable deployment's log.
pub async fn page(
    store: &Store,
    queue: &Queue,
    row: &deployments::Model,
    request: &pb::GetDeploymentLogRequest,
) -> Result<pb::GetDeploymentLogResponse, Status> {
    let limit = match request.limit {
        0 => DEFAULT_LIMIT,
        n => n.min(MAX_LIMIT),
    };
    let summary = store.log_summary(row.id).await.map_err(internal)?;
    let complete = complete(row, summary.as_ref(), queue).await.map_err(internal)?;
    let mut lines = store
        .log_lines(row.id, request.after_line.max(0), u64::from(limit) + 1)
        .await
        .map_err(internal)?;
    let more = lines.len() > limit as usize;
    lines.truncate(limit as usize);
    Ok(pb::GetDeploymentLogResponse {
        lines: lines.iter().map(convert::log_line).collect(),
        more,
        complete,
        dropped_lines: summary.map_or(0, |s| s.dropped_lines),
    })
}

/// Starts a follower of a readable deployment's log.
pub fn watch(
    store: Store,
    logs: &Logs,
    queue: Queue,
    row: deployments::Model,
    after: i64,
    shutdown: CancellationToken,
) -> LogStream {
    // Subscribe before reading, so nothing stored in between is missed.
    let live = logs.subscribe();
    let (tx, rx) = mpsc::channel(BUFFER);
    let follower = Follower {
        store,
        queue,
        id: row.id,
        last: after.max(0),
        tx,
    };
    tokio::spawn(async move {
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = follower.run(live) => {}
        }
    });
    ReceiverStream::new(rx)
}

struct Follower {
    store: Store,
    queue: Queue,
    id: DeploymentId,
    /// The last line sent (or resumed after).
    last: i64,
    tx: mpsc::Sender<Result<pb::LogLine, Status>>,
}

impl Follower {
    async fn run(mut self, mut live: tokio::sync::broadcast::Receiver<LiveLog>) {
        let mut recheck = tokio::time::interval(RECHECK);
        recheck.tick().await;
        if !matches!(self.catch_up().await, Ok(false)) {
            return;
        }
        loop {
            let step = tokio::select! {
                () = self.tx.closed() => return,
                _ = recheck.tick() => self.catch_up().await,
                received = live.recv() => match received {
                    Ok(LiveLog::Lines(id, lines)) if id == self.id => {
                        let mut sent = Ok(false);
                        let after = self.last;
                        for line in lines.iter().filter(|l| l.line > after) {
                            if self.send(line).await.is_err() {
                                sent = Err(());
                                break;
                            }
                        }
                        sent
                    }
                    Ok(LiveLog::Closed(id)) if id == self.id => self.catch_up().await,
                    Ok(_) => Ok(false),
                    Err(RecvError::Lagged(missed)) => {
                        tracing::debug!(missed, "log follower fell behind; reading the table");
                        self.catch_up().await
                    }
                    Err(RecvError::Closed) => Err(()),
                },
            };
            if !matches!(step, Ok(false)) {
                return;
            }
        }
    }

    /// Sends every stored line after `last`; true when the log is complete (all sent).
    async fn catch_up(&mut self) -> Result<bool, ()> {
        let complete = match self.is_complete().await {
            Ok(complete) => complete,
            Err(error) => return self.fail(error).await,
        };
        loop {
            let page = match self.store.log_lines(self.id, self.last, PAGE).await {
                Ok(page) => page,
                Err(error) => return self.fail(error).await,
            };
            for line in &page {
                self.send(line).await?;
            }
            if (page.len() as u64) < PAGE {
                return Ok(complete);
            }
        }
    }

    async fn is_complete(&self) -> Result<bool, sea_orm::DbErr> {
        let summary = self.store.log_summary(self.id).await?;
        if summary.as_ref().is_some_and(|s| s.complete) {
            return Ok(true);
        }
        let row = self.store.get_deployment(self.id).await?;
        match row {
            None => Ok(true),
            Some(row) => complete(&row, summary.as_ref(), &self.queue).await,
        }
    }

    async fn fail(&self, error: sea_orm::DbErr) -> Result<bool, ()> {
        tracing::error!(%error, id = %self.id, "reading the log failed");
        let _ = self
            .tx
            .send(Err(Status::unavailable("the log cannot be read now")))
            .await;
        Err(())
    }

    async fn send(&mut self, line: &crate::storage::log_lines::Model) -> Result<(), ()> {
        self.tx.send(Ok(convert::log_line(line))).await.map_err(|_| ())?;
        self.last = line.line;
        Ok(())
    }
}

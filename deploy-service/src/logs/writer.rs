//! The log writer task: rounds of whatever the runs have handed over, one transaction
//! each, each run's log held to its bound, then the broadcast.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::Duration,
};

use tokio::sync::{broadcast, mpsc, oneshot};

use super::{LiveLog, LogLimits, Msg, Stream, row};
use crate::{
    model::{DeploymentId, now},
    storage::{LogBatch, Store, log_lines},
};

/// Most messages taken into one round, and about the most lines: a round is one
/// transaction, kept short so that on SQLite (one writer at a time) step reports
/// never wait long behind it.
const ROUND: usize = 256;
const ROUND_LINES: usize = 4096;
/// Attempts at storing a round before its lines are given up.
const ATTEMPTS: u32 = 3;

/// What the writer knows of a run whose log is open.
#[derive(Debug, Default)]
struct Kept {
    /// (line, bytes) of every kept line, stored or about to be.
    lines: VecDeque<(i64, usize)>,
    bytes: usize,
    last_line: i64,
    /// The first kept line when the last round was stored (a change means lines
    /// already stored must go).
    stored_first: i64,
    /// The last line broadcast.
    broadcast: i64,
}

impl Kept {
    /// The first kept line (the line after the last one when none is kept).
    fn first(&self) -> i64 {
        self.lines.front().map_or(self.last_line + 1, |(line, _)| *line)
    }
}

pub(super) async fn run(
    store: Store,
    limits: LogLimits,
    mut incoming: mpsc::Receiver<Msg>,
    live: broadcast::Sender<LiveLog>,
) {
    let mut runs: HashMap<DeploymentId, Kept> = HashMap::new();
    while let Some(first) = incoming.recv().await {
        let mut lines = size(&first);
        let mut round = vec![first];
        while round.len() < ROUND && lines < ROUND_LINES {
            match incoming.try_recv() {
                Ok(next) => {
                    lines += size(&next);
                    round.push(next);
                }
                Err(_) => break,
            }
        }
        let mut order: Vec<DeploymentId> = Vec::new();
        let mut new_lines: HashMap<DeploymentId, Vec<log_lines::Model>> = HashMap::new();
        let mut closing: Vec<(DeploymentId, oneshot::Sender<()>)> = Vec::new();
        for msg in round {
            let id = match &msg {
                Msg::Lines(id, _) | Msg::Close(id, _) => *id,
            };
            if let std::collections::hash_map::Entry::Vacant(entry) = new_lines.entry(id) {
                order.push(id);
                entry.insert(Vec::new());
            }
            let kept = runs.entry(id).or_default();
            match msg {
                Msg::Lines(_, lines) => {
                    for line in lines {
                        kept.last_line = kept.last_line.max(line.line);
                        kept.bytes += line.text.len();
                        kept.lines.push_back((line.line, line.text.len()));
                        new_lines.entry(id).or_default().push(line);
                    }
                    while kept.lines.len() > limits.max_lines || kept.bytes > limits.max_bytes {
                        match kept.lines.pop_front() {
                            Some((_, bytes)) => kept.bytes -= bytes,
                            None => break,
                        }
                    }
                }
                Msg::Close(_, done) => closing.push((id, done)),
            }
        }
        let mut batches = Vec::with_capacity(order.len());
        for id in &order {
            let kept = runs.entry(*id).or_default();
            let first = kept.first();
            let mut lines = new_lines.remove(id).unwrap_or_default();
            lines.retain(|l| l.line >= first);
            let dropped = first - 1;
            let moved = first != kept.stored_first.max(1);
            let marker = (moved && dropped > 0).then(|| {
                row(
                    *id,
                    dropped,
                    Stream::Marker,
                    now(),
                    format!(
                        "[slipway: {dropped} earlier lines dropped; the log keeps the last {} lines and at most {} bytes]",
                        limits.max_lines, limits.max_bytes
                    ),
                )
            });
            batches.push(LogBatch {
                deployment_id: *id,
                lines,
                drop_below: marker.as_ref().map(|_| first),
                marker,
                last_line: kept.last_line,
                dropped_lines: dropped,
                complete: closing.iter().any(|(c, _)| c == id),
            });
        }
        if store_round(&store, &batches).await {
            for batch in batches {
                let id = batch.deployment_id;
                let kept = runs.entry(id).or_default();
                kept.stored_first = kept.first();
                let fresh: Vec<log_lines::Model> = batch
                    .marker
                    .into_iter()
                    .chain(batch.lines)
                    .filter(|l| l.line > kept.broadcast)
                    .collect();
                if let Some(last) = fresh.last() {
                    kept.broadcast = last.line;
                    let _ = live.send(LiveLog::Lines(id, Arc::from(fresh)));
                }
            }
        }
        for (id, done) in closing {
            runs.remove(&id);
            let _ = live.send(LiveLog::Closed(id));
            let _ = done.send(());
        }
    }
}

fn size(msg: &Msg) -> usize {
    match msg {
        Msg::Lines(_, lines) => lines.len(),
        Msg::Close(..) => 0,
    }
}

/// Stores a round, retrying a few times; false when it was given up.
async fn store_round(store: &Store, batches: &[LogBatch]) -> bool {
    let mut wait = Duration::from_millis(100);
    for attempt in 1..=ATTEMPTS {
        match store.write_log(batches).await {
            Ok(()) => return true,
            Err(error) if attempt < ATTEMPTS => {
                tracing::warn!(%error, attempt, "output lines not stored; retrying");
                tokio::time::sleep(wait).await;
                wait *= 4;
            }
            Err(error) => {
                let lines: usize = batches.iter().map(|b| b.lines.len()).sum();
                tracing::error!(%error, lines, "output lines not stored; given up");
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::Logs;

    #[tokio::test]
    async fn the_byte_bound_keeps_the_last_lines_after_a_marker() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&common::db::sqlite_url(dir.path(), "deploy.db"))
            .await
            .unwrap();
        let limits = LogLimits {
            max_lines: 1000,
            max_bytes: 1024,
            max_line_bytes: 256,
        };
        let logs = Logs::start(store.clone(), limits);
        let mut live = logs.subscribe();
        let mut log = logs.run_log(DeploymentId(7));
        for n in 0..100 {
            log.push(Stream::Stdout, now(), &format!("{n:0>100}"));
            log.flush();
        }
        log.close().await;
        let lines = store.log_lines(DeploymentId(7), 0, 1000).await.unwrap();
        // 1,024 bytes hold ten lines of 100: lines 91 to 100, after the marker at 90.
        assert_eq!(lines.len(), 11);
        assert_eq!((lines[0].line, lines[0].stream), (90, Stream::Marker as i16));
        assert!(lines[0].text.contains("90 earlier lines dropped"), "{}", lines[0].text);
        assert_eq!(lines[10].text, format!("{:0>100}", 99));
        let summary = store.log_summary(DeploymentId(7)).await.unwrap().unwrap();
        assert_eq!(
            (summary.last_line, summary.dropped_lines, summary.complete),
            (100, 90, true)
        );
        // Followers got every stored line once, in order, then the end.
        let mut seen = Vec::new();
        loop {
            match live.recv().await.unwrap() {
                LiveLog::Lines(DeploymentId(7), lines) => seen.extend(lines.iter().map(|l| l.line)),
                LiveLog::Closed(DeploymentId(7)) => break,
                other => panic!("{other:?}"),
            }
        }
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
        assert_eq!(seen.last(), Some(&100));
    }
}

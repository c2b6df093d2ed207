//! One run's side of the log: numbers the lines, makes them storable (cut to the
//! longest line kept, no NUL byte, which PostgreSQL text refuses), and hands them to
//! the writer without waiting; what the writer cannot take yet waits here, held to
//! the log's bound.

use std::{collections::VecDeque, time::Duration};

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};

use super::{LogLimits, Msg, Stream, row};
use crate::model::DeploymentId;
use crate::storage::log_lines;

/// How long the end of a run waits for its last lines to be stored.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

pub struct RunLog {
    deployment_id: DeploymentId,
    queue: mpsc::Sender<Msg>,
    limits: LogLimits,
    next_line: i64,
    pending: VecDeque<log_lines::Model>,
    pending_bytes: usize,
}

impl RunLog {
    pub(super) fn new(deployment_id: DeploymentId, queue: mpsc::Sender<Msg>, limits: LogLimits) -> RunLog {
        RunLog {
            deployment_id,
            queue,
            limits,
            next_line: 1,
            pending: VecDeque::new(),
            pending_bytes: 0,
        }
    }

    /// Adds one line (already redacted) as read at `time`.
    pub fn push(&mut self, stream: Stream, time: DateTime<Utc>, text: &str) {
        let text = storable(text, self.limits.max_line_bytes);
        self.pending_bytes += text.len();
        let line = self.next_line;
        self.next_line += 1;
        self.pending
            .push_back(row(self.deployment_id, line, stream, time, text));
        // More waiting than the log keeps: the oldest would be dropped by the writer
        // anyway (it keeps the last lines); its numbers tell it how many.
        while self.pending.len() > self.limits.max_lines || self.pending_bytes > self.limits.max_bytes {
            match self.pending.pop_front() {
                Some(dropped) => self.pending_bytes -= dropped.text.len(),
                None => break,
            }
        }
    }

    /// Passes the waiting lines to the writer if it has room; never waits.
    pub fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        if let Ok(permit) = self.queue.try_reserve() {
            let lines: Vec<log_lines::Model> = self.pending.drain(..).collect();
            self.pending_bytes = 0;
            permit.send(Msg::Lines(self.deployment_id, lines));
        }
    }

    /// The run has ended: its last lines are passed on and its log marked complete;
    /// returns once they are stored (or after a while, logged).
    pub async fn close(mut self) {
        let id = self.deployment_id;
        let lines: Vec<log_lines::Model> = self.pending.drain(..).collect();
        let (done, stored) = oneshot::channel();
        let handed = async {
            if !lines.is_empty() {
                self.queue.send(Msg::Lines(id, lines)).await.ok()?;
            }
            self.queue.send(Msg::Close(id, done)).await.ok()?;
            stored.await.ok()
        };
        match tokio::time::timeout(CLOSE_WAIT, handed).await {
            Ok(Some(())) => {}
            Ok(None) => tracing::error!(%id, "the log writer is gone; the run's last output lines are lost"),
            Err(_) => tracing::warn!(%id, "the run's last output lines were not stored in time"),
        }
    }
}

/// `text` as stored: at most `max` bytes (cut at a character boundary, with a note
/// saying how long it was), NUL characters replaced.
pub fn storable(text: &str, max: usize) -> String {
    let mut text = if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{} [slipway: line cut, {} bytes in all]", &text[..end], text.len())
    } else {
        text.to_owned()
    };
    if text.contains('\0') {
        text = text.replace('\0', "\u{FFFD}");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_cut_at_a_character_with_a_note() {
        assert_eq!(storable("short", 10), "short");
        let cut = storable("ééééé", 5);
        assert_eq!(cut, "éé [slipway: line cut, 10 bytes in all]");
        assert_eq!(storable("a\0b", 10), "a\u{FFFD}b");
    }

    #[tokio::test]
    async fn a_run_buffer_keeps_the_last_lines_when_the_writer_is_full() {
        let (queue, mut incoming) = mpsc::channel(1);
        let limits = LogLimits {
            max_lines: 3,
            max_bytes: 1 << 20,
            max_line_bytes: 100,
        };
        let mut log = RunLog::new(DeploymentId(7), queue, limits);
        log.push(Stream::Stdout, Utc::now(), "1");
        log.flush();
        for n in 2..=10 {
            log.push(Stream::Stderr, Utc::now(), &n.to_string());
            log.flush();
        }
        let Some(Msg::Lines(DeploymentId(7), first)) = incoming.recv().await else {
            panic!()
        };
        assert_eq!(first.iter().map(|l| l.line).collect::<Vec<_>>(), [1]);
        log.flush();
        let Some(Msg::Lines(DeploymentId(7), rest)) = incoming.recv().await else {
            panic!()
        };
        assert_eq!(rest.iter().map(|l| l.line).collect::<Vec<_>>(), [8, 9, 10]);
        assert!(rest.iter().all(|l| l.stream == Stream::Stderr as i16));
    }
}

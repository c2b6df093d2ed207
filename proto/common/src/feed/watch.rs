//! One watcher of a feed, the same for every table: the stored rows after the
//! watcher's sequence (read up to the feed's position), then the rows the feed
//! delivers, with no gap and no duplicate. A watcher that falls behind the feed (a
//! slow client) catches up from the table, so it never holds up the others and misses
//! nothing.

use std::future::Future;

use sea_orm::DbErr;
use tokio::sync::{broadcast::error::RecvError, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::Subscription;

/// Rows read per query of the table.
const PAGE: u64 = 500;

/// What a watcher reads and what it sends.
pub trait Watched: Send + Sync + 'static {
    type Row: Clone + Send + Sync + 'static;
    type Message: Send + 'static;
    /// Names the rows in logs and errors ("events", "service events").
    const WHAT: &'static str;

    fn sequence(row: &Self::Row) -> i64;
    /// The feed's position now (see `Feed::position`).
    fn position(&self) -> i64;
    /// The stored rows for this watcher with `after < sequence <= upto`, in order, at
    /// most `limit`.
    fn page(&self, after: i64, upto: i64, limit: u64) -> impl Future<Output = Result<Vec<Self::Row>, DbErr>> + Send;
    /// Whether a row the feed delivers is for this watcher.
    fn wanted(&self, _row: &Self::Row) -> bool {
        true
    }
    /// The message for a row; `None` when it cannot be read (it is skipped).
    fn message(&self, row: &Self::Row) -> Option<Self::Message>;
}

/// Starts a watcher of the rows after `after` (0: from now; negative: every stored
/// one) through `subscription`, taken before anything is read so that nothing
/// delivered in between is missed. It ends at `shutdown`, when the client goes away,
/// or with UNAVAILABLE when the table cannot be read.
pub fn watch<W: Watched>(
    watched: W,
    subscription: Subscription<W::Row>,
    after: i64,
    buffer: usize,
    shutdown: CancellationToken,
) -> ReceiverStream<Result<W::Message, Status>> {
    let Subscription { receiver, position } = subscription;
    let last = match after {
        0 => position,
        n if n < 0 => 0,
        n => n,
    };
    let (tx, rx) = mpsc::channel(buffer);
    tokio::spawn(async move {
        let watcher = Watcher { watched, last, tx };
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = watcher.run(receiver) => {}
        }
    });
    ReceiverStream::new(rx)
}

struct Watcher<W: Watched> {
    watched: W,
    /// The last sequence dealt with (sent, or seen and not for this watcher).
    last: i64,
    tx: mpsc::Sender<Result<W::Message, Status>>,
}

impl<W: Watched> Watcher<W> {
    async fn run(mut self, mut live: tokio::sync::broadcast::Receiver<W::Row>) {
        if self.catch_up().await.is_err() {
            return;
        }
        loop {
            let received = tokio::select! {
                () = self.tx.closed() => return,
                received = live.recv() => received,
            };
            let step = match received {
                Ok(row) if W::sequence(&row) <= self.last => Ok(()),
                Ok(row) => {
                    self.last = W::sequence(&row);
                    if self.watched.wanted(&row) {
                        self.send(&row).await
                    } else {
                        Ok(())
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, what = W::WHAT, "watcher fell behind; catching up from storage");
                    self.catch_up().await
                }
                Err(RecvError::Closed) => Err(()),
            };
            if step.is_err() {
                return;
            }
        }
    }

    /// Sends every stored row after `last`, up to what the feed has delivered (rows
    /// after that come through the feed).
    async fn catch_up(&mut self) -> Result<(), ()> {
        let upto = self.watched.position();
        loop {
            let page = match self.watched.page(self.last, upto, PAGE).await {
                Ok(page) => page,
                Err(error) => {
                    tracing::error!(%error, what = W::WHAT, "reading the table failed");
                    let refusal = Status::unavailable(format!("{} cannot be read now", W::WHAT));
                    let _ = self.tx.send(Err(refusal)).await;
                    return Err(());
                }
            };
            for row in &page {
                self.send(row).await?;
                self.last = W::sequence(row);
            }
            if (page.len() as u64) < PAGE {
                self.last = self.last.max(upto);
                return Ok(());
            }
        }
    }

    async fn send(&self, row: &W::Row) -> Result<(), ()> {
        let Some(message) = self.watched.message(row) else {
            tracing::error!(sequence = W::sequence(row), what = W::WHAT, "unreadable row skipped");
            return Ok(());
        };
        self.tx.send(Ok(message)).await.map_err(|_| ())
    }
}

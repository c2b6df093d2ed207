//! `WatchServices`: service changes for watchers, read from the `service_events`
//! table after the caller's sequence (up to the feed's position), then followed
//! through the feed, which delivers the changes of every registry replica on the
//! database in sequence order. A watcher that falls behind the feed (a slow client)
//! catches up from the table, so it never holds up the others and misses nothing.

use proto::registry::v1 as pb;
use tokio::sync::{
    broadcast::{self, error::RecvError},
    mpsc,
};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::{
    convert,
    storage::{Store, service_events},
};

/// Events read per query of the table.
const PAGE: u64 = 500;
/// Events buffered for one client.
const BUFFER: usize = 16;

pub type EventStream = ReceiverStream<Result<pb::ServiceEvent, Status>>;

/// Starts a watcher of every change after `after` (0: from now; negative: every
/// stored one). It ends at `shutdown` or when the watcher goes away.
pub fn watch(store: Store, after: i64, shutdown: CancellationToken) -> EventStream {
    // Subscribe before reading, so nothing delivered in between is missed.
    let common::feed::Subscription { receiver, position } = store.follow();
    let last = match after {
        0 => position,
        n if n < 0 => 0,
        n => n,
    };
    let (tx, rx) = mpsc::channel(BUFFER);
    tokio::spawn(async move {
        let watcher = Watcher { store, last, tx };
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = watcher.run(receiver) => {}
        }
    });
    ReceiverStream::new(rx)
}

struct Watcher {
    store: Store,
    /// The last sequence sent.
    last: i64,
    tx: mpsc::Sender<Result<pb::ServiceEvent, Status>>,
}

impl Watcher {
    async fn run(mut self, mut live: broadcast::Receiver<service_events::Model>) {
        if self.catch_up().await.is_err() {
            return;
        }
        loop {
            let received = tokio::select! {
                () = self.tx.closed() => return,
                received = live.recv() => received,
            };
            let step = match received {
                Ok(event) if event.sequence <= self.last => Ok(()),
                Ok(event) => self.send(&event).await,
                Err(RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "service watcher fell behind; catching up from storage");
                    self.catch_up().await
                }
                Err(RecvError::Closed) => Err(()),
            };
            if step.is_err() {
                return;
            }
        }
    }

    /// Sends every stored event after `last`, up to what the feed has delivered.
    async fn catch_up(&mut self) -> Result<(), ()> {
        let upto = self.store.feed_position();
        loop {
            let page = match self.store.service_events_between(self.last, upto, PAGE).await {
                Ok(page) => page,
                Err(error) => {
                    tracing::error!(%error, "reading service events failed");
                    let _ = self
                        .tx
                        .send(Err(Status::unavailable("service events cannot be read now")))
                        .await;
                    return Err(());
                }
            };
            for event in &page {
                self.send(event).await?;
            }
            if (page.len() as u64) < PAGE {
                self.last = self.last.max(upto);
                return Ok(());
            }
        }
    }

    async fn send(&mut self, event: &service_events::Model) -> Result<(), ()> {
        self.last = event.sequence;
        let Some(message) = convert::service_event(event) else {
            tracing::error!(sequence = event.sequence, "unreadable service event skipped");
            return Ok(());
        };
        self.tx.send(Ok(message)).await.map_err(|_| ())
    }
}

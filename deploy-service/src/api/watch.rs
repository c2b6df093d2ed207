//! `WatchEvents`: stored events after the caller's sequence, then live ones, with no
//! gap and no duplicate. Stored events are read up to the events feed's position and
//! the live part follows the feed, which delivers the events of every replica on the
//! database in sequence order; a watcher that falls behind it (a slow client) catches
//! up from the table, so it never holds up the runner and never misses an event.

use proto::deploy::v1 as pb;
use tokio::sync::{broadcast::error::RecvError, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::{
    convert,
    storage::{EventFilter, Store, events},
};

/// Events sent per read of the table.
const PAGE: u64 = 500;
/// Events buffered for one client.
const BUFFER: usize = 256;

pub type EventStream = ReceiverStream<Result<pb::Event, Status>>;

/// Starts a watcher; `after` as in `WatchEventsRequest.after_sequence`.
pub async fn watch(
    store: Store,
    filter: EventFilter,
    after: i64,
    shutdown: CancellationToken,
) -> Result<EventStream, Status> {
    // Subscribe before reading, so nothing delivered in between is missed.
    let common::feed::Subscription {
        receiver: live,
        position,
    } = store.follow();
    let last = match after {
        0 => position,
        n if n < 0 => 0,
        n => n,
    };
    let (tx, rx) = mpsc::channel(BUFFER);
    tokio::spawn(async move {
        let watcher = Watcher {
            store,
            filter,
            last,
            tx,
        };
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = watcher.run(live) => {}
        }
    });
    Ok(ReceiverStream::new(rx))
}

struct Watcher {
    store: Store,
    filter: EventFilter,
    /// The last sequence dealt with (sent, or seen and not for this watcher).
    last: i64,
    tx: mpsc::Sender<Result<pb::Event, Status>>,
}

impl Watcher {
    async fn run(mut self, mut live: tokio::sync::broadcast::Receiver<events::Model>) {
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
                Ok(event) => {
                    let wanted = self.filter.matches(&event);
                    self.last = event.sequence;
                    if wanted { self.send(&event).await } else { Ok(()) }
                }
                Err(RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "watcher fell behind; catching up from storage");
                    self.catch_up().await
                }
                Err(RecvError::Closed) => Err(()),
            };
            if step.is_err() {
                return;
            }
        }
    }

    /// Sends every stored event after `last`, up to what the feed has delivered (rows
    /// after that come through the feed).
    async fn catch_up(&mut self) -> Result<(), ()> {
        let upto = self.store.feed_position();
        loop {
            let page = match self.store.events_between(self.last, upto, &self.filter, PAGE).await {
                Ok(page) => page,
                Err(error) => {
                    tracing::error!(%error, "reading events failed");
                    let _ = self
                        .tx
                        .send(Err(Status::unavailable("events cannot be read now")))
                        .await;
                    return Err(());
                }
            };
            for event in &page {
                self.send(event).await?;
                self.last = event.sequence;
            }
            if (page.len() as u64) < PAGE {
                self.last = self.last.max(upto);
                return Ok(());
            }
        }
    }

    async fn send(&self, event: &events::Model) -> Result<(), ()> {
        let Some(message) = convert::event(event) else {
            tracing::error!(sequence = event.sequence, "unreadable event skipped");
            return Ok(());
        };
        self.tx.send(Ok(message)).await.map_err(|_| ())
    }
}

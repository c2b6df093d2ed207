//! `WatchEvents`: stored events after the caller's sequence, then live ones, with no
//! gap and no duplicate (`common::feed::watch`): the events feed delivers the events
//! of every replica on the database in sequence order.

use common::feed::{self, Watched};
use proto::deploy::v1 as pb;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::{
    convert,
    storage::{EventFilter, Store, events},
};

/// Events buffered for one client.
const BUFFER: usize = 256;

pub type EventStream = ReceiverStream<Result<pb::Event, Status>>;

/// Starts a watcher; `after` as in `WatchEventsRequest.after_sequence`.
pub fn watch(store: Store, filter: EventFilter, after: i64, shutdown: CancellationToken) -> EventStream {
    // Subscribe before reading, so nothing delivered in between is missed.
    let subscription = store.follow();
    feed::watch(Events { store, filter }, subscription, after, BUFFER, shutdown)
}

/// The events one watcher asked for.
struct Events {
    store: Store,
    filter: EventFilter,
}

impl Watched for Events {
    type Row = events::Model;
    type Message = pb::Event;
    const WHAT: &'static str = "events";

    fn sequence(row: &events::Model) -> i64 {
        row.sequence
    }

    fn position(&self) -> i64 {
        self.store.feed_position()
    }

    async fn page(&self, after: i64, upto: i64, limit: u64) -> Result<Vec<events::Model>, sea_orm::DbErr> {
        self.store.events_between(after, upto, &self.filter, limit).await
    }

    fn wanted(&self, row: &events::Model) -> bool {
        self.filter.matches(row)
    }

    fn message(&self, row: &events::Model) -> Option<pb::Event> {
        convert::event(row)
    }
}

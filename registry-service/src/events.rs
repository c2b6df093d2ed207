//! `WatchServices`: service changes after the caller's sequence, read from the
//! `service_events` table and then followed through the feed (`common::feed::watch`),
//! which delivers the changes of every registry replica on the database in sequence
//! order.

use common::feed::{self, Watched};
use proto::registry::v1 as pb;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::{
    convert,
    storage::{Store, service_events},
};

/// Events buffered for one client.
const BUFFER: usize = 16;

pub type EventStream = ReceiverStream<Result<pb::ServiceEvent, Status>>;

/// Starts a watcher of every change after `after` (0: from now; negative: every
/// stored one). It ends at `shutdown` or when the watcher goes away.
pub fn watch(store: Store, after: i64, shutdown: CancellationToken) -> EventStream {
    // Subscribe before reading, so nothing delivered in between is missed.
    let subscription = store.follow();
    feed::watch(ServiceEvents(store), subscription, after, BUFFER, shutdown)
}

struct ServiceEvents(Store);

impl Watched for ServiceEvents {
    type Row = service_events::Model;
    type Message = pb::ServiceEvent;
    const WHAT: &'static str = "service events";

    fn sequence(row: &service_events::Model) -> i64 {
        row.sequence
    }

    fn position(&self) -> i64 {
        self.0.feed_position()
    }

    async fn page(&self, after: i64, upto: i64, limit: u64) -> Result<Vec<service_events::Model>, sea_orm::DbErr> {
        self.0.service_events_between(after, upto, limit).await
    }

    fn message(&self, row: &service_events::Model) -> Option<pb::ServiceEvent> {
        convert::service_event(row)
    }
}

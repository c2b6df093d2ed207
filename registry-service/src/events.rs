//! Service change events for watchers: one in-process broadcast. A watcher that falls
//! behind loses its place (its stream ends with ABORTED) and never slows the others.

use proto::registry::v1 as pb;
use tokio::sync::broadcast;

/// How many events a watcher may fall behind before its stream is ended.
const BACKLOG: usize = 1024;

#[derive(Debug, Clone)]
pub struct Events {
    sender: broadcast::Sender<pb::ServiceEvent>,
}

impl Events {
    pub fn new() -> Events {
        Events {
            sender: broadcast::channel(BACKLOG).0,
        }
    }

    /// Sends to every current watcher; nobody watching is fine.
    pub fn send(&self, event: pb::ServiceEvent) {
        let _ = self.sender.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<pb::ServiceEvent> {
        self.sender.subscribe()
    }
}

impl Default for Events {
    fn default() -> Self {
        Events::new()
    }
}

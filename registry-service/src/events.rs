//! Service change events for watchers: one in-process broadcast. A watcher that falls
//! behind loses its place (its stream ends with ABORTED) and never slows the others.

use proto::registry::v1 as pb;
use tokio::sync::{
    broadcast::{self, error::RecvError},
    mpsc,
};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;

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

    /// A stream of every event from now on, for one watcher. It ends at `shutdown`,
    /// when the watcher goes away, or with ABORTED once the watcher has fallen more
    /// than the backlog behind.
    pub fn watch(&self, shutdown: CancellationToken) -> ReceiverStream<Result<pb::ServiceEvent, Status>> {
        let mut events = self.sender.subscribe();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            loop {
                let item = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tx.closed() => break,
                    received = events.recv() => match received {
                        Ok(event) => Ok(event),
                        Err(RecvError::Lagged(missed)) => Err(Status::aborted(format!(
                            "this watcher fell {missed} events behind; list the services again and watch anew"
                        ))),
                        Err(RecvError::Closed) => break,
                    },
                };
                let last = item.is_err();
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    sent = tx.send(item) => if sent.is_err() || last { break },
                }
            }
        });
        ReceiverStream::new(rx)
    }
}

impl Default for Events {
    fn default() -> Self {
        Events::new()
    }
}

#[cfg(test)]
mod tests {
    use tokio_stream::StreamExt;

    use super::*;

    fn event(n: i64) -> pb::ServiceEvent {
        pb::ServiceEvent {
            service: Some(pb::Service {
                id: n,
                ..Default::default()
            }),
            deleted: false,
        }
    }

    #[tokio::test]
    async fn a_stalled_watcher_is_cut_off_and_never_holds_up_the_others() {
        let events = Events::new();
        let shutdown = CancellationToken::new();
        let mut stalled = events.watch(shutdown.clone());
        let mut live = events.watch(shutdown.clone());
        let total = BACKLOG as i64 * 2;
        let reader = tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Some(Ok(e)) = live.next().await {
                seen.push(e.service.unwrap().id);
                if seen.len() as i64 == total {
                    break;
                }
            }
            seen
        });
        for n in 0..total {
            events.send(event(n));
            tokio::task::yield_now().await;
        }
        let seen = tokio::time::timeout(std::time::Duration::from_secs(10), reader)
            .await
            .expect("the live watcher got every event")
            .unwrap();
        assert_eq!(seen, (0..total).collect::<Vec<_>>());

        // The stalled one gets what was queued for it, then ABORTED, then the end.
        let mut got = 0;
        let error = loop {
            match stalled.next().await {
                Some(Ok(_)) => got += 1,
                Some(Err(status)) => break status,
                None => panic!("the stream ended without saying it fell behind"),
            }
        };
        assert_eq!(error.code(), tonic::Code::Aborted);
        assert!(got < total);
        assert!(stalled.next().await.is_none());
    }

    #[tokio::test]
    async fn watch_streams_end_at_shutdown() {
        let events = Events::new();
        let shutdown = CancellationToken::new();
        let mut watch = events.watch(shutdown.clone());
        events.send(event(1));
        assert_eq!(watch.next().await.unwrap().unwrap().service.unwrap().id, 1);
        shutdown.cancel();
        let end = tokio::time::timeout(std::time::Duration::from_secs(5), watch.next()).await;
        assert!(end.unwrap().is_none());
    }
}

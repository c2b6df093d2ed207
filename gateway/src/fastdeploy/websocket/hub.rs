//! The live feed behind every WebSocket. One upstream subscription per backend stream
//! (the registry's `WatchServices`, the deploy service's `WatchEvents`) for the whole
//! gateway, opened at start with the gateway's own credential (no user's token is
//! borrowed), reopened when lost, and fanned out to the sockets through a broadcast
//! channel: a slow or dead socket only ever loses its own frames. Every socket is
//! filtered by its own token.
//!
//! **Nothing missed on a reconnect.** A lost upstream (a backend replica died, and the
//! next connection is balanced to another) is reopened: deployment events resume after
//! the last sequence seen; services have no sequence, so the list is read again once
//! the new watch is open and every difference from the last known list goes out as a
//! `service` frame (see [`services_feed`](super::services_feed)).

use std::{sync::Arc, time::Duration};

use axum::extract::ws::Utf8Bytes;
use common::{
    identity::Credential,
    scope::{self, Permission},
    token::Claims,
};
use proto::{
    deploy::v1::{Event, WatchEventsRequest, event::Payload},
    registry::v1::{ServiceEvent, WatchServicesRequest},
};
use serde_json::{Map, Value};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use super::services_feed::{Snapshot, service_frame};
use crate::{
    backends::Backends,
    fastdeploy::{objects, services::list_all as list_services},
};

/// Frames a socket may fall behind before it loses some.
const BACKLOG: usize = 1024;
/// First wait before reopening a lost upstream; doubles up to `MAX_RETRY`.
const FIRST_RETRY: Duration = Duration::from_millis(200);
const MAX_RETRY: Duration = Duration::from_secs(5);

/// One frame for the sockets, with the permission a token needs to receive it.
#[derive(Debug)]
pub struct Frame {
    pub permission: Permission,
    pub text: Utf8Bytes,
}

pub struct Hub {
    frames: broadcast::Sender<Arc<Frame>>,
    /// Whether each upstream is open now (services, deployment events).
    services_open: watch::Sender<bool>,
    events_open: watch::Sender<bool>,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("sockets", &self.frames.receiver_count())
            .finish()
    }
}

impl Hub {
    pub fn new(shutdown: CancellationToken) -> Arc<Hub> {
        Arc::new(Hub {
            frames: broadcast::channel(BACKLOG).0,
            services_open: watch::channel(false).0,
            events_open: watch::channel(false).0,
            shutdown,
        })
    }

    /// Cancelled when the gateway stops.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Frame>> {
        self.frames.subscribe()
    }

    fn open_flag(&self, permission: Permission) -> &watch::Sender<bool> {
        if permission == scope::SERVICES_READ {
            &self.services_open
        } else {
            &self.events_open
        }
    }

    /// Waits (at most `limit`) until every upstream these claims may read is open, so
    /// that a client told it is authenticated misses no later event.
    pub async fn ready_for(&self, claims: &Claims, limit: Duration) {
        let wait = async {
            for permission in [scope::SERVICES_READ, scope::DEPLOYMENTS_READ] {
                if scope::allows(claims, permission) {
                    let _ = self.open_flag(permission).subscribe().wait_for(|open| *open).await;
                }
            }
        };
        if tokio::time::timeout(limit, wait).await.is_err() {
            tracing::warn!("live feed not open yet; the socket may miss events until it is");
        }
    }

    fn publish(&self, permission: Permission, frame: Map<String, Value>) {
        match serde_json::to_string(&frame) {
            // Nobody listening is fine.
            Ok(text) => drop(self.frames.send(Arc::new(Frame {
                permission,
                text: text.into(),
            }))),
            Err(error) => tracing::error!(%error, "cannot encode a websocket frame"),
        }
    }

    /// Follows both backend streams with the gateway's credential until the gateway
    /// stops. Without a credential there is no feed (the backends would refuse it).
    pub async fn run(self: Arc<Self>, backends: Backends, credential: Option<Credential>) {
        let Some(credential) = credential else {
            tracing::warn!("no gateway credential: WebSockets get no live feed");
            return;
        };
        tokio::join!(
            self.follow(&credential, Upstream::Services(backends.clone())),
            self.follow(&credential, Upstream::Events(backends)),
        );
    }

    /// Keeps one upstream open: opens it, catches up on what a reconnect may have
    /// missed, forwards its events, and reopens it when lost.
    async fn follow(&self, credential: &Credential, upstream: Upstream) {
        let permission = upstream.permission();
        let open = self.open_flag(permission);
        let mut after: Option<i64> = None;
        let mut services = Snapshot::default();
        let mut retry = FIRST_RETRY;
        loop {
            match upstream.open(credential, after, &mut services).await {
                Ok((mut stream, missed)) => {
                    open.send_replace(true);
                    tracing::info!(stream = upstream.name(), "live feed upstream open");
                    retry = FIRST_RETRY;
                    for frame in missed {
                        self.publish(permission, frame);
                    }
                    loop {
                        tokio::select! {
                            () = self.shutdown.cancelled() => return,
                            item = stream.next(&mut services) => match item {
                                Ok(Some((sequence, frame))) => {
                                    if let Some(sequence) = sequence {
                                        after = Some(after.map_or(sequence, |a| a.max(sequence)));
                                    }
                                    if let Some(frame) = frame {
                                        self.publish(permission, frame);
                                    }
                                }
                                Ok(None) => {
                                    tracing::warn!(stream = upstream.name(), "upstream ended; reopening");
                                    break;
                                }
                                Err(status) => {
                                    tracing::warn!(stream = upstream.name(), code = ?status.code(), "upstream lost; reopening");
                                    break;
                                }
                            }
                        }
                    }
                }
                Err(status) => {
                    tracing::warn!(stream = upstream.name(), code = ?status.code(), "cannot open upstream");
                }
            }
            open.send_replace(false);
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                () = tokio::time::sleep(retry) => {}
            }
            retry = (retry * 2).min(MAX_RETRY);
        }
    }
}

enum Upstream {
    Services(Backends),
    Events(Backends),
}

enum Stream {
    Services(tonic::Streaming<ServiceEvent>),
    Events(tonic::Streaming<Event>),
}

/// One upstream item: its sequence number (deployment events) and its frame, if it
/// has one for fastDeploy's clients.
type Item = (Option<i64>, Option<Map<String, Value>>);

impl Upstream {
    fn permission(&self) -> Permission {
        match self {
            Upstream::Services(_) => scope::SERVICES_READ,
            Upstream::Events(_) => scope::DEPLOYMENTS_READ,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Upstream::Services(_) => "services",
            Upstream::Events(_) => "deployment events",
        }
    }

    /// Opens the stream with the gateway's credential; for services, then reads the
    /// list and returns the frames of what changed since the last known list.
    async fn open(
        &self,
        credential: &Credential,
        after: Option<i64>,
        services: &mut Snapshot,
    ) -> Result<(Stream, Vec<Map<String, Value>>), tonic::Status> {
        match self {
            Upstream::Services(backends) => {
                let request = credential.request(WatchServicesRequest::default());
                let stream = backends.registry().watch_services(request).await?.into_inner();
                // The watch is open before the list is read: a change after the read
                // is on the stream.
                let list = list_services(backends, credential).await?;
                Ok((Stream::Services(stream), services.relisted(list)))
            }
            Upstream::Events(backends) => {
                let request = credential.request(WatchEventsRequest {
                    after_sequence: after.unwrap_or(0),
                    ..Default::default()
                });
                let stream = backends.deploy().watch_events(request).await?.into_inner();
                Ok((Stream::Events(stream), Vec::new()))
            }
        }
    }
}

impl Stream {
    async fn next(&mut self, services: &mut Snapshot) -> Result<Option<Item>, tonic::Status> {
        Ok(match self {
            Stream::Services(s) => s.message().await?.map(|e| {
                services.apply(&e);
                (None, service_event_frame(&e))
            }),
            Stream::Events(s) => s.message().await?.map(|e| (Some(e.sequence), event_frame(&e))),
        })
    }
}

fn service_event_frame(event: &ServiceEvent) -> Option<Map<String, Value>> {
    Some(service_frame(event.service.as_ref()?, event.deleted))
}

/// `{"type": "deployment", …}` without a `deleted` key (fastDeploy has no deployment
/// deletions on the feed, so they are not sent), or `{"type": "step", …, deleted}`.
fn event_frame(event: &Event) -> Option<Map<String, Value>> {
    match event.payload.as_ref()? {
        Payload::Deployment(_) if event.deleted => None,
        Payload::Deployment(deployment) => {
            let mut frame = objects::deployment(deployment);
            frame.insert("type".into(), "deployment".into());
            Some(frame)
        }
        Payload::Step(step) => {
            let mut frame = objects::step(step);
            frame.insert("type".into(), "step".into());
            frame.insert("deleted".into(), event.deleted.into());
            Some(frame)
        }
    }
}

//! The live feed behind every WebSocket. One upstream subscription per backend stream
//! (the registry's `WatchServices`, the deploy service's `WatchEvents`) for the whole
//! gateway, open while at least one socket is authenticated, reconnecting when lost,
//! and fanned out to the sockets through a broadcast channel: a slow or dead socket
//! only ever loses its own frames.
//!
//! The gateway has no identity of its own towards the backends, so an upstream is
//! opened with the token of an authenticated socket whose token may read that stream
//! (the one that lives longest). Every socket is still filtered by its own token.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::extract::ws::Utf8Bytes;
use common::{
    scope::{self, Permission},
    token::{Claims, RemoteVerifier},
};
use proto::{
    deploy::v1::{Event, WatchEventsRequest, event::Payload},
    registry::v1::{ServiceEvent, WatchServicesRequest},
};
use serde_json::{Map, Value};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::{backends::Backends, fastdeploy::auth::with_token, fastdeploy::objects};

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

/// An authenticated socket's token, offered for opening upstreams.
struct Listener {
    token: String,
    claims: Claims,
}

pub struct Hub {
    frames: broadcast::Sender<Arc<Frame>>,
    listeners: Mutex<HashMap<u64, Listener>>,
    /// Bumped whenever the set of listeners changes.
    changed: watch::Sender<u64>,
    /// Whether each upstream is open now (services, deployment events).
    services_open: watch::Sender<bool>,
    events_open: watch::Sender<bool>,
    next_id: AtomicU64,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("listeners", &self.listener_count())
            .finish()
    }
}

/// While alive, an authenticated socket's token is on offer to the upstreams.
pub struct Registration {
    hub: Arc<Hub>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut listeners) = self.hub.listeners.lock() {
            listeners.remove(&self.id);
        }
        self.hub.changed.send_modify(|n| *n += 1);
    }
}

impl Hub {
    pub fn new(shutdown: CancellationToken) -> Arc<Hub> {
        Arc::new(Hub {
            frames: broadcast::channel(BACKLOG).0,
            listeners: Mutex::new(HashMap::new()),
            changed: watch::channel(0).0,
            services_open: watch::channel(false).0,
            events_open: watch::channel(false).0,
            next_id: AtomicU64::new(1),
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

    /// Offers an authenticated socket's token to the upstreams until the returned
    /// registration is dropped.
    pub fn listen(self: &Arc<Self>, token: &str, claims: &Claims) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut listeners) = self.listeners.lock() {
            let listener = Listener {
                token: token.to_owned(),
                claims: claims.clone(),
            };
            listeners.insert(id, listener);
        }
        self.changed.send_modify(|n| *n += 1);
        Registration { hub: self.clone(), id }
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

    fn listener_count(&self) -> usize {
        self.listeners.lock().map(|l| l.len()).unwrap_or(0)
    }

    /// Tokens of listeners that may read with `permission`, longest-lived first.
    fn candidates(&self, permission: Permission) -> Vec<String> {
        let Ok(listeners) = self.listeners.lock() else {
            return Vec::new();
        };
        let mut found: Vec<(i64, String)> = listeners
            .values()
            .filter(|l| scope::allows(&l.claims, permission))
            .map(|l| (l.claims.exp, l.token.clone()))
            .collect();
        found.sort_by_key(|f| std::cmp::Reverse(f.0));
        found.into_iter().map(|(_, token)| token).collect()
    }

    /// Waits until some listener's token, still valid, may read with `permission`.
    async fn token_for(&self, permission: Permission, verifier: &RemoteVerifier) -> Option<String> {
        let mut changed = self.changed.subscribe();
        loop {
            for token in self.candidates(permission) {
                if verifier.verify(&token).await.is_ok() {
                    return Some(token);
                }
            }
            tokio::select! {
                () = self.shutdown.cancelled() => return None,
                // A listener whose token becomes invalid leaves when its socket notices.
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                changed = changed.changed() => changed.ok()?,
            }
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

    /// Follows both backend streams until the gateway stops.
    pub async fn run(self: Arc<Self>, backends: Backends, verifier: Arc<RemoteVerifier>) {
        tokio::join!(
            self.follow(&verifier, Upstream::Services(backends.clone())),
            self.follow(&verifier, Upstream::Events(backends)),
        );
    }

    /// Keeps one upstream open while someone may read it: opens it with a listener's
    /// token, forwards its events, reopens it when lost (deployment events resume
    /// after the last sequence seen), and closes it when the last reader leaves.
    async fn follow(&self, verifier: &RemoteVerifier, upstream: Upstream) {
        let permission = upstream.permission();
        let mut after: Option<i64> = None;
        let mut retry = FIRST_RETRY;
        loop {
            let Some(token) = self.token_for(permission, verifier).await else {
                return;
            };
            let mut changed = self.changed.subscribe();
            let open = self.open_flag(permission);
            match upstream.open(&token, after).await {
                Ok(mut stream) => {
                    open.send_replace(true);
                    loop {
                        tokio::select! {
                            () = self.shutdown.cancelled() => return,
                            still = changed.changed() => {
                                if still.is_err() || self.candidates(permission).is_empty() {
                                    tracing::debug!(stream = upstream.name(), "no reader left; upstream closed");
                                    after = None;
                                    break;
                                }
                            }
                            item = stream.next() => match item {
                                Ok(Some((sequence, frame))) => {
                                    retry = FIRST_RETRY;
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

    async fn open(&self, token: &str, after: Option<i64>) -> Result<Stream, tonic::Status> {
        let bad_token = |_| tonic::Status::unauthenticated("unusable token");
        match self {
            Upstream::Services(backends) => {
                let request = with_token(WatchServicesRequest::default(), token).map_err(bad_token)?;
                Ok(Stream::Services(
                    backends.registry().watch_services(request).await?.into_inner(),
                ))
            }
            Upstream::Events(backends) => {
                let request = WatchEventsRequest {
                    after_sequence: after.unwrap_or(0),
                    ..Default::default()
                };
                let request = with_token(request, token).map_err(bad_token)?;
                Ok(Stream::Events(
                    backends.deploy().watch_events(request).await?.into_inner(),
                ))
            }
        }
    }
}

impl Stream {
    async fn next(&mut self) -> Result<Option<Item>, tonic::Status> {
        Ok(match self {
            Stream::Services(s) => s.message().await?.map(|e| (None, service_frame(&e))),
            Stream::Events(s) => s.message().await?.map(|e| (Some(e.sequence), event_frame(&e))),
        })
    }
}

/// `{"type": "service", id, name, data, deleted}` (contract 5.4).
fn service_frame(event: &ServiceEvent) -> Option<Map<String, Value>> {
    let mut frame = objects::service(event.service.as_ref()?);
    frame.insert("type".into(), "service".into());
    frame.insert("deleted".into(), event.deleted.into());
    Some(frame)
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

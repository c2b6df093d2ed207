//! A cache of `GET /services/`'s answer (fastDeploy's services list, as the JSON bytes
//! the handler sends), kept correct by the registry's `WatchServices` stream.
//!
//! **Whose authority.** The gateway's own: it opens the subscription and reads the
//! list with its credential (`--credential-file`, the registry trusting it by
//! `--gateway-credential-file`; the scope table lets it list and watch services and
//! nothing else), at start and whenever the stream is lost. No user's token is
//! borrowed, so the cache does not wait for a first request, and nobody's revocation or
//! expiry turns it off. Without a credential the cache stays off.
//!
//! **When it answers.** Only while the gateway holds a live `WatchServices`
//! subscription, and only with a list fetched after that subscription was established
//! (the registry subscribes a watcher before it answers the call, so once the answer's
//! headers are here every later change is on the stream). Everything else goes to the
//! registry as before. The registry sends no snapshot, only one event per change after
//! it is committed: each service a sync adds, updates or deletes, and each
//! `DeleteService`; publishing a deployed service does not touch the list and sends
//! nothing. Any event empties the cache, and the list is read again at once (one read
//! at a time; events during a read make one more). The stream ending or failing (the
//! registry stopping, a replica dying and the next connection going to another, or
//! ending a watcher that fell behind with ABORTED) empties it and turns it off until a
//! new subscription is up (retried at once, then backing off to 5 s); the new one
//! reads the whole list again, so nothing changed while it was down is missed.
//!
//! **Races.** Every emptying bumps a generation counter. A fetched list is stored only
//! if the generation did not change while it was being fetched and the subscription
//! was live when the fetch began: a list read before a change whose event arrives
//! during the fetch is never stored, and one stored just before the event is emptied
//! by it. A reader who misses the cache fetches the list with their own token, and it
//! is stored by the same rule.
//!
//! **Read your writes.** A sync or delete this gateway proxies (`POST /services/sync`,
//! `DELETE /services/{id}`, their `/v1` twins, and `SyncServices` / `DeleteService`
//! over gRPC and grpc-web) empties the cache once the registry has answered (or the
//! request was dropped), before the client sees the answer; see [`invalidate_on_write`].
//! A change made elsewhere (directly at the registry, or through another gateway
//! replica) reaches this cache with its event, within the stream's latency.
//!
//! **Tokens.** Caching changes no check: the handler verifies the caller's token (the
//! verifier checks revocation on every use) and its type and permission before asking
//! the cache, so a refused token never sees cached data. The list does not depend on
//! who asks (ListServices is the same for every user token with `services:read`), so one
//! cached body serves them all; a cache keyed by caller would be needed if it ever did.
//!
//! **Assumptions.** A change made through any registry replica reaches the watchers of
//! the replica this gateway follows (the registry's events must fan out across
//! replicas). A registry that stops or restarts closes its connections, which ends the
//! stream at once; a connection that dies silently (the registry's host vanishing) is
//! only found by the backend channels' HTTP/2 keep-alive pings, within about 50 s (see
//! `backends.rs`), and until then a change made elsewhere could go unseen.

use std::{
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::Response,
};
use bytes::Bytes;
use common::identity::Credential;
use proto::registry::v1::WatchServicesRequest;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{backends::Backends, fastdeploy::services};

/// First wait before reopening a lost subscription; doubles up to `MAX_RETRY`.
const FIRST_RETRY: Duration = Duration::from_millis(200);
const MAX_RETRY: Duration = Duration::from_secs(5);
/// Wait before reading the list again after a failed read.
const REFILL_RETRY: Duration = Duration::from_secs(1);

pub struct ServicesCache {
    state: Mutex<Inner>,
    backends: Backends,
    credential: Option<Credential>,
    /// Asks the filler to read the list.
    refill: Notify,
    shutdown: CancellationToken,
}

#[derive(Default)]
struct Inner {
    /// Bumped on every emptying.
    generation: u64,
    watch: Watch,
    /// The list's JSON; only ever set while `watch` is `Live`.
    body: Option<Bytes>,
}

/// The `WatchServices` subscription.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Watch {
    /// None (not yet, lost, or no credential).
    #[default]
    Off,
    /// Open: lists fetched from now on may be stored and served.
    Live,
}

impl Inner {
    fn empty(&mut self) {
        self.generation = self.generation.wrapping_add(1);
        self.body = None;
    }

    fn set_watch(&mut self, watch: Watch) {
        self.watch = watch;
        self.empty();
    }

    /// Leave to store a list about to be fetched, when one may be stored.
    fn ticket(&self, cache: &Arc<ServicesCache>) -> Option<Ticket> {
        (self.watch == Watch::Live).then(|| Ticket {
            cache: cache.clone(),
            generation: self.generation,
        })
    }
}

impl std::fmt::Debug for ServicesCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("ServicesCache")
            .field("watch", &state.watch)
            .field("cached", &state.body.is_some())
            .finish()
    }
}

/// What the cache says to a read of the list.
pub enum Lookup {
    /// The list, cached.
    Hit(Bytes),
    /// Not cached: fetch it; store it with the ticket, if any.
    Miss(Option<Ticket>),
}

/// Leave to store one list fetched after a lookup; it is stored only if nothing
/// changed since the lookup and the subscription is still live.
pub struct Ticket {
    cache: Arc<ServicesCache>,
    generation: u64,
}

impl Ticket {
    /// Stores `body` if it may be; returns whether it was.
    pub fn store(self, body: Bytes) -> bool {
        let mut state = self.cache.lock();
        let fresh = state.generation == self.generation && state.watch == Watch::Live;
        if fresh {
            state.body = Some(body);
        }
        fresh
    }
}

impl ServicesCache {
    /// A cache that stays off until [`ServicesCache::run`] follows the registry.
    pub fn new(backends: Backends, credential: Option<Credential>, shutdown: CancellationToken) -> Arc<Self> {
        Arc::new(ServicesCache {
            state: Mutex::new(Inner::default()),
            backends,
            credential,
            refill: Notify::new(),
            shutdown,
        })
    }

    /// Every critical section leaves the state whole, so a poisoned lock is usable.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached list when it may answer; else a miss, with a ticket to store the list
    /// about to be fetched when the cache may keep it (the subscription was live
    /// before the fetch began). The caller has already checked that its token may read
    /// the list.
    pub fn lookup(self: &Arc<Self>) -> Lookup {
        let state = self.lock();
        if state.watch == Watch::Live
            && let Some(body) = &state.body
        {
            return Lookup::Hit(body.clone());
        }
        Lookup::Miss(state.ticket(self))
    }

    /// The services list's body: the cached one when it may answer, else `fetch`'s
    /// (stored when it may be).
    #[cfg(test)]
    pub async fn get_or_fetch(
        self: &Arc<Self>,
        fetch: impl std::future::Future<Output = Result<Bytes, crate::error::ApiError>>,
    ) -> Result<Bytes, crate::error::ApiError> {
        match self.lookup() {
            Lookup::Hit(body) => Ok(body),
            Lookup::Miss(ticket) => {
                let body = fetch.await?;
                if let Some(ticket) = ticket {
                    ticket.store(body.clone());
                }
                Ok(body)
            }
        }
    }

    /// Empties the cache (the subscription stays).
    pub fn invalidate(&self) {
        self.lock().empty();
    }

    /// Follows the registry with the gateway's credential and keeps the list filled,
    /// until the gateway stops.
    pub async fn run(self: Arc<Self>) {
        let Some(credential) = self.credential.clone() else {
            tracing::warn!("no gateway credential: the services cache stays off");
            return;
        };
        tokio::join!(self.follow(&credential), self.fill(&credential));
    }

    /// Keeps a `WatchServices` subscription open: every event empties the cache and
    /// asks for a new read; a lost stream turns the cache off until it is reopened.
    async fn follow(&self, credential: &Credential) {
        let mut retry = FIRST_RETRY;
        loop {
            let opened = self
                .backends
                .registry()
                .watch_services(credential.request(WatchServicesRequest::default()))
                .await;
            match opened {
                Ok(response) => {
                    let mut stream = response.into_inner();
                    self.lock().set_watch(Watch::Live);
                    self.refill.notify_one();
                    retry = FIRST_RETRY;
                    tracing::info!("services cache on: watching the registry");
                    let reason = loop {
                        tokio::select! {
                            () = self.shutdown.cancelled() => break "gateway stopping",
                            message = stream.message() => match message {
                                Ok(Some(_event)) => {
                                    self.invalidate();
                                    self.refill.notify_one();
                                }
                                Ok(None) => break "registry ended the stream",
                                Err(status) => {
                                    tracing::warn!(code = ?status.code(), "services watch lost");
                                    break "registry stream lost";
                                }
                            },
                        }
                    };
                    self.lock().set_watch(Watch::Off);
                    tracing::info!(reason, "services cache off");
                }
                Err(status) => {
                    tracing::warn!(code = ?status.code(), "services cache off: cannot watch the registry");
                }
            }
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                () = tokio::time::sleep(retry) => {}
            }
            retry = (retry * 2).min(MAX_RETRY);
        }
    }

    /// Reads the list with the gateway's credential whenever asked to and it may be
    /// kept (the subscription live, nothing cached).
    async fn fill(self: &Arc<Self>, credential: &Credential) {
        // The first fill after the gateway starts is logged, so that one can tell when
        // the cache answers without any reader having asked.
        let mut announced = false;
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                () = self.refill.notified() => {}
            }
            let ticket = {
                let state = self.lock();
                if state.body.is_some() {
                    continue;
                }
                state.ticket(self)
            };
            let Some(ticket) = ticket else { continue };
            let read = services::list_all(&self.backends, credential).await;
            match read.map(|list| services::list_body(&list)) {
                Ok(Ok(body)) => {
                    if ticket.store(body) && !announced {
                        announced = true;
                        tracing::info!("services cache filled");
                    }
                }
                Ok(Err(_)) => {}
                Err(status) => {
                    tracing::warn!(code = ?status.code(), "services cache: cannot read the list");
                    tokio::select! {
                        () = self.shutdown.cancelled() => return,
                        () = tokio::time::sleep(REFILL_RETRY) => self.refill.notify_one(),
                    }
                }
            }
        }
    }
}

/// Empties the cache when dropped, and asks for a new read.
struct EmptyOnDrop<'a>(&'a ServicesCache);

impl Drop for EmptyOnDrop<'_> {
    fn drop(&mut self) {
        self.0.invalidate();
        self.0.refill.notify_one();
    }
}

/// Middleware: a request that may change the services list empties the cache once the
/// backend has answered, before the answer goes back (or when the request is dropped
/// half-way), so its client reads its own change through this gateway at once. The
/// registry answers only after committing, and gRPC answers' headers come after that.
pub async fn invalidate_on_write(State(cache): State<Arc<ServicesCache>>, request: Request, next: Next) -> Response {
    if !crate::routes::writes_services(request.method(), request.uri().path()) {
        return next.run(request).await;
    }
    let _empty = EmptyOnDrop(&cache);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ApiError;

    fn cache() -> Arc<ServicesCache> {
        let config = <crate::Config as clap::Parser>::parse_from(["gateway"]);
        let backends = Backends::new(&config).unwrap();
        ServicesCache::new(backends, None, CancellationToken::new())
    }

    async fn fetched(cache: &Arc<ServicesCache>, body: &'static str) -> Bytes {
        cache
            .get_or_fetch(async { Ok(Bytes::from_static(body.as_bytes())) })
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn stores_only_while_live_and_only_when_nothing_changed_during_the_fetch() {
        let cache = cache();
        // Not subscribed (the registry is unreachable): every call fetches.
        cache.lock().watch = Watch::Off;
        assert_eq!(fetched(&cache, "a").await, "a");
        assert_eq!(fetched(&cache, "b").await, "b");

        // Live: the first fetch is stored and answers the next call.
        cache.lock().set_watch(Watch::Live);
        assert_eq!(fetched(&cache, "c").await, "c");
        assert_eq!(fetched(&cache, "d").await, "c");
        cache.invalidate();
        assert_eq!(fetched(&cache, "e").await, "e");

        // An emptying during the fetch: the fetched list answers that call only.
        cache.invalidate();
        let during = cache
            .get_or_fetch(async {
                cache.invalidate();
                Ok(Bytes::from_static(b"stale"))
            })
            .await
            .unwrap();
        assert_eq!(during, "stale");
        assert_eq!(fetched(&cache, "f").await, "f");

        // The subscription lost: nothing cached is served.
        cache.lock().set_watch(Watch::Off);
        assert_eq!(fetched(&cache, "g").await, "g");

        // A subscription that comes up during a fetch does not make that fetch stored.
        let cache = self::cache();
        cache.lock().watch = Watch::Off;
        let racing = cache
            .get_or_fetch(async {
                cache.lock().set_watch(Watch::Live);
                Ok(Bytes::from_static(b"before"))
            })
            .await
            .unwrap();
        assert_eq!(racing, "before");
        assert_eq!(fetched(&cache, "after").await, "after");
        assert_eq!(fetched(&cache, "x").await, "after");
    }

    #[tokio::test]
    async fn a_failed_fetch_stores_nothing() {
        let cache = cache();
        cache.lock().set_watch(Watch::Live);
        let failed = cache.get_or_fetch(async { Err(ApiError::invalid_credentials()) }).await;
        assert!(failed.is_err());
        assert!(cache.lock().body.is_none());
    }

    #[tokio::test]
    async fn a_proxied_write_empties_the_cache_before_its_answer_goes_back() {
        use axum::{Router, body::Body, routing::any};
        use tower::ServiceExt;

        let cache = cache();
        cache.lock().set_watch(Watch::Live);
        let seen_by_handler = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .fallback(any({
                let (cache, seen) = (cache.clone(), seen_by_handler.clone());
                move || async move {
                    // What the cache holds while the backend works on the request.
                    let cached = cache.lock().body.is_some();
                    seen.lock().unwrap().push(cached);
                    "done"
                }
            }))
            .layer(axum::middleware::from_fn_with_state(cache.clone(), invalidate_on_write));
        for (method, path, emptied) in [
            ("GET", "/services/", false),
            ("POST", "/services/sync", true),
            ("DELETE", "/services/3", true),
            ("POST", "/v1/services/sync", true),
            ("DELETE", "/v1/services/3", true),
            ("POST", "/slipway.registry.v1.RegistryService/SyncServices", true),
            ("POST", "/slipway.registry.v1.RegistryService/DeleteService", true),
            ("POST", "/slipway.registry.v1.RegistryService/ListServices", false),
            ("DELETE", "/deployments/3", false),
        ] {
            assert_eq!(fetched(&cache, "list").await, "list");
            let request = Request::builder().method(method).uri(path).body(Body::empty()).unwrap();
            let response = app.clone().oneshot(request).await.unwrap();
            assert!(response.status().is_success());
            assert_eq!(cache.lock().body.is_none(), emptied, "{method} {path}");
            cache.invalidate();
        }
        // The handler (the backend call) ran with the cache as it was: it is emptied
        // after the backend answered, not only before.
        assert!(seen_by_handler.lock().unwrap().iter().all(|cached| *cached));
    }
}

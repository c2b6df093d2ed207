//! A cache of `GET /services/`'s answer (fastDeploy's services list, as the JSON bytes
//! the handler sends), kept correct by the registry's `WatchServices` stream.
//!
//! **When it answers.** Only while the gateway holds a live `WatchServices`
//! subscription, and only with a list fetched after that subscription was established
//! (the registry subscribes a watcher before it answers the call, so once the answer's
//! headers are here every later change is on the stream). Everything else goes to the
//! registry as before. The registry sends no snapshot, only one event per change after
//! it is committed: each service a sync adds, updates or deletes, and each
//! `DeleteService`; publishing a deployed service does not touch the list and sends
//! nothing. Any event empties the cache; so does the stream ending or failing (the
//! registry stopping or restarting, or ending a watcher that fell behind with ABORTED),
//! after which the cache stays off until a new subscription is up.
//!
//! **Races.** Every emptying bumps a generation counter. A fetched list is stored only
//! if the generation did not change while it was being fetched and the subscription
//! was live when the fetch began: a list read before a change whose event arrives
//! during the fetch is never stored, and one stored just before the event is emptied
//! by it.
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
//! **Whose token subscribes.** The gateway has no identity of its own towards the
//! backends (as with the WebSocket hub), and `WatchServices` needs a user token with
//! `services:read`. So the subscription is opened lazily with the token of a request
//! that has just passed exactly that check (and has at least `MIN_LIFE_SECS` left), and
//! is dropped, with the cache, when that token expires (a timer at its `exp`; the
//! registry checks the token only when the stream opens) or stops verifying (revoked,
//! or the revocation feed stale; checked every `CHECK_EVERY`). The next request that
//! passes the check opens a new one. No new credential is involved: the stream only
//! ever tells the gateway *that* something changed; the lists it serves were each
//! fetched with the token of a caller allowed to read them.
//!
//! **Assumptions.** One registry process (as deployed): its events are in-process, so
//! with several registry replicas a change made through one would not reach watchers
//! of another. A registry that stops or restarts closes its connections, which ends
//! the stream at once; a connection that dies silently (the registry's host vanishing)
//! is only found by the backend channels' HTTP/2 keep-alive pings, within about 50 s
//! (see `backends.rs`), and until then a change made through another registry
//! process could go unseen.

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
use common::{
    scope,
    token::{Claims, RemoteVerifier, TokenType},
};
use proto::registry::v1::WatchServicesRequest;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{backends::Backends, fastdeploy::auth::with_token};

/// How often the subscription's token is checked against revocations.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long after a failed attempt to subscribe the next one may be made.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// A token with less life left than this is not used to subscribe.
const MIN_LIFE_SECS: i64 = 10;

pub struct ServicesCache {
    state: Mutex<Inner>,
    backends: Backends,
    verifier: Arc<RemoteVerifier>,
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
    /// None; the next request that passes the check opens one.
    #[default]
    Idle,
    /// None, after a failed attempt; no new attempt before then.
    RetryAt(Instant),
    /// Being opened.
    Opening,
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
    pub fn store(self, body: Bytes) {
        let mut state = self.cache.lock();
        if state.generation == self.generation && state.watch == Watch::Live {
            state.body = Some(body);
        }
    }
}

impl ServicesCache {
    pub fn new(backends: Backends, verifier: Arc<RemoteVerifier>, shutdown: CancellationToken) -> Arc<Self> {
        Arc::new(ServicesCache {
            state: Mutex::new(Inner::default()),
            backends,
            verifier,
            shutdown,
        })
    }

    /// Every critical section leaves the state whole, so a poisoned lock is usable.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached list when it may answer; else a miss, with a ticket to store the list
    /// about to be fetched when the cache may keep it (the subscription was live
    /// before the fetch began). The caller has already verified `token` and checked it
    /// may read the list; `claims` are its claims. Opens the subscription when due.
    pub fn lookup(self: &Arc<Self>, token: &str, claims: &Claims) -> Lookup {
        let (generation, live, subscribe) = {
            let mut state = self.lock();
            if state.watch == Watch::Live
                && let Some(body) = &state.body
            {
                return Lookup::Hit(body.clone());
            }
            let subscribe = self.may_open(state.watch) && may_subscribe(claims);
            if subscribe {
                state.watch = Watch::Opening;
            }
            (state.generation, state.watch == Watch::Live, subscribe)
        };
        if subscribe {
            tokio::spawn(self.clone().follow(token.to_owned(), claims.exp));
        }
        Lookup::Miss(live.then(|| Ticket {
            cache: self.clone(),
            generation,
        }))
    }

    /// The services list's body: the cached one when it may answer, else `fetch`'s
    /// (stored when it may be).
    #[cfg(test)]
    pub async fn get_or_fetch(
        self: &Arc<Self>,
        token: &str,
        claims: &Claims,
        fetch: impl std::future::Future<Output = Result<Bytes, crate::error::ApiError>>,
    ) -> Result<Bytes, crate::error::ApiError> {
        match self.lookup(token, claims) {
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

    fn may_open(&self, watch: Watch) -> bool {
        let due = match watch {
            Watch::Idle => true,
            Watch::RetryAt(at) => Instant::now() >= at,
            Watch::Opening | Watch::Live => false,
        };
        due && !self.shutdown.is_cancelled()
    }

    /// Opens `WatchServices` with `token` and follows it: every event empties the cache;
    /// the end of the stream, the token's expiry or its failing a check (revoked) turn
    /// the cache off until a request opens a new subscription.
    async fn follow(self: Arc<Self>, token: String, exp: i64) {
        let opened = match with_token(WatchServicesRequest::default(), &token) {
            Ok(request) => self.backends.registry().watch_services(request).await,
            Err(_) => Err(tonic::Status::unauthenticated("unusable token")),
        };
        let mut stream = match opened {
            Ok(response) => response.into_inner(),
            Err(status) => {
                tracing::warn!(code = ?status.code(), "services cache off: cannot watch the registry");
                self.lock().set_watch(Watch::RetryAt(Instant::now() + RETRY_AFTER));
                return;
            }
        };
        self.lock().set_watch(Watch::Live);
        tracing::info!("services cache on: watching the registry");
        let left = exp.saturating_sub(chrono::Utc::now().timestamp()).max(0);
        let expiry = tokio::time::sleep(Duration::from_secs(left.unsigned_abs()));
        tokio::pin!(expiry);
        let mut check = tokio::time::interval_at(Instant::now() + CHECK_EVERY, CHECK_EVERY);
        let reason = loop {
            tokio::select! {
                () = self.shutdown.cancelled() => break "gateway stopping",
                () = &mut expiry => break "subscription token expired",
                _ = check.tick() => {
                    if self.verifier.verify(&token).await.is_err() {
                        break "subscription token no longer valid";
                    }
                }
                message = stream.message() => match message {
                    Ok(Some(_event)) => self.invalidate(),
                    Ok(None) => break "registry ended the stream",
                    Err(status) => {
                        tracing::warn!(code = ?status.code(), "services watch lost");
                        break "registry stream lost";
                    }
                },
            }
        };
        self.lock().set_watch(Watch::Idle);
        tracing::info!(reason, "services cache off");
    }
}

/// Whether a token that passed the list's check may also open the subscription: a
/// user token with `services:read` and some life left.
fn may_subscribe(claims: &Claims) -> bool {
    claims.token_type == TokenType::User
        && scope::allows(claims, scope::SERVICES_READ)
        && claims.exp - chrono::Utc::now().timestamp() >= MIN_LIFE_SECS
}

/// Empties the cache when dropped.
struct EmptyOnDrop<'a>(&'a ServicesCache);

impl Drop for EmptyOnDrop<'_> {
    fn drop(&mut self) {
        self.0.invalidate();
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
        let verifier = Arc::new(RemoteVerifier::new(backends.auth(), Duration::from_secs(30)));
        ServicesCache::new(backends, verifier, CancellationToken::new())
    }

    fn user() -> Claims {
        let now = chrono::Utc::now().timestamp();
        Claims {
            iss: common::ISSUER.into(),
            aud: common::AUDIENCE.into(),
            sub: "user:admin".into(),
            iat: now,
            nbf: now,
            exp: now + 600,
            jti: "j".into(),
            token_type: TokenType::User,
            user: Some("admin".into()),
            service: None,
            origin: None,
            deployment: None,
            permissions: None,
            parent: None,
            services: None,
            ext: None,
        }
    }

    async fn fetched(cache: &Arc<ServicesCache>, body: &'static str) -> Bytes {
        cache
            .get_or_fetch("t", &user(), async { Ok(Bytes::from_static(body.as_bytes())) })
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn stores_only_while_live_and_only_when_nothing_changed_during_the_fetch() {
        let cache = cache();
        // Not subscribed (the registry is unreachable): every call fetches.
        cache.lock().watch = Watch::RetryAt(Instant::now() + Duration::from_secs(60));
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
            .get_or_fetch("t", &user(), async {
                cache.invalidate();
                Ok(Bytes::from_static(b"stale"))
            })
            .await
            .unwrap();
        assert_eq!(during, "stale");
        assert_eq!(fetched(&cache, "f").await, "f");

        // The subscription lost: nothing cached is served.
        cache
            .lock()
            .set_watch(Watch::RetryAt(Instant::now() + Duration::from_secs(60)));
        assert_eq!(fetched(&cache, "g").await, "g");

        // A subscription that comes up during a fetch does not make that fetch stored.
        let cache = self::cache();
        cache.lock().watch = Watch::RetryAt(Instant::now() + Duration::from_secs(60));
        let racing = cache
            .get_or_fetch("t", &user(), async {
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
        let failed = cache
            .get_or_fetch("t", &user(), async { Err(ApiError::invalid_credentials()) })
            .await;
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

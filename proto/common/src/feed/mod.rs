//! A feed: the rows of an append-only table (deployment events, service events),
//! numbered by one sequence, delivered in order to everyone in this process who
//! follows them, whichever replica on the database wrote them.
//!
//! The table is the truth. A tailer reads it after the last sequence it delivered
//! (its position) and broadcasts what it reads. It reads when
//! - this process committed rows: they are handed over at once
//!   ([`Feed::committed`]) and delivered without a read when they follow the
//!   position (so SQLite, and one replica, deliver at commit);
//! - PostgreSQL notifies the feed's channel: writers `NOTIFY` it in the writing
//!   transaction ([`announce`]), so the notice is sent at commit, carrying only the
//!   new sequence; a notice for a sequence already delivered costs nothing;
//! - the listening connection is down: notices sent meanwhile are lost, so the table
//!   is read every [`POLL_INTERVAL`] until it is back, and once more when it is;
//! - every [`SAFETY_POLL_INTERVAL`] anyway, in case a notice went astray.
//!
//! Sequences can become visible out of order (see [`gap`]): the tailer delivers up to
//! a gap and holds there until it fills or [`MAX_HOLD`] passes, then skips it (a row
//! that commits even later is not broadcast; it is still in the table). A follower
//! that falls more than the broadcast's capacity behind reads what it missed from the
//! table, up to [`Feed::position`], so it never holds up the others.

pub mod gap;
mod watch;

use std::{
    future::Future,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement,
    sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions},
};
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::{CancellationToken, DropGuard};

pub use watch::{Watched, watch};

/// How long a gap in the sequences is waited on before it is skipped. A writing
/// transaction takes its sequence a moment before it commits (the rows are inserted
/// last), so a gap still open after this is a rolled-back insert.
pub const MAX_HOLD: Duration = Duration::from_millis(1500);
/// How often the table is read while no notice can come (listening connection down).
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// How often the table is read anyway while notices come.
pub const SAFETY_POLL_INTERVAL: Duration = Duration::from_secs(2);
/// Rows read per query.
const PAGE: u64 = 1000;
/// How many rows a follower may fall behind before it reads the table instead.
const BROADCAST_CAPACITY: usize = 1024;

/// The table a feed follows.
pub trait Source: Send + Sync + 'static {
    type Row: Clone + Send + Sync + 'static;
    fn sequence(row: &Self::Row) -> i64;
    /// At most `limit` rows with a sequence above `after`, in sequence order.
    fn rows_after(&self, after: i64, limit: u64) -> impl Future<Output = Result<Vec<Self::Row>, DbErr>> + Send;
    /// The highest sequence in the table (0 when empty): where a new feed starts.
    fn last_sequence(&self) -> impl Future<Output = Result<i64, DbErr>> + Send;
    /// Called just before rows are broadcast (the registry drops its cached table).
    fn before_delivery(&self, _rows: &[Self::Row]) {}
}

/// A handle on a running feed; the tailer stops when the last handle is dropped.
pub struct Feed<S: Source> {
    shared: Arc<Shared<S>>,
    _stop: Arc<DropGuard>,
}

impl<S: Source> Clone for Feed<S> {
    fn clone(&self) -> Self {
        Feed {
            shared: self.shared.clone(),
            _stop: self._stop.clone(),
        }
    }
}

impl<S: Source> std::fmt::Debug for Feed<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed")
            .field("channel", &self.shared.channel)
            .field("position", &self.position())
            .finish()
    }
}

struct Shared<S: Source> {
    source: S,
    channel: &'static str,
    max_hold: Duration,
    state: Mutex<State<S::Row>>,
    wake: Notify,
}

struct State<R> {
    position: i64,
    hold: Option<gap::Hold>,
    sender: broadcast::Sender<R>,
}

/// A follower's start: every row after `position` comes through `receiver` (rows at
/// or before it may too; skip them).
pub struct Subscription<R> {
    pub receiver: broadcast::Receiver<R>,
    pub position: i64,
}

impl<S: Source> Feed<S> {
    /// Starts following the table from its last row. `channel` is the PostgreSQL
    /// notification channel writers [`announce`] on.
    pub async fn start(source: S, db: &DatabaseConnection, channel: &'static str) -> Result<Feed<S>, DbErr> {
        Feed::start_holding(source, db, channel, MAX_HOLD).await
    }

    /// [`Feed::start`] with another bound on how long a gap is held (tests).
    pub async fn start_holding(
        source: S,
        db: &DatabaseConnection,
        channel: &'static str,
        max_hold: Duration,
    ) -> Result<Feed<S>, DbErr> {
        let position = source.last_sequence().await?;
        let shared = Arc::new(Shared {
            source,
            channel,
            max_hold,
            state: Mutex::new(State {
                position,
                hold: None,
                sender: broadcast::channel(BROADCAST_CAPACITY).0,
            }),
            wake: Notify::new(),
        });
        let stop = CancellationToken::new();
        let listen = (db.get_database_backend() == DbBackend::Postgres)
            .then(|| db.get_postgres_connection_pool().connect_options().as_ref().clone());
        tokio::spawn(tail(shared.clone(), listen, stop.clone()));
        Ok(Feed {
            shared,
            _stop: Arc::new(stop.drop_guard()),
        })
    }

    /// The sequence delivered through: every row up to it is in the table (or was
    /// skipped), and every row after it will come through a subscription.
    pub fn position(&self) -> i64 {
        self.shared.lock().position
    }

    pub fn subscribe(&self) -> Subscription<S::Row> {
        let state = self.shared.lock();
        Subscription {
            receiver: state.sender.subscribe(),
            position: state.position,
        }
    }

    pub fn source(&self) -> &S {
        &self.shared.source
    }

    /// Rows this process has just committed, in sequence order: delivered at once when
    /// they follow the position, else the tailer reads the table.
    pub fn committed(&self, rows: Vec<S::Row>) {
        if rows.is_empty() {
            return;
        }
        let mut state = self.shared.lock();
        let fresh: Vec<S::Row> = rows
            .into_iter()
            .filter(|row| S::sequence(row) > state.position)
            .collect();
        let follows = fresh
            .iter()
            .enumerate()
            .all(|(i, row)| S::sequence(row) == state.position + 1 + i as i64);
        if !follows {
            drop(state);
            self.shared.wake.notify_one();
            return;
        }
        let held = state.hold.take().is_some();
        self.shared.deliver(&mut state, &fresh);
        drop(state);
        if held {
            // Rows after the gap this filled may be waiting in the table.
            self.shared.wake.notify_one();
        }
    }
}

impl<S: Source> Shared<S> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State<S::Row>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Broadcasts `rows` (in order, all after the position) and moves the position:
    /// first the position, so a follower subscribing meanwhile never misses a row.
    fn deliver(&self, state: &mut State<S::Row>, rows: &[S::Row]) {
        let Some(last) = rows.last() else { return };
        self.source.before_delivery(rows);
        state.position = S::sequence(last);
        for row in rows {
            // Nobody following is fine.
            let _ = state.sender.send(row.clone());
        }
    }

    /// Reads the table after the position and delivers what the gap rule allows.
    /// Returns how long to wait at most before reading again because of a hold, and
    /// whether a full page was read (read again at once).
    async fn read(&self) -> Result<(Option<Duration>, bool), DbErr> {
        let after = self.lock().position;
        let rows = self.source.rows_after(after, PAGE).await?;
        let full = rows.len() as u64 >= PAGE;
        let mut state = self.lock();
        let position = state.position;
        let rows: Vec<S::Row> = rows.into_iter().filter(|r| S::sequence(r) > position).collect();
        let sequences: Vec<i64> = rows.iter().map(S::sequence).collect();
        let now = Instant::now();
        let advance = gap::advance(position, &sequences, state.hold, now, self.max_hold);
        for (from, to) in &advance.skipped {
            tracing::warn!(
                channel = self.channel,
                from,
                to,
                "sequences never committed within the hold; skipped"
            );
        }
        state.hold = advance.hold;
        self.deliver(&mut state, &rows[..advance.deliver]);
        let wait = advance
            .hold
            .map(|h| self.max_hold.saturating_sub(now.saturating_duration_since(h.since)));
        Ok((wait, full && advance.hold.is_none()))
    }
}

enum Woken {
    Stop,
    Timer,
    Local,
    Notice(Option<i64>),
    Lost(Option<String>),
}

/// The tailer: reads when woken, listens on PostgreSQL, polls otherwise.
async fn tail<S: Source>(shared: Arc<Shared<S>>, listen: Option<PgConnectOptions>, stop: CancellationToken) {
    let mut listener: Option<PgListener> = None;
    let mut listen_failing = false;
    let mut read_failing = false;
    let mut hold_wait: Option<Duration> = None;
    let mut again = false;
    loop {
        if listener.is_none()
            && let Some(options) = &listen
        {
            match connect_listener(options, shared.channel).await {
                Ok(connected) => {
                    if listen_failing {
                        tracing::info!(channel = shared.channel, "listening again");
                    }
                    listener = Some(connected);
                    listen_failing = false;
                    // Whatever was announced while nobody listened.
                    again = true;
                }
                Err(error) => {
                    if !listen_failing {
                        tracing::warn!(channel = shared.channel, %error, "cannot listen; reading the table every 200 ms");
                    }
                    listen_failing = true;
                }
            }
        }
        let woken = if again {
            Woken::Timer
        } else {
            let poll = if listener.is_some() || listen.is_none() {
                SAFETY_POLL_INTERVAL
            } else {
                POLL_INTERVAL
            };
            let wait = hold_wait.map_or(poll, |h| h.min(poll));
            tokio::select! {
                () = stop.cancelled() => Woken::Stop,
                () = tokio::time::sleep(wait) => Woken::Timer,
                () = shared.wake.notified() => Woken::Local,
                notice = next_notice(listener.as_mut()) => match notice {
                    Ok(Some(n)) => Woken::Notice(n.payload().parse().ok()),
                    Ok(None) => Woken::Lost(None),
                    Err(error) => Woken::Lost(Some(error.to_string())),
                },
            }
        };
        match woken {
            Woken::Stop => return,
            Woken::Notice(Some(sequence)) if sequence <= shared.lock().position && hold_wait.is_none() => {
                continue;
            }
            Woken::Lost(error) => {
                tracing::warn!(
                    channel = shared.channel,
                    ?error,
                    "the listening connection was lost; reading the table every 200 ms until it is back"
                );
                listener = None;
                listen_failing = true;
            }
            Woken::Timer | Woken::Local | Woken::Notice(_) => {}
        }
        match shared.read().await {
            Ok((wait, full)) => {
                if read_failing {
                    tracing::info!(channel = shared.channel, "the table is readable again");
                }
                read_failing = false;
                hold_wait = wait;
                again = full;
            }
            Err(error) => {
                if !read_failing {
                    tracing::error!(channel = shared.channel, %error, "cannot read the table");
                }
                read_failing = true;
                again = false;
            }
        }
    }
}

/// The application name of a listening connection, so an operator (or a test) can
/// find it in `pg_stat_activity`: `slipway-feed <channel> <pid>`.
pub fn listener_name(channel: &str) -> String {
    format!("slipway-feed {channel} {}", std::process::id())
}

async fn connect_listener(options: &PgConnectOptions, channel: &'static str) -> Result<PgListener, DbErr> {
    let options = options.clone().application_name(&listener_name(channel));
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(options);
    let mut listener = PgListener::connect_with(&pool)
        .await
        .map_err(|e| DbErr::Custom(e.to_string()))?;
    listener
        .listen(channel)
        .await
        .map_err(|e| DbErr::Custom(e.to_string()))?;
    Ok(listener)
}

/// The next notice; `Ok(None)` when the connection was lost. Never ends without a
/// listener.
pub async fn next_notice(
    listener: Option<&mut PgListener>,
) -> Result<Option<sea_orm::sqlx::postgres::PgNotification>, sea_orm::sqlx::Error> {
    match listener {
        Some(listener) => listener.try_recv().await,
        None => std::future::pending().await,
    }
}

/// Tells every replica's feed on `channel` that rows up to `sequence` are coming:
/// call inside the writing transaction (PostgreSQL sends the notice at commit, and
/// not at all on rollback). Nothing on SQLite.
pub async fn announce(txn: &impl ConnectionTrait, channel: &str, sequence: i64) -> Result<(), DbErr> {
    if txn.get_database_backend() != DbBackend::Postgres {
        return Ok(());
    }
    txn.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT pg_notify($1, $2)",
        [channel.into(), sequence.to_string().into()],
    ))
    .await?;
    Ok(())
}

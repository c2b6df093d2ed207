//! How a replica learns what other replicas on the same database did: revocations
//! (within moments: every verifier following any replica's feed must refuse a token
//! revoked on another within a second) and signing-key rotations.
//!
//! The tables stay the truth. On PostgreSQL a revoking transaction `NOTIFY`s the
//! revocations channel and a rotation the keys channel, carrying only a number; each
//! replica `LISTEN`s on one connection and, when told, reads the log from its last
//! sequence number (`RevokedSet::catch_up`) or the keys again. Notices sent while
//! the listening connection is down are lost, so the log is read whenever it comes
//! back, every [`POLL_INTERVAL`] while it is down, and every
//! [`LISTENING_POLL_INTERVAL`] anyway. SQLite (one replica) reads the log every
//! [`POLL_INTERVAL`]; this replica's own revocations are read in at once
//! (`RevokedSet::after_revoking`). Whatever the notices, the keys and which legacy
//! password hashes are left are read again every [`keys::RELOAD_INTERVAL`].

use std::time::Duration;

use tokio::time::Instant;

use common::feed::next_notice;
use sea_orm::{DbBackend, sqlx::postgres::PgListener};
use tokio_util::sync::CancellationToken;

use crate::{
    accounts::Accounts,
    keys::{self, KeyRing},
    revoked::RevokedSet,
    storage::{REVOCATIONS_CHANNEL, signing::KEYS_CHANNEL},
};

/// How often the log is read when no notice can come.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// How often the log is read while notices come, in case one went astray.
pub const LISTENING_POLL_INTERVAL: Duration = Duration::from_secs(1);

enum Woken {
    Shutdown,
    Timer,
    Revocations,
    Keys,
    Lost(Option<String>),
}

/// Follows revocations, key rotations and password rehashes made elsewhere until
/// `shutdown`.
pub async fn follow(revoked: &RevokedSet, keys: &KeyRing, accounts: &Accounts, shutdown: CancellationToken) {
    let connection = revoked.store().connection();
    let pool = (connection.get_database_backend() == DbBackend::Postgres)
        .then(|| connection.get_postgres_connection_pool().clone());
    let mut listener: Option<PgListener> = None;
    let mut listen_failing = false;
    let mut read_failing = false;
    let mut next_reload = Instant::now() + keys::RELOAD_INTERVAL;
    loop {
        if Instant::now() >= next_reload {
            next_reload = Instant::now() + keys::RELOAD_INTERVAL;
            keys.refresh().await;
            if let Err(error) = accounts.refresh_legacy().await {
                tracing::error!(%error, "cannot read which legacy password hashes are left");
            }
        }
        if listener.is_none()
            && let Some(pool) = &pool
        {
            match listen(pool).await {
                Ok(connected) => {
                    listener = Some(connected);
                    if listen_failing {
                        tracing::info!("listening for revocations and key rotations again");
                    }
                    listen_failing = false;
                    // Whatever was announced while nobody listened.
                    read_log(revoked, &mut read_failing).await;
                    keys.refresh().await;
                }
                Err(error) if !listen_failing => {
                    tracing::warn!(%error, "cannot listen for revocations; reading the log every 200 ms");
                    listen_failing = true;
                }
                Err(_) => {}
            }
        }
        let poll = if listener.is_some() {
            LISTENING_POLL_INTERVAL
        } else {
            POLL_INTERVAL
        };
        let wait = poll.min(next_reload.saturating_duration_since(Instant::now()));
        let woken = tokio::select! {
            () = shutdown.cancelled() => Woken::Shutdown,
            () = tokio::time::sleep(wait) => Woken::Timer,
            notice = next_notice(listener.as_mut()) => match notice {
                Ok(Some(n)) if n.channel() == KEYS_CHANNEL => Woken::Keys,
                Ok(Some(_)) => Woken::Revocations,
                Ok(None) => Woken::Lost(None),
                Err(error) => Woken::Lost(Some(error.to_string())),
            },
        };
        match woken {
            Woken::Shutdown => return,
            Woken::Timer | Woken::Revocations => read_log(revoked, &mut read_failing).await,
            Woken::Keys => keys.refresh().await,
            Woken::Lost(error) => {
                tracing::warn!(
                    ?error,
                    "the listening connection was lost; reading the log every 200 ms until it is back"
                );
                listener = None;
                listen_failing = true;
                read_log(revoked, &mut read_failing).await;
            }
        }
    }
}

async fn listen(pool: &sea_orm::sqlx::PgPool) -> Result<PgListener, sea_orm::sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen_all([REVOCATIONS_CHANNEL, KEYS_CHANNEL]).await?;
    Ok(listener)
}

async fn read_log(revoked: &RevokedSet, failing: &mut bool) {
    match revoked.catch_up().await {
        Ok(()) if *failing => {
            tracing::info!("revocation log readable again");
            *failing = false;
        }
        Ok(()) => {}
        Err(error) if !*failing => {
            tracing::error!(%error, "cannot read the revocation log");
            *failing = true;
        }
        Err(_) => {}
    }
}

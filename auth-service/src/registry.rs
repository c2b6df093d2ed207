//! The token registry as the API shows it: registry rows as `TokenInfo`, and the
//! revocation feed verifiers follow (a snapshot, then every new revocation as soon as
//! this replica has read it from the log, whichever replica made it, and a heartbeat
//! so a verifier knows the feed is alive).

use std::time::{Duration, Instant};

use proto::auth::v1 as pb;
use tokio::sync::watch;
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::storage::{Store, tokens};

/// How often a feed looks at the log when it cannot be told of changes.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// How often the feed sends an event when nothing changed.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

pub fn type_name(kind: pb::TokenType) -> &'static str {
    match kind {
        pb::TokenType::Unspecified => "",
        pb::TokenType::User => "user",
        pb::TokenType::Service => "service",
        pb::TokenType::Deployment => "deployment",
        pb::TokenType::Config => "config",
    }
}

fn type_of(name: &str) -> pb::TokenType {
    match name {
        "user" => pb::TokenType::User,
        "service" => pb::TokenType::Service,
        "deployment" => pb::TokenType::Deployment,
        "config" => pb::TokenType::Config,
        _ => pb::TokenType::Unspecified,
    }
}

fn timestamp(at: chrono::DateTime<chrono::Utc>) -> proto::wkt::Timestamp {
    at.into()
}

pub fn token_info(t: &tokens::Model) -> pb::TokenInfo {
    pb::TokenInfo {
        id: t.id.clone(),
        r#type: type_of(&t.token_type) as i32,
        name: t.name.clone(),
        subject: t.subject.clone(),
        service: t.service.clone().unwrap_or_default(),
        origin: t.origin.clone().unwrap_or_default(),
        permissions: t
            .permissions
            .as_ref()
            .and_then(|p| serde_json::from_value::<Vec<String>>(p.clone()).ok())
            .unwrap_or_default(),
        created_by: t.created_by.clone(),
        created_at: Some(timestamp(t.created_at)),
        expires_at: Some(timestamp(t.expires_at)),
        revoked_at: t.revoked_at.map(timestamp),
        parent_id: t.parent_id.clone().unwrap_or_default(),
        deployment_id: t.deployment_id.unwrap_or_default(),
    }
}

/// Revocations after `after`: first everything not yet expired (marked `snapshot`),
/// then each new batch as soon as `changes` says this replica has read it from the
/// log, with heartbeats in between. Ends when the watcher goes away, and (end of
/// stream: verifiers reconnect) at `shutdown`.
pub fn revocation_feed(
    store: Store,
    after: i64,
    changes: watch::Receiver<i64>,
    shutdown: CancellationToken,
) -> impl Stream<Item = Result<pb::RevocationEvent, Status>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = feed(store, after, changes, tx) => {}
        }
    });
    ReceiverStream::new(rx)
}

/// The feed of one watcher, until it goes away.
async fn feed(
    store: Store,
    after: i64,
    mut changes: watch::Receiver<i64>,
    tx: tokio::sync::mpsc::Sender<Result<pb::RevocationEvent, Status>>,
) {
    let mut told = true;
    let mut last = after;
    let mut snapshot = true;
    let mut sent_at = Instant::now();
    loop {
        let rows = match store.revocations_after(last).await {
            Ok(rows) => rows,
            Err(error) => {
                tracing::error!(%error, "revocation feed cannot read the database");
                let _ = tx.send(Err(Status::unavailable("revocations unavailable"))).await;
                return;
            }
        };
        if snapshot || !rows.is_empty() || sent_at.elapsed() >= HEARTBEAT {
            let sequence = rows.last().map_or(last, |r| r.seq);
            let event = pb::RevocationEvent {
                sequence,
                expires_at: rows.iter().map(|r| r.expires_at).max().map(timestamp),
                token_ids: rows.into_iter().map(|r| r.token_id).collect(),
                snapshot,
            };
            if tx.send(Ok(event)).await.is_err() {
                return;
            }
            last = sequence;
            snapshot = false;
            sent_at = Instant::now();
        }
        let next_heartbeat = HEARTBEAT.saturating_sub(sent_at.elapsed());
        tokio::select! {
            changed = changes.changed(), if told => told = changed.is_ok(),
            () = tokio::time::sleep(POLL_INTERVAL), if !told => {}
            () = tokio::time::sleep(next_heartbeat) => {}
            () = tx.closed() => return,
        }
    }
}

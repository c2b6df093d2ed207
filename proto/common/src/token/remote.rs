//! A verifier whose keys come from the auth service's JWKS (fetched on demand and
//! refetched when a token names an unknown key id: the token waits for a fetch that
//! started after it arrived, so a key rotated in on any auth replica is accepted from
//! its first token; fetches start at most once per [`MIN_REFRESH_INTERVAL`], so
//! garbage key ids cannot hammer the auth service), and whose revocation set follows
//! the auth service's revocation feed. If the feed is lost for longer than
//! `max_stale`, every token is refused (fail closed) until it is back.
//!
//! A revoked id is kept until its token's `exp` plus the verification leeway, so a
//! revoked token never verifies again. [`RemoteVerifier::token_ends`] tells a long
//! call (a server stream) when its token stops being valid.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use proto::auth::v1::{GetJwksRequest, WatchRevocationsRequest, auth_service_client::AuthServiceClient};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use super::{Claims, LEEWAY_SECS, TokenError, Verifier};
use crate::{coalesce::Coalesced, identity::Credential};

/// The least time between two key-set fetches of one verifier.
pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_millis(500);

pub struct RemoteVerifier {
    verifier: Verifier,
    client: AuthServiceClient<Channel>,
    refreshes: Coalesced,
    revocations: RwLock<Revocations>,
    max_stale: Duration,
    /// Bumped at every event of the feed, so [`RemoteVerifier::token_ends`] looks
    /// again at once.
    changes: tokio::sync::watch::Sender<u64>,
    /// This service's credential, presented to the auth service to follow its feed.
    credential: Option<Credential>,
}

/// Revoked token ids (with their expiry, to forget them afterwards) and when the
/// feed was last heard from.
#[derive(Default)]
struct Revocations {
    ids: HashMap<String, i64>,
    sequence: i64,
    heard_at: Option<Instant>,
}

impl std::fmt::Debug for RemoteVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteVerifier")
            .field("verifier", &self.verifier)
            .finish_non_exhaustive()
    }
}

impl RemoteVerifier {
    pub fn new(client: AuthServiceClient<Channel>, max_stale: Duration) -> Self {
        RemoteVerifier {
            verifier: Verifier::new(crate::ISSUER, crate::AUDIENCE),
            client,
            refreshes: Coalesced::new(MIN_REFRESH_INTERVAL),
            revocations: RwLock::new(Revocations::default()),
            max_stale,
            changes: tokio::sync::watch::Sender::new(0),
            credential: None,
        }
    }

    /// Presents `credential` when following the revocation feed (the auth service
    /// serves it only to known services and to tokens that may read tokens).
    pub fn with_credential(mut self, credential: Option<Credential>) -> Self {
        self.credential = credential;
        self
    }

    /// The credential this service presents to the auth service, if any.
    pub fn credential(&self) -> Option<&Credential> {
        self.credential.as_ref()
    }

    /// Whether the revocation set is recent enough to trust.
    pub fn revocations_fresh(&self) -> bool {
        self.revocations.read().is_ok_and(|set| self.is_fresh(&set))
    }

    fn is_fresh(&self, set: &Revocations) -> bool {
        set.heard_at.is_some_and(|t| t.elapsed() <= self.max_stale)
    }

    /// Follows the auth service's revocation feed until `shutdown`, reconnecting
    /// (and resuming from the last sequence number) whenever it drops.
    pub async fn follow_revocations(&self, shutdown: CancellationToken) {
        loop {
            let after = self.revocations.read().map(|r| r.sequence).unwrap_or(0);
            let mut client = self.client.clone();
            let mut request = tonic::Request::new(WatchRevocationsRequest { after_sequence: after });
            if let Some(credential) = &self.credential {
                credential.attach(request.metadata_mut());
            }
            let stream = client.watch_revocations(request);
            let result = tokio::select! {
                () = shutdown.cancelled() => return,
                result = stream => result,
            };
            match result {
                Ok(response) => {
                    let mut events = response.into_inner();
                    loop {
                        let message = tokio::select! {
                            () = shutdown.cancelled() => return,
                            message = events.message() => message,
                        };
                        match message {
                            Ok(Some(event)) => self.apply(event),
                            Ok(None) => break,
                            Err(status) => {
                                tracing::warn!(code = ?status.code(), "revocation feed lost");
                                break;
                            }
                        }
                    }
                }
                Err(status) => tracing::warn!(code = ?status.code(), "cannot reach the revocation feed"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    fn apply(&self, event: proto::auth::v1::RevocationEvent) {
        let Ok(mut set) = self.revocations.write() else { return };
        let now = chrono::Utc::now().timestamp();
        let expires = event.expires_at.map_or(i64::MAX, |t| t.seconds);
        // A token verifies until `exp` + leeway: its revocation must last as long.
        set.ids.retain(|_, exp| exp.saturating_add(LEEWAY_SECS as i64) >= now);
        for id in event.token_ids {
            set.ids.insert(id, expires);
        }
        set.sequence = set.sequence.max(event.sequence);
        set.heard_at = Some(Instant::now());
        drop(set);
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Refuses these token ids from now on, before the feed reports them: for a
    /// revocation this service passed on and saw answered, so that it holds here even
    /// if the auth service stops before its feed carries it. The feed's event for
    /// them later sets their expiry, after which they are forgotten.
    pub fn revoked_here(&self, ids: &[String]) {
        let Ok(mut set) = self.revocations.write() else { return };
        for id in ids {
            set.ids.entry(id.clone()).or_insert(i64::MAX);
        }
        drop(set);
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Completes when a token that verified stops being good for a call that lasts
    /// (a server stream): at its `exp` ([`TokenError::Expired`]), within moments of
    /// the feed reporting it revoked ([`TokenError::Revoked`]), or once the feed has
    /// been silent too long ([`TokenError::RevocationsUnavailable`], looked at every
    /// second).
    pub async fn token_ends(self: Arc<Self>, claims: Claims) -> TokenError {
        let mut changes = self.changes.subscribe();
        let now_ms = chrono::Utc::now().timestamp_millis();
        let left_ms = claims.exp.saturating_mul(1000).saturating_sub(now_ms);
        let expiry = tokio::time::sleep(Duration::from_millis(u64::try_from(left_ms).unwrap_or(0)));
        tokio::pin!(expiry);
        let mut freshness = tokio::time::interval(Duration::from_secs(1));
        loop {
            if let Err(reason) = self.check_revocation(&claims) {
                return reason;
            }
            tokio::select! {
                () = &mut expiry => return TokenError::Expired,
                // The sender lives in `self`, so this never fails while we hold it.
                _ = changes.changed() => {}
                _ = freshness.tick() => {}
            }
        }
    }

    fn check_revocation(&self, claims: &Claims) -> Result<(), TokenError> {
        let set = self
            .revocations
            .read()
            .map_err(|_| TokenError::RevocationsUnavailable)?;
        if !self.is_fresh(&set) {
            return Err(TokenError::RevocationsUnavailable);
        }
        if set.ids.contains_key(&claims.jti) {
            return Err(TokenError::Revoked);
        }
        Ok(())
    }

    /// Replaces the key set (for a static JWKS, or tests).
    pub fn set_keys(&self, jwks: &proto::auth::v1::Jwks) -> usize {
        self.verifier.set_keys(jwks)
    }

    /// Fetches the key set now.
    pub async fn refresh(&self) -> Result<usize, tonic::Status> {
        let jwks = self.client.clone().get_jwks(GetJwksRequest {}).await?.into_inner();
        let count = self.verifier.set_keys(&jwks);
        tracing::debug!(keys = count, "jwks refreshed");
        Ok(count)
    }

    /// Fetches the key set, unless a fetch that started after this call did; at
    /// most one fetch per [`MIN_REFRESH_INTERVAL`] (callers wait for the next).
    async fn refresh_coalesced(&self) {
        self.refreshes
            .run(|| async {
                if let Err(status) = self.refresh().await {
                    tracing::warn!(code = ?status.code(), "cannot fetch jwks from auth-service");
                }
            })
            .await;
    }

    /// Signature, claims and time window, then the revocation set.
    pub async fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let claims = match self.verifier.verify(token) {
            Err(TokenError::UnknownKey) => {
                // A key rotated in since the last fetch (on any auth replica).
                self.refresh_coalesced().await;
                self.verifier.verify(token)
            }
            other => other,
        }?;
        self.check_revocation(&claims)?;
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::testing::{claims, now, sign, signer};
    use proto::auth::v1::{Jwks, RevocationEvent};

    fn remote(max_stale: Duration) -> (RemoteVerifier, jsonwebtoken::EncodingKey) {
        let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:9").connect_lazy();
        let verifier = RemoteVerifier::new(AuthServiceClient::new(channel), max_stale);
        let (key, enc) = signer(3);
        verifier.set_keys(&Jwks {
            keys: vec![crate::token::public_jwk("k1", &key.verifying_key())],
        });
        (verifier, enc)
    }

    fn event(ids: &[&str]) -> RevocationEvent {
        RevocationEvent {
            sequence: 1,
            token_ids: ids.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn refuses_everything_until_the_feed_is_heard_and_after_it_goes_stale() {
        let (verifier, enc) = remote(Duration::from_millis(100));
        let token = sign(&enc, "k1", &claims(now()));
        assert_eq!(verifier.verify(&token).await, Err(TokenError::RevocationsUnavailable));
        verifier.apply(event(&[]));
        assert!(verifier.verify(&token).await.is_ok());
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(!verifier.revocations_fresh());
        assert_eq!(verifier.verify(&token).await, Err(TokenError::RevocationsUnavailable));
        verifier.apply(event(&[]));
        assert!(verifier.verify(&token).await.is_ok());
    }

    #[tokio::test]
    async fn token_ends_at_revocation_or_expiry() {
        let (verifier, _) = remote(Duration::from_secs(60));
        let verifier = Arc::new(verifier);
        verifier.apply(event(&[]));
        let ends = tokio::spawn(verifier.clone().token_ends(claims(now())));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!ends.is_finished(), "a good token's call goes on");
        verifier.apply(RevocationEvent {
            sequence: 2,
            ..event(&["j1"])
        });
        let reason = tokio::time::timeout(Duration::from_secs(1), ends)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(reason, TokenError::Revoked);

        let expired = Claims {
            jti: "j2".into(),
            exp: now() - 1,
            ..claims(now())
        };
        assert_eq!(verifier.clone().token_ends(expired).await, TokenError::Expired);
    }

    #[tokio::test]
    async fn revoked_ids_are_kept_through_the_leeway() {
        let (verifier, _) = remote(Duration::from_secs(60));
        let within = proto::wkt::Timestamp {
            seconds: now() - LEEWAY_SECS as i64 + 2,
            nanos: 0,
        };
        verifier.apply(RevocationEvent {
            expires_at: Some(within),
            ..event(&["late"])
        });
        verifier.apply(RevocationEvent {
            sequence: 2,
            ..event(&[])
        });
        assert!(verifier.revocations.read().unwrap().ids.contains_key("late"));
    }

    #[tokio::test]
    async fn refuses_revoked_ids_and_forgets_them_after_expiry() {
        let (verifier, enc) = remote(Duration::from_secs(60));
        let token = sign(&enc, "k1", &claims(now()));
        verifier.apply(event(&["other"]));
        assert!(verifier.verify(&token).await.is_ok());
        verifier.apply(RevocationEvent {
            sequence: 2,
            ..event(&["j1"])
        });
        assert_eq!(verifier.verify(&token).await, Err(TokenError::Revoked));
        // An entry whose token has expired is dropped at the next event.
        let expired = proto::wkt::Timestamp {
            seconds: now() - 10,
            nanos: 0,
        };
        verifier.apply(RevocationEvent {
            sequence: 3,
            expires_at: Some(expired),
            ..event(&["old"])
        });
        verifier.apply(RevocationEvent {
            sequence: 4,
            ..event(&[])
        });
        let set = verifier.revocations.read().unwrap();
        assert!(!set.ids.contains_key("old"));
        assert!(set.ids.contains_key("j1"));
        assert_eq!(set.sequence, 4);
    }

    #[tokio::test]
    async fn a_revocation_seen_here_is_refused_before_the_feed_has_it() {
        let (verifier, enc) = remote(Duration::from_secs(60));
        let token = sign(&enc, "k1", &claims(now()));
        verifier.apply(event(&[]));
        assert!(verifier.verify(&token).await.is_ok());
        verifier.revoked_here(&["j1".to_owned()]);
        assert_eq!(verifier.verify(&token).await, Err(TokenError::Revoked));
        // The feed's event later gives it its real expiry.
        verifier.apply(RevocationEvent {
            sequence: 2,
            ..event(&["j1"])
        });
        assert_eq!(verifier.verify(&token).await, Err(TokenError::Revoked));
    }
}

//! fastDeploy's WebSocket, `/deployments/ws/{client_id}` (contract 5), without its
//! faults (contract 8, items 37–43):
//!
//! - the client authenticates by sending `{"access_token": "<user token>"}` and always
//!   gets an `authentication` answer, `success` or `failure` (a token of another type
//!   or of an unknown user is a `failure`, never a dropped connection);
//! - only authenticated sockets get `service`, `deployment` and `step` frames, each
//!   only what its token may read; nothing a client sends is broadcast;
//! - a failed re-authentication ends the earlier authentication, so a socket is never
//!   left authenticated on a token its client has replaced; a successful one with a
//!   fresh token extends the session;
//! - a `warning` frame comes a minute before the token expires (at once when less is
//!   left), then at expiry `"Your session has expired."` and a close with code 1000;
//!   the timers belong to the socket, so they end with it and are reset on re-auth;
//! - a revoked token's socket is closed (1008) as soon as the gateway learns of it;
//! - a frame that is not JSON closes that socket only (1007); every socket has its own
//!   task and its own place in the feed, so a dead or slow socket affects no other;
//! - the `success` answer is sent once the live feed is open (or after 3 s if a backend
//!   is down), so no event after it is missed.

mod hub;
mod services_feed;

use std::{sync::Arc, time::Duration};

use axum::{
    extract::{
        Path, State, WebSocketUpgrade,
        ws::{CloseFrame, Message, WebSocket, close_code, rejection::WebSocketUpgradeRejection},
    },
    http::StatusCode,
    response::{IntoResponse, Response},
};
use common::{
    scope,
    token::{Claims, TokenError},
};
use proto::auth::v1::WhoAmIRequest;
use serde_json::{Value, json};
use tokio::{
    sync::broadcast::{self, error::RecvError},
    time::Instant,
};

use hub::Frame;
pub use hub::Hub;

use super::auth::with_token;
use crate::{
    error::ApiError,
    routes::{Credential, routes_at},
    server::AppState,
};

/// The socket's route (its entry in `routes::ROUTES`).
pub const PATH: &str = "/deployments/ws/{client_id}";

/// Largest frame a client may send (an auth message is far smaller).
const MAX_CLIENT_FRAME: usize = 64 * 1024;
/// How long an authentication answer waits for the live feed to be open.
const FEED_WAIT: Duration = Duration::from_secs(3);
/// How long before expiry the `warning` frame comes.
const WARN_BEFORE: Duration = Duration::from_secs(60);
/// A socket that cannot take a frame for this long is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Pings find sockets whose peer vanished without closing.
const PING_EVERY: Duration = Duration::from_secs(30);
/// How often an authenticated socket's token is checked against revocations when no
/// frame is flowing (every frame is checked too).
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The handshake: a plain HTTP request is 404 (as in fastDeploy), a `client_id` that is
/// not a UUID is refused with 403.
pub async fn upgrade(
    State(state): State<AppState>,
    Path(client_id): Path<String>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let Ok(upgrade) = upgrade else {
        return ApiError::not_found().into_response();
    };
    let Ok(client_id) = uuid::Uuid::parse_str(&client_id) else {
        return StatusCode::FORBIDDEN.into_response();
    };
    upgrade
        .max_message_size(MAX_CLIENT_FRAME)
        .max_frame_size(MAX_CLIENT_FRAME)
        .on_upgrade(move |socket| async move {
            tracing::debug!(%client_id, "websocket connected");
            Session {
                state,
                socket,
                auth: None,
            }
            .run()
            .await;
            tracing::debug!(%client_id, "websocket gone");
        })
}

/// An authenticated socket's token, its place in the feed and its timers.
struct Authenticated {
    token: String,
    claims: Claims,
    frames: broadcast::Receiver<Arc<Frame>>,
    warn_at: Option<Instant>,
    expires_at: Instant,
}

struct Session {
    state: AppState,
    socket: WebSocket,
    auth: Option<Authenticated>,
}

/// What woke the session up.
enum Wake {
    Client(Option<Result<Message, axum::Error>>),
    Frame(Result<Arc<Frame>, RecvError>),
    Warn,
    Expire,
    Check,
    Ping,
    Shutdown,
}

/// Whether the session goes on after handling a wake-up.
type Continue = Option<()>;

async fn at(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

async fn next_frame(auth: Option<&mut Authenticated>) -> Result<Arc<Frame>, RecvError> {
    match auth {
        Some(auth) => auth.frames.recv().await,
        None => std::future::pending().await,
    }
}

impl Session {
    async fn run(mut self) {
        let mut ping = tokio::time::interval_at(Instant::now() + PING_EVERY, PING_EVERY);
        let mut check = tokio::time::interval(CHECK_EVERY);
        let shutdown = self.state.hub.shutdown().clone();
        loop {
            let warn_at = self.auth.as_ref().and_then(|a| a.warn_at);
            let expires_at = self.auth.as_ref().map(|a| a.expires_at);
            let authenticated = self.auth.is_some();
            let wake = tokio::select! {
                () = shutdown.cancelled() => Wake::Shutdown,
                message = self.socket.recv() => Wake::Client(message),
                frame = next_frame(self.auth.as_mut()) => Wake::Frame(frame),
                () = at(warn_at) => Wake::Warn,
                () = at(expires_at) => Wake::Expire,
                _ = check.tick(), if authenticated => Wake::Check,
                _ = ping.tick() => Wake::Ping,
            };
            if self.handle(wake).await.is_none() {
                return;
            }
        }
    }

    async fn handle(&mut self, wake: Wake) -> Continue {
        match wake {
            Wake::Client(Some(Ok(Message::Text(text)))) => self.on_text(&text).await,
            Wake::Client(Some(Ok(Message::Binary(_)))) => {
                self.close(close_code::UNSUPPORTED, "binary frames are not supported")
                    .await
            }
            Wake::Client(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => Some(()),
            // Closed by the client (the close handshake is answered for us), or dead.
            Wake::Client(Some(Ok(Message::Close(_))) | Some(Err(_)) | None) => None,
            Wake::Frame(Ok(frame)) => self.deliver(&frame).await,
            Wake::Frame(Err(RecvError::Lagged(missed))) => {
                tracing::warn!(missed, "websocket fell behind the live feed; frames lost");
                Some(())
            }
            Wake::Frame(Err(RecvError::Closed)) | Wake::Shutdown => {
                self.close(close_code::AWAY, "server shutting down").await
            }
            Wake::Warn => {
                let left = self
                    .auth
                    .as_mut()
                    .map(|a| {
                        a.warn_at = None;
                        a.expires_at.saturating_duration_since(Instant::now())
                    })
                    .unwrap_or_default();
                let detail = format!(
                    "Your session expires in {} seconds; send a fresh access token to stay connected.",
                    left.as_secs()
                );
                self.send_json(&json!({ "type": "warning", "detail": detail })).await
            }
            Wake::Expire => {
                self.send_json(&json!({ "type": "warning", "detail": "Your session has expired." }))
                    .await?;
                self.close(close_code::NORMAL, "session expired").await
            }
            Wake::Check => self.check_token().await,
            Wake::Ping => self.send(Message::Ping(Default::default())).await,
        }
    }

    async fn on_text(&mut self, text: &str) -> Continue {
        match client_frame(text) {
            ClientFrame::NotJson => self.close(close_code::INVALID, "frames must be JSON").await,
            ClientFrame::Token(token) => self.authenticate(&token).await,
            ClientFrame::BadToken => {
                self.auth = None;
                self.answer(false, "access token verification failed").await
            }
            ClientFrame::Other => Some(()),
        }
    }

    async fn authenticate(&mut self, token: &str) -> Continue {
        match verify_user(&self.state, token).await {
            Some((claims, name)) => {
                // To the millisecond: whole seconds made a session outlive its token by
                // up to a second.
                let left_ms = claims
                    .exp
                    .saturating_mul(1000)
                    .saturating_sub(chrono::Utc::now().timestamp_millis());
                let left = Duration::from_millis(u64::try_from(left_ms).unwrap_or(0));
                let expires_at = Instant::now() + left;
                let warn_at = Some(expires_at.checked_sub(WARN_BEFORE).unwrap_or_else(Instant::now));
                let hub = &self.state.hub;
                // A re-authenticated socket keeps its place in the feed.
                let frames = match self.auth.take() {
                    Some(previous) => previous.frames,
                    None => hub.subscribe(),
                };
                self.auth = Some(Authenticated {
                    token: token.to_owned(),
                    claims,
                    frames,
                    warn_at,
                    expires_at,
                });
                tracing::info!(user = %name, "websocket authenticated");
                // Answer once the feed is flowing, so that nothing the client does after
                // the answer (starting a deployment, say) can happen unseen.
                if let Some(auth) = &self.auth {
                    self.state.hub.ready_for(&auth.claims, FEED_WAIT).await;
                }
                self.answer(true, &format!("access token verification successful for user {name}"))
                    .await
            }
            None => {
                self.auth = None;
                self.answer(false, "access token verification failed").await
            }
        }
    }

    async fn answer(&mut self, success: bool, detail: &str) -> Continue {
        let status = if success { "success" } else { "failure" };
        self.send_json(&json!({ "type": "authentication", "status": status, "detail": detail }))
            .await
    }

    /// Sends a feed frame if this socket's token may read it and is still good.
    async fn deliver(&mut self, frame: &Frame) -> Continue {
        let allowed = self
            .auth
            .as_ref()
            .is_some_and(|a| scope::allows(&a.claims, frame.permission));
        if !allowed {
            return Some(());
        }
        self.check_token().await?;
        self.send(Message::Text(frame.text.clone())).await
    }

    /// Closes the socket when its token has been revoked (or can no longer be checked).
    async fn check_token(&mut self) -> Continue {
        let Some(auth) = &self.auth else { return Some(()) };
        match self.state.verifier.verify(&auth.token).await {
            // Expiry has its own timer; the verifier's leeway must not cut it short.
            Ok(_) | Err(TokenError::Expired) => Some(()),
            Err(TokenError::RevocationsUnavailable) => {
                self.close(close_code::AGAIN, "token revocation list unavailable").await
            }
            Err(reason) => {
                tracing::info!(%reason, "websocket closed: token no longer valid");
                self.close(close_code::POLICY, "token revoked").await
            }
        }
    }

    async fn send_json(&mut self, value: &Value) -> Continue {
        self.send(Message::Text(value.to_string().into())).await
    }

    /// Sends one message; a socket that fails or stalls is given up.
    async fn send(&mut self, message: Message) -> Continue {
        match tokio::time::timeout(SEND_TIMEOUT, self.socket.send(message)).await {
            Ok(Ok(())) => Some(()),
            _ => None,
        }
    }

    /// Sends a close frame; the session ends either way.
    async fn close(&mut self, code: u16, reason: &'static str) -> Continue {
        self.auth = None;
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = tokio::time::timeout(SEND_TIMEOUT, self.socket.send(Message::Close(Some(frame)))).await;
        None
    }
}

/// What a client's text frame is.
#[derive(Debug, PartialEq)]
pub(crate) enum ClientFrame {
    /// `{"access_token": "<token>"}`: authenticate with it.
    Token(String),
    /// An `access_token` that is not a string: a failed authentication.
    BadToken,
    /// Any other JSON: means nothing here and is never broadcast (contract 8, 39).
    Other,
    /// Not JSON: the socket is closed (1007).
    NotJson,
}

/// Parses a client's text frame.
pub(crate) fn client_frame(text: &str) -> ClientFrame {
    let Ok(value) = serde_json::from_str::<Value>(text) else {
        return ClientFrame::NotJson;
    };
    match value.get("access_token") {
        Some(Value::String(token)) => ClientFrame::Token(token.clone()),
        Some(_) => ClientFrame::BadToken,
        None => ClientFrame::Other,
    }
}

/// The claims and name of a valid, unexpired user token whose user exists.
async fn verify_user(state: &AppState, token: &str) -> Option<(Claims, String)> {
    let claims = match state.verifier.verify(token).await {
        Ok(claims) => claims,
        Err(reason) => {
            tracing::info!(%reason, "websocket token refused");
            return None;
        }
    };
    // The socket's entry in the route table (a user token); frames are filtered by
    // their own permission as they are delivered.
    let entry = routes_at(PATH).find(|r| r.credential == Credential::FirstMessage)?;
    if let Err(refusal) = entry.access.check(&claims) {
        tracing::info!(%refusal, "websocket token refused: scope");
        return None;
    }
    if claims.exp <= chrono::Utc::now().timestamp() {
        return None;
    }
    let request = with_token(WhoAmIRequest {}, token).ok()?;
    match state.backends.auth().who_am_i(request).await {
        Ok(me) => Some((claims, me.into_inner().name)),
        Err(status) => {
            tracing::info!(code = ?status.code(), "websocket token refused by the auth service");
            None
        }
    }
}

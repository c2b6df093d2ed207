//! Fixture of the WebSocket tests: connect, send, read frames with a deadline,
//! authenticate.

use std::time::Duration;

use crate::Stack;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async,
    tungstenite::{Message, protocol::frame::coding::CloseCode},
};

pub type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// What a socket did next.
#[derive(Debug, PartialEq)]
pub enum Next {
    Frame(Value),
    Closed(Option<CloseCode>),
    Silent,
}

pub async fn connect(stack: &Stack) -> Socket {
    let url = format!("ws://{}/deployments/ws/{}", stack.gateway, uuid::Uuid::new_v4());
    connect_async(url).await.unwrap().0
}

pub async fn send(socket: &mut Socket, value: Value) {
    socket.send(Message::text(value.to_string())).await.unwrap();
}

/// The next JSON frame or close within `wait` (pings are skipped).
pub async fn next(socket: &mut Socket, wait: Duration) -> Next {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Err(_) => return Next::Silent,
            Ok(None) | Ok(Some(Err(_))) => return Next::Closed(None),
            Ok(Some(Ok(Message::Text(text)))) => return Next::Frame(serde_json::from_str(&text).unwrap()),
            Ok(Some(Ok(Message::Close(frame)))) => return Next::Closed(frame.map(|f| f.code)),
            Ok(Some(Ok(_))) => {}
        }
    }
}

pub async fn frame(socket: &mut Socket) -> Value {
    match next(socket, Duration::from_secs(10)).await {
        Next::Frame(value) => value,
        other => panic!("expected a frame, got {other:?}"),
    }
}

pub fn success(user: &str) -> Value {
    json!({"type": "authentication", "status": "success",
           "detail": format!("access token verification successful for user {user}")})
}

pub fn failure() -> Value {
    json!({"type": "authentication", "status": "failure", "detail": "access token verification failed"})
}

pub async fn authenticated(stack: &Stack, token: &str) -> Socket {
    let mut socket = connect(stack).await;
    send(&mut socket, json!({"access_token": token})).await;
    assert_eq!(frame(&mut socket).await, success("admin"));
    socket
}

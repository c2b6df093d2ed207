//! The watchers of the fault tests: gRPC `WatchEvents` and `/v1/deployments/watch`
//! (NDJSON) through the gateway, each resuming after the last sequence it saw
//! whenever its stream ends, and fastDeploy's WebSocket (no resume: a new socket
//! after the gateway restarts). At the end each is compared with the stored events.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures::{SinkExt, StreamExt};
use proto::deploy::v1::{self as pb, WatchEventsRequest, deploy_service_client::DeployServiceClient, event::Payload};
use serde_json::{Map, Value, json};
use tokio::{sync::watch, task::JoinHandle};
use tokio_tungstenite::tungstenite::Message;

use crate::grpc::bearer;

/// Pause before reconnecting a watcher.
const RETRY: Duration = Duration::from_millis(100);
/// A watcher whose target is set stops once it has seen it, or this long after.
const CATCH_UP: Duration = Duration::from_secs(30);
/// Quiet time after which the stored events (and the WebSocket) are taken as complete.
const IDLE: Duration = Duration::from_millis(1500);

/// What a watcher saw: resumable streams their events by sequence; the WebSocket its
/// frames per socket.
pub enum Watched {
    Sequenced(&'static str, Vec<(i64, Value)>),
    Frames(Vec<Vec<Value>>),
}

pub struct Watchers {
    target: watch::Sender<Option<i64>>,
    connected: Vec<Arc<AtomicBool>>,
    tasks: Vec<JoinHandle<Watched>>,
}

impl Watchers {
    /// Opens the three watchers with the admin's token, from the first stored event.
    pub fn start(gateway: SocketAddr, token: &str) -> Watchers {
        let (target, _) = watch::channel(None);
        let mut watchers = Watchers {
            target,
            connected: Vec::new(),
            tasks: Vec::new(),
        };
        for kind in 0..3 {
            let connected = Arc::new(AtomicBool::new(false));
            let (token, target, flag) = (token.to_owned(), watchers.target.subscribe(), connected.clone());
            watchers.tasks.push(tokio::spawn(async move {
                match kind {
                    0 => Watched::Sequenced("grpc", grpc(gateway, &token, target, &flag).await),
                    1 => Watched::Sequenced("ndjson", ndjson(gateway, &token, target, &flag).await),
                    _ => Watched::Frames(websocket(gateway, &token, target, &flag).await),
                }
            }));
            watchers.connected.push(connected);
        }
        watchers
    }

    /// A flag per watcher, to probe them from elsewhere.
    pub fn flags(&self) -> Vec<Arc<AtomicBool>> {
        self.connected.clone()
    }

    /// Lets each watcher run until it has seen `last`, then returns what they saw.
    pub async fn finish(self, last: i64) -> Vec<Watched> {
        self.target.send_replace(Some(last));
        let mut seen = Vec::new();
        for task in self.tasks {
            seen.push(task.await.expect("a watcher panicked"));
        }
        seen
    }
}

/// Whether a watcher that has seen up to `last` may stop.
fn done(target: &watch::Receiver<Option<i64>>, last: i64, since: &mut Option<tokio::time::Instant>) -> bool {
    let Some(wanted) = *target.borrow() else { return false };
    let since = *since.get_or_insert_with(tokio::time::Instant::now);
    last >= wanted || since.elapsed() > CATCH_UP
}

async fn grpc(
    gateway: SocketAddr,
    token: &str,
    target: watch::Receiver<Option<i64>>,
    connected: &AtomicBool,
) -> Vec<(i64, Value)> {
    let (mut seen, mut last, mut since) = (Vec::new(), -1, None);
    while !done(&target, last, &mut since) {
        connected.store(false, Ordering::SeqCst);
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{gateway}"))
            .expect("url")
            .connect_timeout(Duration::from_secs(1));
        let stream = match endpoint.connect().await {
            Ok(channel) => {
                let request = WatchEventsRequest {
                    after_sequence: last,
                    ..Default::default()
                };
                DeployServiceClient::new(channel)
                    .watch_events(bearer(request, token))
                    .await
            }
            Err(error) => Err(tonic::Status::unavailable(error.to_string())),
        };
        if let Ok(stream) = stream {
            let mut stream = stream.into_inner();
            connected.store(true, Ordering::SeqCst);
            loop {
                tokio::select! {
                    message = stream.message() => match message {
                        Ok(Some(event)) => {
                            last = event.sequence;
                            seen.push((event.sequence, event_json(&event)));
                        }
                        Ok(None) | Err(_) => break,
                    },
                    () = tokio::time::sleep(RETRY) => if done(&target, last, &mut since) { return seen },
                }
            }
        }
        tokio::time::sleep(RETRY).await;
    }
    seen
}

async fn ndjson(
    gateway: SocketAddr,
    token: &str,
    target: watch::Receiver<Option<i64>>,
    connected: &AtomicBool,
) -> Vec<(i64, Value)> {
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(1))
        .pool_max_idle_per_host(0)
        .build()
        .expect("http client");
    let (mut seen, mut last, mut since) = (Vec::new(), -1, None);
    while !done(&target, last, &mut since) {
        connected.store(false, Ordering::SeqCst);
        let url = format!("http://{gateway}/v1/deployments/watch?after_sequence={last}");
        let response = http.get(url).bearer_auth(token).send().await;
        if let Ok(mut response) = response.and_then(|r| r.error_for_status()) {
            connected.store(true, Ordering::SeqCst);
            let mut buffer = Vec::new();
            'stream: loop {
                tokio::select! {
                    chunk = response.chunk() => match chunk {
                        Ok(Some(chunk)) => buffer.extend_from_slice(&chunk),
                        Ok(None) | Err(_) => break,
                    },
                    () = tokio::time::sleep(RETRY) => if done(&target, last, &mut since) { return seen },
                }
                while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buffer.drain(..=end).collect();
                    let line: Value = serde_json::from_slice(&line).expect("an NDJSON line");
                    if line.get("error").is_some() {
                        break 'stream;
                    }
                    let sequence = line["sequence"]
                        .as_str()
                        .and_then(|s| s.parse().ok())
                        .expect("a sequence");
                    last = sequence;
                    seen.push((sequence, line));
                }
            }
        }
        tokio::time::sleep(RETRY).await;
    }
    seen
}

async fn websocket(
    gateway: SocketAddr,
    token: &str,
    target: watch::Receiver<Option<i64>>,
    connected: &AtomicBool,
) -> Vec<Vec<Value>> {
    let mut segments = Vec::new();
    loop {
        connected.store(false, Ordering::SeqCst);
        if target.borrow().is_some() && !segments.is_empty() {
            return segments;
        }
        let url = format!("ws://{gateway}/deployments/ws/{}", uuid::Uuid::new_v4());
        let Ok(Ok((mut socket, _))) =
            tokio::time::timeout(Duration::from_secs(2), tokio_tungstenite::connect_async(url)).await
        else {
            tokio::time::sleep(RETRY).await;
            continue;
        };
        if socket
            .send(Message::text(json!({"access_token": token}).to_string()))
            .await
            .is_err()
        {
            continue;
        }
        let mut frames = Vec::new();
        let mut authenticated = false;
        loop {
            let wait = match (target.borrow().is_some(), authenticated) {
                (true, true) => IDLE,
                (_, false) => Duration::from_secs(10),
                (false, true) => Duration::from_secs(3600),
            };
            match tokio::time::timeout(wait, socket.next()).await {
                Err(_) if !authenticated => break,
                Err(_) => {
                    segments.push(frames);
                    return segments;
                }
                Ok(Some(Ok(Message::Text(text)))) => {
                    let frame: Value = serde_json::from_str(&text).expect("a JSON frame");
                    match frame["type"].as_str() {
                        Some("authentication") if frame["status"] == "success" => {
                            authenticated = true;
                            connected.store(true, Ordering::SeqCst);
                        }
                        // A gateway that has just started may not verify tokens yet.
                        Some("authentication") => break,
                        Some("deployment" | "step") => frames.push(frame),
                        _ => {}
                    }
                }
                Ok(Some(Ok(_))) => {}
                Ok(None | Some(Err(_))) => break,
            }
        }
        if authenticated {
            segments.push(frames);
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Every stored event, read from the first through the gateway until the stream has
/// been quiet for a moment.
pub async fn stored_events(gateway: SocketAddr, token: &str) -> Vec<pb::Event> {
    let channel = crate::grpc::channel(gateway).await;
    let request = WatchEventsRequest {
        after_sequence: -1,
        ..Default::default()
    };
    let mut stream = DeployServiceClient::new(channel)
        .watch_events(bearer(request, token))
        .await
        .expect("watching the stored events")
        .into_inner();
    let mut events = Vec::new();
    while let Ok(message) = tokio::time::timeout(IDLE, stream.message()).await {
        match message.expect("the stored events") {
            Some(event) => events.push(event),
            None => break,
        }
    }
    events
}

/// An event as comparable JSON.
fn event_json(event: &pb::Event) -> Value {
    let payload = match &event.payload {
        Some(Payload::Deployment(d)) => json!({"deployment": d.id, "status": d.status}),
        Some(Payload::Step(s)) => json!({"step": s.id, "state": s.state, "message": s.message}),
        None => Value::Null,
    };
    json!({"sequence": event.sequence, "deleted": event.deleted, "payload": payload})
}

/// The WebSocket frame of an event, as the gateway's hub makes it (none for a
/// deleted deployment).
fn frame_of(event: &pb::Event) -> Option<Value> {
    use gateway::fastdeploy::objects;
    let frame: Map<String, Value> = match event.payload.as_ref()? {
        Payload::Deployment(_) if event.deleted => return None,
        Payload::Deployment(d) => {
            let mut frame = objects::deployment(d);
            frame.insert("type".into(), "deployment".into());
            frame
        }
        Payload::Step(s) => {
            let mut frame = objects::step(s);
            frame.insert("type".into(), "step".into());
            frame.insert("deleted".into(), event.deleted.into());
            frame
        }
    };
    Some(Value::Object(frame))
}

/// What is wrong with what the watchers saw, compared with the stored events; the
/// WebSocket may have as many sockets as the gateway had lives.
pub fn compare(seen: &[Watched], stored: &[pb::Event], gateway_lives: usize) -> Vec<String> {
    let mut problems = Vec::new();
    let wanted: Vec<i64> = stored.iter().map(|e| e.sequence).collect();
    let grpc_stored: Vec<(i64, Value)> = stored.iter().map(|e| (e.sequence, event_json(e))).collect();
    for watched in seen {
        match watched {
            Watched::Sequenced(name, events) => {
                let got: Vec<i64> = events.iter().map(|(s, _)| *s).collect();
                if got != wanted {
                    let missing = wanted.iter().filter(|s| !got.contains(s)).count();
                    let doubled = got.len() - got.iter().collect::<std::collections::BTreeSet<_>>().len();
                    problems.push(format!(
                        "{name} watcher: {} events, {} stored; {missing} missed, {doubled} doubled",
                        got.len(),
                        wanted.len()
                    ));
                } else if *name == "grpc" && *events != grpc_stored {
                    problems.push("grpc watcher: events differ from the stored ones".into());
                }
            }
            Watched::Frames(segments) => {
                let frames: Vec<Value> = stored.iter().filter_map(frame_of).collect();
                problems.extend(compare_frames(segments, &frames, gateway_lives));
            }
        }
    }
    problems
}

/// Each socket's frames must be a run of the stored frames without a gap or a double,
/// and the last socket's must reach the last stored one.
fn compare_frames(segments: &[Vec<Value>], frames: &[Value], gateway_lives: usize) -> Vec<String> {
    let mut problems = Vec::new();
    if segments.len() > gateway_lives {
        problems.push(format!(
            "websocket: {} sockets for {gateway_lives} gateway lives (a socket was dropped)",
            segments.len()
        ));
    }
    for (i, segment) in segments.iter().enumerate().filter(|(_, s)| !s.is_empty()) {
        let last = i + 1 == segments.len();
        let fits = (0..frames.len()).any(|start| {
            frames.get(start..start + segment.len()) == Some(segment.as_slice())
                && (!last || start + segment.len() == frames.len())
        });
        if !fits {
            problems.push(format!(
                "websocket socket {i}: its {} frames are not a run of the {} stored ones{}",
                segment.len(),
                frames.len(),
                if last { " ending with the last" } else { "" }
            ));
        }
    }
    if segments.last().is_none_or(Vec::is_empty) && !frames.is_empty() {
        problems.push("websocket: the last socket saw nothing".into());
    }
    problems
}

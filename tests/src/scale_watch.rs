//! Watchers of the scale-out run: one deployment-event stream per gateway (native gRPC
//! `WatchEvents` through the gateway), resumed after the last sequence seen whenever
//! the stream ends (a replica behind it died), recording every event with the time it
//! arrived; and a replay of the stored events to compare them with.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use proto::deploy::v1::{self as dep, deploy_service_client::DeployServiceClient, event::Payload};
use tokio_util::sync::CancellationToken;

use crate::grpc::bearer;

/// One event as a watcher saw it: its sequence, what it says, when it arrived.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Seen {
    pub sequence: i64,
    /// `deployment <id> <status>` or `step <id> of <deployment> <state>`.
    pub what: String,
    /// The deployment it is about.
    pub deployment: i64,
}

/// What one watcher recorded.
#[derive(Debug, Default)]
pub struct Watched {
    pub events: Vec<(Seen, Instant)>,
    /// How often its stream ended or failed and was opened again.
    pub reconnects: usize,
}

/// A watcher following one gateway until stopped.
pub struct Watcher {
    pub gateway: SocketAddr,
    pub watched: Arc<Mutex<Watched>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Watcher {
    /// Starts following every event (from the first stored one) through `gateway`.
    pub fn start(gateway: SocketAddr, token: String) -> Watcher {
        let watched = Arc::new(Mutex::new(Watched::default()));
        let stop = CancellationToken::new();
        let task = tokio::spawn(follow(gateway, token, watched.clone(), stop.clone()));
        Watcher {
            gateway,
            watched,
            stop,
            task,
        }
    }

    /// The last sequence seen (0: none yet).
    pub fn last(&self) -> i64 {
        let watched = self.watched.lock().expect("watcher lock");
        watched.events.last().map_or(0, |(s, _)| s.sequence)
    }

    /// Stops following; returns what it saw.
    pub async fn stop(self) -> Watched {
        self.stop.cancel();
        let _ = self.task.await;
        std::mem::take(&mut *self.watched.lock().expect("watcher lock"))
    }
}

async fn follow(gateway: SocketAddr, token: String, watched: Arc<Mutex<Watched>>, stop: CancellationToken) {
    let Ok(endpoint) = tonic::transport::Endpoint::from_shared(format!("http://{gateway}")) else {
        return;
    };
    let mut client = DeployServiceClient::new(endpoint.connect_lazy());
    loop {
        let last = watched
            .lock()
            .expect("watcher lock")
            .events
            .last()
            .map(|(s, _)| s.sequence);
        // From the first stored event, then after the last one seen.
        let after_sequence = last.unwrap_or(-1);
        let request = bearer(
            dep::WatchEventsRequest {
                after_sequence,
                ..Default::default()
            },
            &token,
        );
        let opened = tokio::select! {
            () = stop.cancelled() => return,
            opened = client.watch_events(request) => opened,
        };
        if let Ok(stream) = opened {
            let mut stream = stream.into_inner();
            loop {
                let message = tokio::select! {
                    () = stop.cancelled() => return,
                    message = stream.message() => message,
                };
                let Ok(Some(event)) = message else { break };
                let seen = describe(&event);
                watched
                    .lock()
                    .expect("watcher lock")
                    .events
                    .push((seen, Instant::now()));
            }
        }
        watched.lock().expect("watcher lock").reconnects += 1;
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

/// What an event says, to compare watchers with the replay.
pub fn describe(event: &dep::Event) -> Seen {
    let (what, deployment) = match &event.payload {
        Some(Payload::Deployment(d)) => (format!("deployment {} {}", d.id, d.status), d.id),
        Some(Payload::Step(s)) => (
            format!("step {} of {} {}", s.id, s.deployment_id, s.state),
            s.deployment_id,
        ),
        None => ("nothing".to_owned(), 0),
    };
    let what = if event.deleted { format!("{what} deleted") } else { what };
    Seen {
        sequence: event.sequence,
        what,
        deployment,
    }
}

/// Every stored event through `gateway`, from the first, read until the stream has
/// been quiet for `quiet` (it then only waits for live ones).
pub async fn replay(gateway: SocketAddr, token: &str, quiet: Duration) -> Vec<Seen> {
    let channel = crate::grpc::channel(gateway).await;
    let request = bearer(
        dep::WatchEventsRequest {
            after_sequence: -1,
            ..Default::default()
        },
        token,
    );
    let mut stream = DeployServiceClient::new(channel)
        .watch_events(request)
        .await
        .expect("replaying the stored events")
        .into_inner();
    let mut events = Vec::new();
    while let Ok(message) = tokio::time::timeout(quiet, stream.message()).await {
        match message.expect("the replay stream reads") {
            Some(event) => events.push(describe(&event)),
            None => break,
        }
    }
    events
}

//! Slow and dead clients against the real gateway: a slowloris client, connections that
//! send nothing or stop after part of the HTTP/2 preface, keep-alive connections left
//! idle, 2,000 idle connections at once, and a WebSocket, an NDJSON and a grpc-web
//! watcher that stop reading while thousands of large events are produced. Each is
//! dropped after the gateway's bound (`--header-read-timeout-ms`,
//! `--stalled-write-timeout-ms`, here 2 s and 3 s), other clients keep being answered
//! and see every event, and the gateway's memory stays bounded. Connections and their
//! timeouts are not storage: SQLite only.
//!
//! Prints the figures (`slow clients: …`).

use std::{net::SocketAddr, time::Duration};

use futures::{SinkExt, StreamExt};
use serde_json::json;
use tests::{
    Backend, Process, Stack,
    raw_http::memory_kib,
    slow_client::*,
    support::{self, write_service},
    wait_until,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::Instant,
};
use tokio_tungstenite::tungstenite::Message;

const HEADER_READ: Duration = Duration::from_millis(2000);
const STALLED_WRITE: Duration = Duration::from_millis(3000);
/// Step reports of about 4 KB each: several times what the socket buffers between a
/// watcher and the gateway hold.
const REPORTS: usize = 1500;
/// Far above either bound, so that only a connection that is never dropped fails.
const DROPPED_WITHIN: Duration = Duration::from_secs(30);
const IDLE_CONNECTIONS: usize = 2000;

async fn stack() -> Stack {
    Stack::builder(Backend::Sqlite)
        .services(|root| write_service(root, "loud", loud_config(), &loud_script(REPORTS)))
        .env(
            Process::Gateway,
            "SLIPWAY_HEADER_READ_TIMEOUT_MS",
            HEADER_READ.as_millis().to_string(),
        )
        .env(
            Process::Gateway,
            "SLIPWAY_STALLED_WRITE_TIMEOUT_MS",
            STALLED_WRITE.as_millis().to_string(),
        )
        .start()
        .await
}

/// A well-behaved client: logs in and reads, `rounds` times; every answer must be 200.
/// Returns the slowest round.
async fn polite_rounds(stack: &Stack, rounds: usize) -> Duration {
    let mut slowest = Duration::ZERO;
    for _ in 0..rounds {
        let started = Instant::now();
        let token = stack.admin_token().await;
        let (status, body) = support::get(stack, "/v1/services", &token).await;
        assert_eq!(status, 200, "{body}");
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    slowest
}

/// How long until the gateway closes `stream` (which sends `trickle` a byte at a time,
/// one every 250 ms, if given); panics past [`DROPPED_WITHIN`].
async fn time_to_drop(mut stream: TcpStream, trickle: &'static [u8]) -> Duration {
    let started = Instant::now();
    let (mut reader, mut writer) = stream.split();
    let writing = async {
        for byte in trickle {
            if writer.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        std::future::pending::<()>().await
    };
    let mut buffer = [0u8; 1024];
    let reading = async {
        loop {
            match reader.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(DROPPED_WITHIN, async {
        tokio::select! {
            () = writing => {}
            () = reading => {}
        }
    })
    .await
    .expect("the gateway never closed the connection");
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread")]
async fn slowloris_silent_and_idle_connections_are_dropped() {
    let stack = stack().await;
    let gateway = stack.gateway;
    let connect = || async move { TcpStream::connect(gateway).await.unwrap() };
    // A request line and headers a byte every 250 ms, never finished.
    const SLOW: &[u8] =
        b"GET /healthz HTTP/1.1\r\nHost: slow\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let slowloris = tokio::spawn(time_to_drop(connect().await, SLOW));
    let silent = tokio::spawn(time_to_drop(connect().await, b""));
    let preface = tokio::spawn(time_to_drop(connect().await, b"PRI * HTTP/2.0\r\n"));
    // One answered request, then nothing on the kept-alive connection.
    let mut kept = connect().await;
    let (status, _) = request_head(&mut kept, b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(status, 200);
    let keep_alive = tokio::spawn(time_to_drop(kept, b""));
    let slowest = polite_rounds(&stack, 30).await;
    let times = [
        slowloris.await.unwrap(),
        silent.await.unwrap(),
        preface.await.unwrap(),
        keep_alive.await.unwrap(),
    ];
    println!(
        "slow clients: dropped after (slowloris, silent, half an HTTP/2 preface, idle keep-alive) {times:?}; \
         slowest polite login+read meanwhile {slowest:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_thousand_idle_connections_leave_others_served_and_are_closed() {
    let limit = raise_open_files(IDLE_CONNECTIONS as u64 + 1024);
    assert!(
        limit > IDLE_CONNECTIONS as u64 + 100,
        "RLIMIT_NOFILE's hard limit is {limit}: too low for {IDLE_CONNECTIONS} connections"
    );
    let mut stack = stack().await;
    let pid = stack.proc("gateway").child.id();
    let (rss_before, _) = memory_kib(pid);
    let fds_before = open_fds(pid);
    let mut idle = Vec::with_capacity(IDLE_CONNECTIONS);
    let opening = Instant::now();
    for _ in 0..IDLE_CONNECTIONS {
        idle.push(TcpStream::connect(stack.gateway).await.unwrap());
    }
    let opened_in = opening.elapsed();
    let slowest = polite_rounds(&stack, 5).await;
    let (rss_with, peak) = memory_kib(pid);
    let fds_with = open_fds(pid);
    // Each idle connection costs the gateway a socket and a small task, no buffers.
    assert!(
        peak.saturating_sub(rss_before) < 64 * 1024,
        "the gateway grew from {rss_before} KiB to a peak of {peak} KiB with {IDLE_CONNECTIONS} idle connections"
    );
    let closing = Instant::now();
    wait_until(DROPPED_WITHIN, async || {
        let fds = open_fds(pid);
        if fds <= fds_before + 8 {
            Ok(())
        } else {
            Err(format!("the gateway still has {fds} fds open (before: {fds_before})"))
        }
    })
    .await;
    let closed_in = closing.elapsed();
    for stream in &mut idle {
        assert!(
            closed_by_server(stream, Duration::from_secs(5)).await,
            "an idle connection was not closed"
        );
    }
    let (rss_after, _) = memory_kib(pid);
    println!(
        "slow clients: {IDLE_CONNECTIONS} idle connections opened in {opened_in:?}; gateway fds {fds_before} -> \
         {fds_with}, RSS {rss_before} -> {rss_with} KiB (peak {peak}, after closing {rss_after}); all closed \
         {closed_in:?} after the last polite round; slowest polite login+read meanwhile {slowest:?}"
    );
}

/// A WebSocket, authenticated with `token`, whose client then stops reading.
async fn stalled_websocket(gateway: SocketAddr, token: &str) -> (SocketAddr, impl Send) {
    let stream = connect_small(gateway).await;
    let local = stream.local_addr().unwrap();
    let url = format!("ws://{gateway}/deployments/ws/{}", uuid::Uuid::new_v4());
    let (mut socket, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    socket
        .send(Message::text(json!({"access_token": token}).to_string()))
        .await
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), socket.next()).await;
    assert!(
        matches!(&answer, Ok(Some(Ok(Message::Text(t)))) if t.contains("success")),
        "{answer:?}"
    );
    (local, socket)
}

/// A watcher over raw HTTP/1.1 whose client reads the answer's head and stops.
async fn stalled_http(gateway: SocketAddr, request: Vec<u8>) -> TcpStream {
    let mut stream = connect_small(gateway).await;
    let (status, head) = request_head(&mut stream, &request).await;
    assert_eq!(status, 200, "{head}");
    stream
}

#[tokio::test(flavor = "multi_thread")]
async fn watchers_that_stop_reading_are_dropped_and_others_see_everything() {
    let mut stack = stack().await;
    let pid = stack.proc("gateway").child.id();
    let admin = stack.admin_token().await;
    let loud = support::service_token(&stack, &admin, "loud").await;
    let gateway = stack.gateway;
    let ndjson = format!("GET /v1/deployments/watch HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {admin}\r\n\r\n");
    let mut grpc_web = format!(
        "POST /slipway.deploy.v1.DeployService/WatchEvents HTTP/1.1\r\nHost: a\r\n\
         Content-Type: application/grpc-web+proto\r\nX-Grpc-Web: 1\r\nAuthorization: Bearer {admin}\r\n\
         Content-Length: 5\r\n\r\n"
    )
    .into_bytes();
    grpc_web.extend_from_slice(&[0, 0, 0, 0, 0]);
    let mut slow_ndjson = stalled_http(gateway, ndjson.into_bytes()).await;
    let mut slow_grpc_web = stalled_http(gateway, grpc_web).await;
    let (ws_local, slow_ws) = stalled_websocket(gateway, &admin).await;
    // A watcher that reads everything, counting the reports it sees.
    let mut healthy = stack
        .http
        .get(stack.url("/v1/deployments/watch"))
        .bearer_auth(&admin)
        .timeout(Duration::from_secs(600))
        .send()
        .await
        .unwrap();
    assert_eq!(healthy.status(), 200);
    let (rss_before, _) = memory_kib(pid);
    let producing = Instant::now();
    support::start(&stack, &loud, None).await;
    let reading = async {
        let (mut seen, mut buffer) = (std::collections::BTreeSet::new(), Vec::new());
        while let Some(chunk) = healthy.chunk().await.unwrap() {
            buffer.extend_from_slice(&chunk);
            while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                let event: serde_json::Value = serde_json::from_slice(&line).unwrap();
                let message = event["step"]["message"].as_str().unwrap_or_default();
                if message == "done" {
                    return seen;
                }
                if let Some((i, _)) = message.split_once(' ') {
                    assert!(seen.insert(i.parse::<usize>().unwrap()), "report {i} seen twice");
                }
            }
        }
        panic!("the healthy watcher's stream ended")
    };
    let (seen, slowest) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(300), reading),
        polite_rounds(&stack, 20)
    );
    let seen = seen.expect("the healthy watcher saw the deployment end within 300 s");
    let produced_in = producing.elapsed();
    assert_eq!(seen.len(), REPORTS, "the healthy watcher missed reports");
    let waiting = Instant::now();
    wait_until(DROPPED_WITHIN, async || {
        let held: Vec<&str> = [
            ("NDJSON", held_open(gateway, &slow_ndjson)),
            ("grpc-web", held_open(gateway, &slow_grpc_web)),
            (
                "WebSocket",
                server_side_state(gateway, ws_local).as_deref() == Some("01"),
            ),
        ]
        .into_iter()
        .filter_map(|(name, held)| held.then_some(name))
        .collect();
        if held.is_empty() {
            Ok(())
        } else {
            Err(format!("the gateway still holds the stalled {held:?} watchers"))
        }
    })
    .await;
    let dropped_after = waiting.elapsed();
    let (rss_after, peak) = memory_kib(pid);
    assert!(
        peak.saturating_sub(rss_before) < 128 * 1024,
        "the gateway grew from {rss_before} KiB to a peak of {peak} KiB"
    );
    drop(slow_ws);
    for (name, stream) in [("NDJSON", &mut slow_ndjson), ("grpc-web", &mut slow_grpc_web)] {
        assert!(
            closed_by_server(stream, Duration::from_secs(30)).await,
            "the stalled {name} watcher still streams"
        );
    }
    println!(
        "slow clients: {REPORTS} reports of ~4 KB produced and watched in {produced_in:?}; stalled WebSocket, \
         NDJSON and grpc-web watchers all dropped {dropped_after:?} after the healthy watcher finished; gateway \
         RSS {rss_before} -> {rss_after} KiB (peak {peak}); slowest polite login+read meanwhile {slowest:?}"
    );
}

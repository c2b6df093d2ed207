//! The gateway's connections: accepting them, and dropping the ones that hold resources
//! without making progress.
//!
//! `axum::serve` sets no timer on hyper, so none of hyper's timeouts applied: a client
//! sending its headers a byte at a time (slowloris), or connecting and sending nothing,
//! held its connection forever. Here:
//!
//! - a connection must send its first request's opening bytes (or the HTTP/2 preface)
//!   within `--header-read-timeout-ms`, and HTTP/1 request headers must be complete
//!   within the same time after hyper starts reading them (hyper's
//!   `header_read_timeout`, which also closes a keep-alive connection idle that long
//!   between requests);
//! - a connection whose writes make no progress for `--stalled-write-timeout-ms` (a
//!   WebSocket, NDJSON or grpc-web watcher that stopped reading) is closed, and the
//!   upstream stream it held is dropped with it;
//! - an HTTP/2 connection is pinged every 30 s and closed when the answer takes over
//!   20 s (a client that vanished without closing);
//! - on shutdown, accepting stops and every connection is asked to finish gracefully.

use std::{
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use axum::{Router, extract::ConnectInfo};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    time::{Instant, Sleep},
};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// The client-side limits of a connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// For the opening bytes of a connection and for HTTP/1 request headers.
    pub header_read: Duration,
    /// For a write that makes no progress.
    pub stalled_write: Duration,
}

/// How often an HTTP/2 connection is pinged, and how long the answer may take before
/// the connection is closed.
const H2_PING_EVERY: Duration = Duration::from_secs(30);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// What starts an HTTP/2 connection (RFC 9113, 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serves `app` on `listener` until `shutdown` is cancelled, then waits for the open
/// connections to finish (the caller bounds that wait).
pub async fn serve(listener: TcpListener, app: Router, limits: Limits, shutdown: CancellationToken) {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read);
    // HTTP/2 over WebSocket (RFC 8441), as axum::serve enables it; pings find HTTP/2
    // clients that vanished without closing (HTTP/1 ones meet the timeouts above).
    builder
        .http2()
        .timer(TokioTimer::new())
        .enable_connect_protocol()
        .keep_alive_interval(H2_PING_EVERY)
        .keep_alive_timeout(H2_PING_TIMEOUT);
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, mostly: the connections already open go
                    // on; accepting resumes in a moment.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = app
            .clone()
            .map_request(move |mut request: http::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request.map(axum::body::Body::new)
            });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let opened = tokio::select! {
                () = shutdown.cancelled() => return,
                opened = tokio::time::timeout(limits.header_read, opening_bytes(&stream)) => opened,
            };
            if !matches!(opened, Ok(Ok(true))) {
                tracing::debug!(%peer, "connection closed: nothing sent in time");
                return;
            }
            let io = TokioIo::new(Stalls::new(stream, limits.stalled_write));
            let connection = builder.serve_connection_with_upgrades(io, TowerToHyperService::new(service));
            if let Err(error) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(%peer, error = %error, "connection ended");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Waits until the client has sent enough to tell HTTP/1 from HTTP/2: false when it
/// closed first.
async fn opening_bytes(stream: &TcpStream) -> io::Result<bool> {
    let mut buffer = [0u8; H2_PREFACE.len()];
    loop {
        let read = stream.peek(&mut buffer).await?;
        if read == 0 {
            return Ok(false);
        }
        if read == buffer.len() || buffer[..read] != H2_PREFACE[..read] {
            return Ok(true);
        }
        // Part of the preface: peeking again answers at once, so wait a little.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A stream whose writes fail with `TimedOut` once they have made no progress for
/// `limit` (the peer stopped reading and every buffer on the way is full).
struct Stalls<S> {
    inner: S,
    limit: Duration,
    /// Armed by a write that could not proceed; cleared by one that did.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> Stalls<S> {
    fn new(inner: S, limit: Duration) -> Self {
        Stalls {
            inner,
            limit,
            stalled: None,
        }
    }

    fn check<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let limit = self.limit;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(Instant::now() + limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client has not read for too long",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Stalls<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Stalls<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.check(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.check(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.check(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.check(cx, poll)
    }
}

//! HTTP/1.1 spoken by hand over TCP, for what a polite client cannot send: bodies of
//! hundreds of megabytes generated as they are sent (never held in memory), odd
//! methods and paths, broken framing. The client stops sending as soon as the answer's
//! head has arrived, as a client should once it has been refused.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// A body to stream: `prefix`, then `fill` bytes up to `total` bytes in all, sent in
/// 64 KiB pieces (with chunked transfer coding when `chunked`).
#[derive(Debug, Clone, Copy)]
pub struct Upload<'a> {
    pub prefix: &'a [u8],
    pub fill: u8,
    pub total: u64,
    pub chunked: bool,
}

impl Upload<'_> {
    pub const NONE: Upload<'static> = Upload {
        prefix: b"",
        fill: 0,
        total: 0,
        chunked: false,
    };
}

/// The answer's status, head (status line and headers) and body (by its
/// `Content-Length`; not chunked ones), and how many body bytes the client had handed
/// to the socket when it stopped.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub head: String,
    pub body: String,
    pub sent: u64,
}

impl Answer {
    /// A header's value, by lower-case name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

const PIECE: usize = 64 * 1024;
/// The most of an answer read (head and body).
const MAX_ANSWER: usize = 256 * 1024;

/// Sends `head` (request line and header lines, each ending in `\r\n`; the blank line
/// is added) and streams `upload`, until the answer has arrived or `timeout` passes.
pub async fn request(addr: SocketAddr, head: &str, upload: Upload<'_>, timeout: Duration) -> std::io::Result<Answer> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut reader, mut writer) = stream.into_split();
    let sent = Arc::new(AtomicU64::new(0));
    let mut first = head.as_bytes().to_vec();
    first.extend_from_slice(b"\r\n");
    let prefix = upload.prefix.to_vec();
    let writing = tokio::spawn({
        let sent = sent.clone();
        async move {
            writer.write_all(&first).await?;
            let filler = vec![upload.fill; PIECE];
            let mut done = 0u64;
            let mut prefix = Some(prefix).filter(|p| !p.is_empty());
            while done < upload.total {
                let piece: &[u8] = match prefix.as_deref() {
                    Some(p) => p,
                    None => &filler[..PIECE.min(usize::try_from(upload.total - done).unwrap_or(PIECE))],
                };
                if upload.chunked {
                    writer.write_all(format!("{:x}\r\n", piece.len()).as_bytes()).await?;
                    writer.write_all(piece).await?;
                    writer.write_all(b"\r\n").await?;
                } else {
                    writer.write_all(piece).await?;
                }
                done += piece.len() as u64;
                sent.store(done, Ordering::Relaxed);
                prefix = None;
            }
            if upload.chunked {
                writer.write_all(b"0\r\n\r\n").await?;
            }
            // Keep the write half open: closing it could end the exchange early.
            std::future::pending::<()>().await;
            Ok::<(), std::io::Error>(())
        }
    });
    // An answer to HEAD announces a length but has no body.
    let bodiless = head.starts_with("HEAD ");
    let reading = async {
        let mut buf = Vec::new();
        let mut piece = [0u8; 4096];
        let mut wanted = None;
        loop {
            if wanted.is_none()
                && let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n")
            {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .filter(|_| !bodiless)
                    .unwrap_or(0);
                wanted = Some(end + 4 + length.min(MAX_ANSWER));
            }
            if wanted.is_some_and(|w| buf.len() >= w) || buf.len() > MAX_ANSWER {
                break;
            }
            let n = reader.read(&mut piece).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&piece[..n]);
        }
        Ok::<Vec<u8>, std::io::Error>(buf)
    };
    let result = tokio::time::timeout(timeout, reading).await;
    writing.abort();
    let buf = result.map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in time"))??;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("no status line: {head:?}")))?;
    Ok(Answer {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
        sent: sent.load(Ordering::Relaxed),
    })
}

/// A field of `/proc/<pid>/status` given in KiB (`VmRSS:`, `VmHWM:`), in bytes.
fn status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix(field))?;
    let kib: u64 = line.split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024)
}

/// The resident set size of a process, in bytes (`VmRSS` in `/proc/<pid>/status`).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    status_bytes(pid, "VmRSS:")
}

/// A process's resident memory now and its peak so far (`VmRSS`, `VmHWM`), in KiB.
pub fn memory_kib(pid: u32) -> (u64, u64) {
    let kib = |field| status_bytes(pid, field).expect("the process's /proc status") / 1024;
    (kib("VmRSS:"), kib("VmHWM:"))
}

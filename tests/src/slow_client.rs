//! Clients that misbehave slowly, for the slow-client and soak tests: connections with
//! a tiny receive buffer that stop reading, what the kernel says of the gateway's end
//! of a connection, a process's open file descriptors, and a loud deploy script.

use std::{net::SocketAddr, time::Duration};

use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};

/// A connection whose receive buffer is as small as the kernel allows, so that a
/// client that stops reading stalls the server's writes soon.
pub async fn connect_small(addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("a socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket.connect(addr).await.expect("connecting to the gateway")
}

/// Sends a raw HTTP/1.1 request and reads up to the end of the answer's head (and
/// no further): the status and the head.
pub async fn request_head(stream: &mut TcpStream, request: &[u8]) -> (u16, String) {
    stream.write_all(request).await.expect("sending the request");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let read = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut byte))
            .await
            .expect("the answer's head within 30 s")
            .expect("reading the answer's head");
        assert!(read == 1, "the connection closed before the head ended: {head:?}");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head)
}

/// The state of the server's end of the connection `server` ↔ `client`, from
/// `/proc/net/tcp` (`"01"` is ESTABLISHED); `None` once the kernel has forgotten it.
pub fn server_side_state(server: SocketAddr, client: SocketAddr) -> Option<String> {
    let hex = |a: SocketAddr| match a {
        SocketAddr::V4(v4) => format!("{:08X}:{:04X}", u32::from_le_bytes(v4.ip().octets()), v4.port()),
        SocketAddr::V6(_) => String::new(),
    };
    let (local, remote) = (hex(server), hex(client));
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&local.as_str()) && fields.get(2) == Some(&remote.as_str()))
            .then(|| fields.get(3).map(|s| (*s).to_owned()))
            .flatten()
    })
}

/// Whether the gateway still holds its end of a connection open (ESTABLISHED).
pub fn held_open(server: SocketAddr, client: &TcpStream) -> bool {
    let client = client.local_addr().expect("the client's address");
    server_side_state(server, client).as_deref() == Some("01")
}

/// Reads what is left and tells whether the server closed the connection (EOF or a
/// reset) within `within`.
pub async fn closed_by_server(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buffer = vec![0u8; 64 * 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// How many file descriptors a process has open.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Raises this process's soft limit on open files to at least `wanted` (up to the
/// hard limit); the processes it starts inherit it. Returns the limit now.
pub fn raise_open_files(wanted: u64) -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("RLIMIT_NOFILE");
    if soft >= wanted {
        return soft;
    }
    let raised = wanted.min(hard);
    setrlimit(Resource::RLIMIT_NOFILE, raised, hard).expect("raising RLIMIT_NOFILE");
    raised
}

/// The one step of [`loud_script`].
pub fn loud_config() -> Value {
    json!({"description": "reports many large steps", "steps": [{"name": "build"}]})
}

/// A script reporting its `build` step `reports` times as `running`, each with a
/// message of about 4,000 characters starting `"<i> "`, then `success`.
pub fn loud_script(reports: usize) -> String {
    format!(
        r#"#!/bin/sh
pad=$(head -c 4000 /dev/zero | tr '\0' 'x')
i=0
while [ $i -lt {reports} ]; do
  echo "{{\"name\": \"build\", \"state\": \"running\", \"message\": \"$i $pad\"}}"
  i=$((i+1))
done
echo '{{"name": "build", "state": "success", "message": "done"}}'
"#
    )
}

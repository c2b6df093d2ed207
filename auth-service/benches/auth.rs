//! `cargo bench -p auth-service --bench auth`: the auth service's authenticated read
//! (`WhoAmI`, behind `GET /users/me`) at 32 concurrent callers, alone and beside a
//! login storm (8 callers logging in without pause). Runs the real auth service
//! in-process on loopback (SQLite) and prints requests/s, p50 and p99 per phase, and
//! the logins answered and refused. Prints figures; asserts no timing.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use clap::Parser;
use proto::auth::v1::{LoginRequest, WhoAmIRequest, auth_service_client::AuthServiceClient};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

const READERS: usize = 32;
const LOGINS: usize = 8;
const PHASE: Duration = Duration::from_secs(5);
const ADMIN_PASSWORD: &str = "bench admin password";

fn main() -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().to_string_lossy().into_owned();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let kek = dir.path().join("auth-kek");
    auth_service::kek::Kek::create_if_missing(&kek)?;
    let kek = kek.to_string_lossy().into_owned();
    let config = auth_service::Config::try_parse_from([
        "auth-service",
        "--data-dir",
        &data,
        "--key-encryption-key-file",
        &kek,
        "--admin-user",
        "admin",
        "--admin-password",
        ADMIN_PASSWORD,
    ])?;
    let shutdown = CancellationToken::new();
    tokio::spawn(auth_service::run(config, listener, shutdown.clone()));
    let mut channels = Vec::new();
    for _ in 0..4 {
        channels.push(connect(&url).await?);
    }
    let token = AuthServiceClient::new(channels[0].clone())
        .login(login_request())
        .await?
        .into_inner()
        .access_token;

    println!(
        "auth service, {READERS} WhoAmI callers, {} s per phase\n",
        PHASE.as_secs()
    );
    let alone = reads(&channels, &token, None).await;
    print("WhoAmI alone", &alone);
    let storm = Storm::default();
    let during = reads(&channels, &token, Some(&storm)).await;
    print(&format!("WhoAmI beside {LOGINS} login callers"), &during);
    println!(
        "logins: {} answered ({:.0}/s), {} refused busy, {} other errors",
        storm.ok.load(Ordering::Relaxed),
        storm.ok.load(Ordering::Relaxed) as f64 / PHASE.as_secs_f64(),
        storm.busy.load(Ordering::Relaxed),
        storm.failed.load(Ordering::Relaxed),
    );
    shutdown.cancel();
    Ok(())
}

async fn connect(url: &str) -> anyhow::Result<Channel> {
    for _ in 0..500 {
        if let Ok(channel) = tonic::transport::Endpoint::from_shared(url.to_owned())?
            .tcp_nodelay(true)
            .connect()
            .await
        {
            return Ok(channel);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("{url} did not start")
}

fn login_request() -> LoginRequest {
    LoginRequest {
        username: "admin".into(),
        password: ADMIN_PASSWORD.into(),
    }
}

#[derive(Default)]
struct Storm {
    ok: AtomicU64,
    busy: AtomicU64,
    failed: AtomicU64,
}

/// Latencies of every WhoAmI answered in one phase, and the errors.
struct Phase {
    latencies: Vec<Duration>,
    errors: u64,
}

async fn reads(channels: &[Channel], token: &str, storm: Option<&Storm>) -> Phase {
    let stop = Arc::new(AtomicBool::new(false));
    let storm_tasks: Vec<_> = match storm {
        None => Vec::new(),
        Some(_) => (0..LOGINS)
            .map(|i| {
                let mut client = AuthServiceClient::new(channels[i % channels.len()].clone());
                let stop = stop.clone();
                tokio::spawn(async move {
                    let (mut ok, mut busy, mut failed) = (0u64, 0u64, 0u64);
                    while !stop.load(Ordering::Relaxed) {
                        match client.login(login_request()).await {
                            Ok(_) => ok += 1,
                            Err(s) if matches!(s.code(), tonic::Code::Unavailable | tonic::Code::ResourceExhausted) => {
                                busy += 1;
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            Err(_) => failed += 1,
                        }
                    }
                    (ok, busy, failed)
                })
            })
            .collect(),
    };
    let readers: Vec<_> = (0..READERS)
        .map(|i| {
            let mut client = AuthServiceClient::new(channels[i % channels.len()].clone());
            let stop = stop.clone();
            let auth: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse().expect("header");
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0;
                while !stop.load(Ordering::Relaxed) {
                    let mut request = tonic::Request::new(WhoAmIRequest {});
                    request.metadata_mut().insert("authorization", auth.clone());
                    let started = Instant::now();
                    match client.who_am_i(request).await {
                        Ok(_) => latencies.push(started.elapsed()),
                        Err(_) => errors += 1,
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    tokio::time::sleep(PHASE).await;
    stop.store(true, Ordering::Relaxed);
    let mut phase = Phase {
        latencies: Vec::new(),
        errors: 0,
    };
    for reader in readers {
        if let Ok((latencies, errors)) = reader.await {
            phase.latencies.extend(latencies);
            phase.errors += errors;
        }
    }
    if let Some(storm) = storm {
        for task in storm_tasks {
            if let Ok((ok, busy, failed)) = task.await {
                storm.ok.fetch_add(ok, Ordering::Relaxed);
                storm.busy.fetch_add(busy, Ordering::Relaxed);
                storm.failed.fetch_add(failed, Ordering::Relaxed);
            }
        }
    }
    phase
}

fn print(what: &str, phase: &Phase) {
    let mut latencies = phase.latencies.clone();
    latencies.sort();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    println!(
        "{what}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {} errors",
        latencies.len() as f64 / PHASE.as_secs_f64(),
        at(0.5).as_secs_f64() * 1000.0,
        at(0.99).as_secs_f64() * 1000.0,
        phase.errors
    );
}

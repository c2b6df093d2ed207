//! `cargo bench -p tests --bench gateway`: authenticated `GET /services/` through the
//! real gateway (token verified, then the list from the gateway's services cache, kept
//! fresh by the registry's WatchServices) against a bare HTTP handler answering the
//! same body on the same machine, in the same run, driven by the same client at 32
//! connections. Prints requests/s, p50 and p99 of each and the ratio (target: the
//! gateway reaches 30% or more of the bare handler's rate). For comparison it also
//! drives `GET /v1/services`, which is not cached: token check, a gRPC call to the
//! registry (which verifies again and reads the database) and JSON out.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tests::{Backend, Stack};

const CONNECTIONS: usize = 32;
const WARMUP: Duration = Duration::from_secs(2);
const MEASURE: Duration = Duration::from_secs(10);

struct Figures {
    rate: f64,
    p50: Duration,
    p99: Duration,
    errors: usize,
}

/// Drives `url` from `CONNECTIONS` concurrent clients for `MEASURE` after a warm-up.
async fn load(url: String, token: Option<String>) -> Figures {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CONNECTIONS)
        .build()
        .unwrap();
    let run = |duration: Duration| {
        let (client, url, token) = (client.clone(), Arc::new(url.clone()), token.clone());
        async move {
            let deadline = Instant::now() + duration;
            let tasks: Vec<_> = (0..CONNECTIONS)
                .map(|_| {
                    let (client, url, token) = (client.clone(), url.clone(), token.clone());
                    tokio::spawn(async move {
                        let mut latencies = Vec::new();
                        let mut errors = 0;
                        while Instant::now() < deadline {
                            let started = Instant::now();
                            let mut request = client.get(url.as_str());
                            if let Some(token) = &token {
                                request = request.bearer_auth(token);
                            }
                            let ok = match request.send().await {
                                Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                                Err(_) => false,
                            };
                            if ok {
                                latencies.push(started.elapsed());
                            } else {
                                errors += 1;
                            }
                        }
                        (latencies, errors)
                    })
                })
                .collect();
            let mut all = Vec::new();
            let mut errors = 0;
            for task in tasks {
                let (latencies, e) = task.await.unwrap();
                all.extend(latencies);
                errors += e;
            }
            (all, errors)
        }
    };
    run(WARMUP).await;
    let (mut latencies, errors) = run(MEASURE).await;
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Figures {
        rate: latencies.len() as f64 / MEASURE.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
        errors,
    }
}

fn print(name: &str, f: &Figures) {
    println!(
        "{name:<34} {:>9.0} req/s   p50 {:>7.2} ms   p99 {:>7.2} ms   errors {}",
        f.rate,
        f.p50.as_secs_f64() * 1e3,
        f.p99.as_secs_f64() * 1e3,
        f.errors
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let stack = Stack::start_with(Backend::Sqlite, |dir| {
            for name in ["api", "web", "worker"] {
                let folder = dir.join(name);
                std::fs::create_dir_all(&folder).unwrap();
                std::fs::write(folder.join("config.json"), format!(r#"{{"description": "{name}"}}"#)).unwrap();
                let script = folder.join("deploy.sh");
                std::fs::write(&script, "#!/bin/sh\n").unwrap();
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
        })
        .await;
        let token = stack.admin_token().await;
        let body = stack
            .http
            .get(stack.url("/services/"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(body.contains("worker"), "services synced: {body}");

        // The bare handler: the same body from a plain axum route, nothing else.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let bare_addr = listener.local_addr().unwrap();
        let bare_body = body.clone();
        let app = axum::Router::new().route(
            "/services/",
            axum::routing::get(move || {
                let body = bare_body.clone();
                async move { ([("content-type", "application/json")], body) }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });

        println!(
            "GET /services/ ({} bytes), {CONNECTIONS} connections, {MEASURE:?} each",
            body.len()
        );
        let bare = load(format!("http://{bare_addr}/services/"), None).await;
        print("bare axum handler", &bare);
        let gateway = load(stack.url("/services/"), Some(token.clone())).await;
        print("gateway (token check + cache)", &gateway);
        let uncached = load(stack.url("/v1/services"), Some(token)).await;
        print("gateway /v1/services (uncached)", &uncached);
        println!(
            "gateway / bare = {:.1}% (target >= 30%); uncached / bare = {:.1}%",
            100.0 * gateway.rate / bare.rate,
            100.0 * uncached.rate / bare.rate
        );
    });
}

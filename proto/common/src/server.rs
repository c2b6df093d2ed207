//! Listener, health and reflection helpers every gRPC service uses.

use std::{io, net::SocketAddr, path::Path};

use tokio::net::TcpListener;
use tokio_stream::{StreamExt, wrappers::TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic_health::ServingStatus;
use tower_http::trace::TraceLayer;

/// Binds `addr` (port 0 picks a free port) and, when asked, writes the bound address to
/// `addr_file` so a launcher or a test harness can find it. The file is written to a
/// temporary name and renamed, so a reader never sees half an address.
pub async fn bind(addr: SocketAddr, addr_file: Option<&Path>) -> io::Result<TcpListener> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    if let Some(path) = addr_file {
        let tmp = path.with_extension("tmp");
        tokio::fs::write(&tmp, local.to_string()).await?;
        tokio::fs::rename(&tmp, path).await?;
    }
    Ok(listener)
}

/// The health service name that says only "the process answers" (always SERVING).
pub const LIVENESS: &str = "liveness";

/// How often a service's readiness is checked for its health status.
const READINESS_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// Serves one gRPC API (`routes`, reported healthy under `grpc_name`) together with the
/// health checking protocol and server reflection, until `shutdown` is cancelled; then
/// stops accepting and lets open calls finish (for at most `shutdown::DRAIN`).
///
/// Health (the server, `""`, and `grpc_name`) means "can serve": SERVING while
/// `ready()` holds (checked every 100 ms: a backend's revocation feed is fresh, say),
/// NOT_SERVING before, whenever it stops holding, and from the moment `shutdown` is
/// cancelled, so probes and balancing clients move away before the service stops.
pub async fn serve_grpc(
    service: &'static str,
    grpc_name: &str,
    routes: Routes,
    listener: TcpListener,
    shutdown: CancellationToken,
    ready: impl Fn() -> bool + Send + 'static,
) -> anyhow::Result<()> {
    let (health_reporter, health) = tonic_health::server::health_reporter();
    // Liveness (the process answers) apart from readiness: Kubernetes' liveness probe
    // asks for this name, so a pod that cannot serve for a while is not restarted.
    health_reporter
        .set_service_status(LIVENESS, ServingStatus::Serving)
        .await;
    tokio::spawn(report_readiness(
        health_reporter,
        grpc_name.to_owned(),
        ready,
        shutdown.clone(),
    ));
    let routes = routes.add_service(health).add_service(reflection()?);
    tracing::info!(service, addr = %listener.local_addr()?, "listening");
    let server = tonic::transport::Server::builder()
        // Every call has a request id (the one the gateway passed along, else a new
        // one), echoed in its response headers.
        .layer(crate::request_id::layers::<tonic::body::Body>())
        // Every line logged while serving a call carries its RPC and that id.
        .layer(
            TraceLayer::new_for_grpc()
                .make_span_with(|request: &http::Request<tonic::body::Body>| {
                    tracing::info_span!(
                        "rpc",
                        path = %request.uri().path(),
                        request_id = %crate::request_id::of(request)
                    )
                })
                .on_request(())
                .on_response(())
                .on_body_chunk(())
                .on_eos(())
                .on_failure(()),
        )
        .add_routes(routes)
        .serve_with_incoming_shutdown(no_delay(listener), shutdown.clone().cancelled_owned());
    crate::shutdown::drain_bounded(service, server, &shutdown).await?;
    tracing::info!(service, "stopped");
    Ok(())
}

/// Keeps the health status of the server and of `grpc_name` to `ready()` until
/// `shutdown`, then says NOT_SERVING.
async fn report_readiness(
    reporter: tonic_health::server::HealthReporter,
    grpc_name: String,
    ready: impl Fn() -> bool,
    shutdown: CancellationToken,
) {
    let mut last = None;
    loop {
        let status = match !shutdown.is_cancelled() && ready() {
            true => ServingStatus::Serving,
            false => ServingStatus::NotServing,
        };
        if last != Some(status) {
            if status == ServingStatus::NotServing && last.is_some() && !shutdown.is_cancelled() {
                tracing::warn!(service = %grpc_name, "not serving");
            }
            for name in ["", grpc_name.as_str()] {
                reporter.set_service_status(name, status).await;
            }
            last = Some(status);
        }
        if shutdown.is_cancelled() {
            return;
        }
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = tokio::time::sleep(READINESS_EVERY) => {}
        }
    }
}

/// The accepted connections, with Nagle's algorithm off: a gRPC answer written in
/// several small pieces otherwise waits for the peer's delayed ACK (about 40 ms).
fn no_delay(listener: TcpListener) -> impl tokio_stream::Stream<Item = io::Result<tokio::net::TcpStream>> {
    TcpListenerStream::new(listener).map(|stream| {
        let stream = stream?;
        stream.set_nodelay(true)?;
        Ok(stream)
    })
}

/// Server reflection (v1) over every Slipway package.
pub fn reflection() -> Result<
    tonic_reflection::pb::v1::server_reflection_server::ServerReflectionServer<
        impl tonic_reflection::pb::v1::server_reflection_server::ServerReflection,
    >,
    tonic_reflection::server::Error,
> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
}

/// The body of every service's `main`: bind (writing the address file if asked), run
/// the service until SIGTERM or Ctrl-C, and turn the outcome into an exit code.
pub async fn run_main<F, Fut>(
    service: &'static str,
    listen: SocketAddr,
    addr_file: Option<&Path>,
    run: F,
) -> std::process::ExitCode
where
    F: FnOnce(TcpListener, tokio_util::sync::CancellationToken) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let shutdown = crate::shutdown::on_signal();
    let listener = match bind(listen, addr_file).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(%error, %listen, "cannot bind");
            return std::process::ExitCode::FAILURE;
        }
    };
    match run(listener, shutdown).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(service, error = format!("{error:#}"), "service failed");
            std::process::ExitCode::FAILURE
        }
    }
}

/// A free loopback address for a process started next to bind, when the processes must
/// know each other's addresses before they start (`slipway up`, the test harness).
/// Ports come from below Linux's ephemeral range (32768-60999 by default): a port the
/// kernel hands out for an outgoing connection could be taken in the moment between
/// this check and the bind, and was, now and then. Within a process, ports are handed
/// out in turn from a random start, so concurrent callers never pick the same one;
/// each is checked free by binding it.
pub fn free_loopback_port() -> io::Result<SocketAddr> {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: std::sync::OnceLock<AtomicU32> = std::sync::OnceLock::new();
    let next = NEXT.get_or_init(|| {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        AtomicU32::new(seed.wrapping_add(std::process::id().wrapping_mul(7919)))
    });
    for _ in 0..SPAN {
        let port = LOW + next.fetch_add(1, Ordering::Relaxed) % SPAN;
        let Ok(port) = u16::try_from(port) else { continue };
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return listener.local_addr();
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrNotAvailable,
        format!("no free loopback port in {LOW}..{}", LOW + SPAN),
    ))
}

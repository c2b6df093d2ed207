//! `slipway up`: the whole system on one machine. The three services and the gateway
//! run as separate processes on loopback, each with its SQLite file in the data dir;
//! Ctrl-C or SIGTERM stops them all, gateway first.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use auth_service::{accounts::Accounts, passwords::Hasher, storage::Store};
use nix::{sys::signal::Signal, unistd::Pid};
use rand::{Rng, distributions::Alphanumeric};
use secrecy::SecretString;
use tokio::process::{Child, Command};

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Where each service keeps its SQLite file (and the auth service its keys).
    #[arg(long, default_value = "slipway-data")]
    data_dir: PathBuf,
    /// The services directory (a folder per service with a config.json).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/services"))]
    services_dir: PathBuf,
    /// Address of the HTTP gateway.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// The admin user to make sure of.
    #[arg(long, env = "SLIPWAY_ADMIN_USER", default_value = "admin")]
    admin_user: String,
    /// Password for the admin user if it has to be created (default: generated and printed once).
    #[arg(long, env = "SLIPWAY_ADMIN_PASSWORD", hide_env_values = true)]
    admin_password: Option<SecretString>,
}

/// Settings a service would otherwise pick up from the caller's environment; `up`
/// decides them itself.
const PRIVATE_ENV: &[&str] = &[
    "SLIPWAY_ADMIN_PASSWORD",
    "SLIPWAY_PASSWORD",
    "SLIPWAY_DATABASE_URL",
    "SLIPWAY_LISTEN",
    "SLIPWAY_ADDR_FILE",
    "SLIPWAY_DATA_DIR",
    "SLIPWAY_CREDENTIAL_FILE",
    "SLIPWAY_DEPLOY_CREDENTIAL_FILE",
    "SLIPWAY_AUTH_URL",
    "SLIPWAY_REGISTRY_URL",
    "SLIPWAY_DEPLOY_URL",
    "SLIPWAY_PUBLIC_URL",
];

struct Running {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
}

pub async fn up(args: UpArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir).with_context(|| format!("creating {}", args.data_dir.display()))?;
    let data_dir = args.data_dir.canonicalize()?;
    let run_dir = data_dir.join("run");
    std::fs::create_dir_all(&run_dir)?;
    let services_dir = args
        .services_dir
        .canonicalize()
        .with_context(|| format!("services dir {}", args.services_dir.display()))?;

    ensure_admin(&data_dir, &args.admin_user, args.admin_password).await?;

    let shutdown = common::shutdown::on_signal();
    let mut running: Vec<Running> = Vec::new();
    let started = start_all(&data_dir, &run_dir, &services_dir, args.http, &mut running).await;
    if let Err(error) = started {
        stop_all(&mut running).await;
        return Err(error);
    }

    println!("slipway is up");
    for r in &running {
        let scheme = if r.name == "gateway" { "http" } else { "grpc" };
        println!("  {:<10} {scheme}://{}", r.name, r.addr);
    }
    println!("  data dir   {}", data_dir.display());
    println!("  services   {}", services_dir.display());
    println!("press Ctrl-C to stop");

    let exited = tokio::select! {
        () = shutdown.cancelled() => None,
        name = first_exit(&mut running) => Some(name),
    };
    stop_all(&mut running).await;
    match exited {
        Some(name) => bail!("{name} exited unexpectedly; stopped the others"),
        None => {
            println!("slipway stopped");
            Ok(())
        }
    }
}

async fn ensure_admin(data_dir: &Path, name: &str, password: Option<SecretString>) -> anyhow::Result<()> {
    let store = Store::open(&common::db::sqlite_url(data_dir, "auth.db"))
        .await
        .context("opening the auth database")?;
    let accounts = Accounts::new(store, Hasher::new(1).await?);
    if accounts.find(name).await?.is_some() {
        println!("admin user {name:?} exists");
        return Ok(());
    }
    let generated = password.is_none();
    let password = password.unwrap_or_else(|| {
        let word: String = rand::thread_rng()
            .sample_iter(&Alphanumeric)
            .take(24)
            .map(char::from)
            .collect();
        SecretString::from(word)
    });
    accounts.ensure(name, &password).await?;
    if generated {
        use secrecy::ExposeSecret;
        // Shown this once, on the terminal of the person who started the system.
        println!(
            "created admin user {name:?} with password {} (shown once)",
            password.expose_secret()
        );
    } else {
        println!("created admin user {name:?} with the password from SLIPWAY_ADMIN_PASSWORD");
    }
    Ok(())
}

async fn start_all(
    data_dir: &Path,
    run_dir: &Path,
    services_dir: &Path,
    http: SocketAddr,
    running: &mut Vec<Running>,
) -> anyhow::Result<()> {
    let data = data_dir.to_string_lossy().into_owned();
    let services = services_dir.to_string_lossy().into_owned();
    // Each internal service's credential: the deploy service's is trusted by the auth
    // and registry services; the registry and the gateway present theirs to follow
    // the auth service's revocation feed.
    let [credential, registry_credential, gateway_credential] =
        ["deploy-service.key", "registry-service.key", "gateway.key"].map(|file| {
            let path = data_dir.join("credentials").join(file);
            common::identity::Credential::create_if_missing(&path).map(|()| path.to_string_lossy().into_owned())
        });
    let (credential, registry_credential, gateway_credential) =
        (credential?, registry_credential?, gateway_credential?);
    // The services name each other, so their addresses are chosen before any starts.
    let [auth, registry, deploy] = [free_port()?, free_port()?, free_port()?];
    let (auth_url, registry_url, deploy_url) = (
        format!("http://{auth}"),
        format!("http://{registry}"),
        format!("http://{deploy}"),
    );
    let public_url = format!("http://{http}");
    let (auth, registry, deploy, http) = (
        auth.to_string(),
        registry.to_string(),
        deploy.to_string(),
        http.to_string(),
    );
    let trust = ["--deploy-credential-file", credential.as_str()];
    let services_flag = ["--services-dir", services.as_str()];
    let plans: [(&'static str, Vec<&str>); 4] = [
        (
            "auth",
            [
                &["--listen", &auth, "--data-dir", &data, "--registry-url", &registry_url][..],
                &trust,
                &[
                    "--registry-credential-file",
                    &registry_credential,
                    "--gateway-credential-file",
                    &gateway_credential,
                ],
            ]
            .concat(),
        ),
        (
            "registry",
            [
                &["--listen", &registry, "--data-dir", &data, "--auth-url", &auth_url][..],
                &services_flag,
                &trust,
                &["--credential-file", &registry_credential],
            ]
            .concat(),
        ),
        (
            "deploy",
            [
                &["--listen", &deploy, "--data-dir", &data, "--auth-url", &auth_url][..],
                &services_flag,
                &[
                    "--registry-url",
                    &registry_url,
                    "--credential-file",
                    &credential,
                    "--public-url",
                    &public_url,
                ],
            ]
            .concat(),
        ),
        (
            "gateway",
            vec![
                "--listen",
                &http,
                "--auth-url",
                &auth_url,
                "--registry-url",
                &registry_url,
                "--deploy-url",
                &deploy_url,
                "--credential-file",
                &gateway_credential,
            ],
        ),
    ];
    for (name, args) in plans {
        running.push(spawn(name, name, &args, run_dir).await?);
    }
    Ok(())
}

/// A loopback address whose port was free a moment ago (and that no outgoing
/// connection can take before the service binds it).
fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(common::server::free_loopback_port()?)
}

/// Starts `slipway serve <sub>` and waits until it has written its address file.
async fn spawn(name: &'static str, sub: &str, args: &[&str], run_dir: &Path) -> anyhow::Result<Running> {
    let addr_file = run_dir.join(format!("{name}.addr"));
    let _ = std::fs::remove_file(&addr_file);
    let exe = std::env::current_exe().context("locating the slipway binary")?;
    let mut command = Command::new(exe);
    command
        .arg("serve")
        .arg(sub)
        .args(args)
        .arg("--addr-file")
        .arg(&addr_file)
        .stdin(Stdio::null());
    for var in PRIVATE_ENV {
        command.env_remove(var);
    }
    let mut child = command.spawn().with_context(|| format!("starting {name}"))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(addr) = std::fs::read_to_string(&addr_file)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            return Ok(Running { name, child, addr });
        }
        if let Some(status) = child.try_wait()? {
            bail!("{name} exited during start ({status})");
        }
        if Instant::now() > deadline {
            let _ = child.start_kill();
            bail!("{name} did not start within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn first_exit(running: &mut [Running]) -> &'static str {
    loop {
        for r in running.iter_mut() {
            if let Ok(Some(_)) = r.child.try_wait() {
                return r.name;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// SIGTERM in reverse start order (the gateway stops taking requests first), then
/// SIGKILL for anything still running after 10 s.
async fn stop_all(running: &mut Vec<Running>) {
    while let Some(mut r) = running.pop() {
        if let Some(pid) = r.child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        match tokio::time::timeout(Duration::from_secs(10), r.child.wait()).await {
            Ok(_) => tracing::info!(service = r.name, "stopped"),
            Err(_) => {
                tracing::warn!(service = r.name, "did not stop in 10 s; killing");
                let _ = r.child.kill().await;
            }
        }
    }
}

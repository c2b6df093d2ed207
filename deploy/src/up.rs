//! `slipway up`: the whole system on one machine. The three services and the gateway
//! run as separate processes on loopback, each with its SQLite file in the data dir
//! (or all on one PostgreSQL database with `--database-url`, and then `--replicas N`
//! of each, the callers balancing over a backend's replicas); Ctrl-C or SIGTERM stops
//! them all, gateways first.
//!
//! `up` supervises them: a service that exits unexpectedly is started again on the
//! same address after a short wait (doubling with each exit, see [`Restarts`]) while
//! the others keep serving; one that exits [`MAX_EXITS`] times within [`EXIT_WINDOW`]
//! stops `up` with the reason. Each service's pid is in `<data dir>/run/<name>.pid`.

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

mod restarts;
mod topology;
use restarts::{EXIT_WINDOW, MAX_EXITS, Restarts};
use topology::{Addresses, PARTS, Topology};

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Where each service keeps its SQLite file (and the auth service its keys).
    #[arg(long, env = "SLIPWAY_DATA_DIR", default_value = "slipway-data")]
    data_dir: PathBuf,
    /// The services directory (a folder per service with a config.json). Default:
    /// `./services` if it exists, else the example services shipped with slipway.
    #[arg(long, env = "SLIPWAY_SERVICES_DIR")]
    services_dir: Option<PathBuf>,
    /// fastDeploy's project root: base of `ansible_playbook` paths and deploy scripts'
    /// working directory (default: the services directory's parent).
    #[arg(long, env = "SLIPWAY_PROJECT_ROOT")]
    project_root: Option<PathBuf>,
    /// Address of the HTTP gateway.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// The admin user to make sure of.
    #[arg(long, env = "SLIPWAY_ADMIN_USER", default_value = "admin")]
    admin_user: String,
    /// Let deploy scripts reach the data dir (and use `sudo`): by default the deploy
    /// service keeps them out of it with Landlock where the kernel has it.
    #[arg(long)]
    no_landlock: bool,
    /// Password for the admin user if it has to be created (default: generated and printed once).
    #[arg(long, env = "SLIPWAY_ADMIN_PASSWORD", hide_env_values = true)]
    admin_password: Option<SecretString>,
    /// One database for every service (`postgres://…`; each service keeps its own
    /// tables). Default: a SQLite file per service in the data dir.
    #[arg(long, env = "SLIPWAY_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Replicas of each service (auth, registry, deploy, gateway); more than one needs
    /// `--database-url postgres://…`, which they share.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
    replicas: u16,
}

/// Settings a service would otherwise pick up from the caller's environment: the ones
/// `up` reads itself (it passes what the services need as flags) and the ones it
/// decides itself.
const PRIVATE_ENV: &[&str] = &[
    "SLIPWAY_ADMIN_USER",
    "SLIPWAY_ADMIN_PASSWORD",
    "SLIPWAY_SERVICES_DIR",
    "SLIPWAY_PROJECT_ROOT",
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
    "SLIPWAY_LANDLOCK",
];

struct Running {
    /// `auth`, …; `auth-1`, `auth-2`, … with several replicas.
    name: String,
    /// The part it runs (`slipway serve <part>`).
    part: &'static str,
    /// The arguments it was started with (`--listen` as given).
    args: Vec<String>,
    /// Settings passed in its environment (kept out of `ps`: the database URL).
    env: Vec<(&'static str, String)>,
    child: Child,
    addr: SocketAddr,
    restarts: Restarts,
}

pub async fn up(args: UpArgs) -> anyhow::Result<()> {
    let topology = Topology::of(args.replicas, args.database_url.as_deref())?;
    common::db::private_dir(&args.data_dir).with_context(|| format!("creating {}", args.data_dir.display()))?;
    let data_dir = args.data_dir.canonicalize()?;
    let run_dir = data_dir.join("run");
    common::db::private_dir(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    let (services_dir, services_origin) = services_dir(args.services_dir)?;
    let project_root = match &args.project_root {
        Some(root) => root
            .canonicalize()
            .with_context(|| format!("project root {}", root.display()))?,
        None => services_dir
            .parent()
            .map_or_else(|| services_dir.clone(), Path::to_path_buf),
    };

    let auth_database = topology.auth_database(&data_dir);
    ensure_admin(&auth_database, &args.admin_user, args.admin_password).await?;

    let shutdown = common::shutdown::on_signal();
    let mut running: Vec<Running> = Vec::new();
    let dirs = Dirs {
        data: &data_dir,
        run: &run_dir,
        services: &services_dir,
        project_root: &project_root,
    };
    let started = start_all(&dirs, &topology, args.http, !args.no_landlock, &mut running).await;
    if let Err(error) = started {
        stop_all(&mut running).await;
        return Err(error);
    }

    println!("slipway is up");
    for r in &running {
        let scheme = if r.part == "gateway" { "http" } else { "grpc" };
        println!("  {:<10} {scheme}://{}", r.name, r.addr);
    }
    if let Some(gateway) = running.iter().find(|r| r.part == "gateway") {
        println!("  console    http://{}/ui/", gateway.addr);
    }
    println!("  data dir   {}", data_dir.display());
    println!("  database   {}", topology.describe());
    println!("  services   {} ({services_origin})", services_dir.display());
    println!("  project    {}", project_root.display());
    // The services read these from the environment `up` passes on.
    let setting = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
    println!(
        "  retention  deployments {} days (0: for ever), at least the newest {} per service and \
         each service's last success; token records {} days after expiry",
        setting("SLIPWAY_RETENTION_DAYS", "90"),
        setting("SLIPWAY_RETENTION_KEEP_PER_SERVICE", "50"),
        setting("SLIPWAY_TOKEN_RETENTION_DAYS", "30"),
    );
    println!(
        "  output     each run keeps its last {} lines, at most {} bytes",
        setting("SLIPWAY_LOG_MAX_LINES", "10000"),
        setting("SLIPWAY_LOG_MAX_BYTES", "4194304"),
    );
    println!(
        "this is a single-user development setup: every service and every deploy script runs \
         as you; scripts are kept out of the data dir only where the kernel has Landlock{}. \
         See deploy/systemd or deploy/kubernetes to run Slipway for real",
        if args.no_landlock { " (off: --no-landlock)" } else { "" }
    );
    if !args.no_landlock && data_dir.starts_with(&project_root) {
        println!(
            "note: the data dir is inside the project root, so deploy scripts cannot list or \
             create files directly in the directories that contain it, {} among them (Landlock \
             grants nothing on them); give --data-dir outside it, or --no-landlock",
            project_root.display()
        );
    }
    println!("press Ctrl-C to stop");

    let gave_up = tokio::select! {
        () = shutdown.cancelled() => None,
        reason = supervise(&mut running, &run_dir) => Some(reason),
    };
    stop_all(&mut running).await;
    match gave_up {
        Some(reason) => Err(reason),
        None => {
            println!("slipway stopped");
            Ok(())
        }
    }
}

/// Restarts every service that exits, until one exits too often: returns why `up`
/// should stop. Never returns otherwise.
async fn supervise(running: &mut [Running], run_dir: &Path) -> anyhow::Error {
    loop {
        for r in running.iter_mut() {
            let Ok(Some(status)) = r.child.try_wait() else {
                continue;
            };
            let Some(delay) = r.restarts.exited(Instant::now()) else {
                return anyhow::anyhow!(
                    "{} exited {MAX_EXITS} times within {} s (last: {status}); stopped the others",
                    r.name,
                    EXIT_WINDOW.as_secs()
                );
            };
            println!(
                "{} exited unexpectedly ({status}); restarting it in {} ms",
                r.name,
                delay.as_millis()
            );
            tokio::time::sleep(delay).await;
            // Back on the address it had, so the others find it where they look.
            let args = listen_on(&r.args, r.addr);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            match spawn(&r.name, r.part, &args, &r.env, run_dir).await {
                Ok(restarted) => {
                    r.child = restarted.child;
                    println!("{} restarted on {}", r.name, r.addr);
                }
                // Its old child stays exited: the next round counts another exit.
                Err(error) => println!("restarting {} failed: {error:#}", r.name),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `args` with the value after `--listen` replaced by `addr`.
fn listen_on(args: &[String], addr: SocketAddr) -> Vec<String> {
    let mut args = args.to_vec();
    if let Some(at) = args.iter().position(|a| a == "--listen")
        && let Some(value) = args.get_mut(at + 1)
    {
        *value = addr.to_string();
    }
    args
}

/// The services directory `up` uses and where it comes from: `--services-dir`, else
/// `./services` when it exists, else the example services shipped next to the binary
/// (`<dir of slipway>/services`) or, for a binary built from source, in the source tree.
fn services_dir(given: Option<PathBuf>) -> anyhow::Result<(PathBuf, &'static str)> {
    if let Some(dir) = given {
        let dir = dir
            .canonicalize()
            .with_context(|| format!("services dir {}", dir.display()))?;
        return Ok((dir, "--services-dir"));
    }
    let beside_binary = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("services")));
    let candidates = [
        (Some(PathBuf::from("services")), "./services in the working directory"),
        (beside_binary, "the example services next to the slipway binary"),
        (
            Some(PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/services"))),
            "the example services in the source tree",
        ),
    ];
    for (dir, origin) in candidates {
        if let Some(dir) = dir.filter(|d| d.is_dir()) {
            return Ok((dir.canonicalize()?, origin));
        }
    }
    bail!(
        "no services directory: ./services does not exist and no example services were found \
         next to the slipway binary; give one with --services-dir"
    )
}

async fn ensure_admin(database_url: &str, name: &str, password: Option<SecretString>) -> anyhow::Result<()> {
    let store = Store::open(database_url).await.context("opening the auth database")?;
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

/// The directories `up` hands to the services.
struct Dirs<'a> {
    data: &'a Path,
    run: &'a Path,
    services: &'a Path,
    project_root: &'a Path,
}

async fn start_all(
    dirs: &Dirs<'_>,
    topology: &Topology,
    http: SocketAddr,
    landlock: bool,
    running: &mut Vec<Running>,
) -> anyhow::Result<()> {
    let data = dirs.data.to_string_lossy().into_owned();
    let services = dirs.services.to_string_lossy().into_owned();
    let project_root = dirs.project_root.to_string_lossy().into_owned();
    // Each internal service's credential: the deploy service's is trusted by the auth
    // and registry services; the registry and the gateway present theirs to follow
    // the auth service's revocation feed, and the gateway's is trusted by the registry
    // and deploy services too (its services cache and WebSocket hub).
    let [credential, registry_credential, gateway_credential] =
        ["deploy-service.key", "registry-service.key", "gateway.key"].map(|file| {
            let path = dirs.data.join("credentials").join(file);
            common::identity::Credential::create_if_missing(&path).map(|()| path.to_string_lossy().into_owned())
        });
    let (credential, registry_credential, gateway_credential) =
        (credential?, registry_credential?, gateway_credential?);
    // The key-encryption key sealing the auth service's signing keys in its database,
    // beside the credentials (0600).
    let kek_path = dirs.data.join("credentials").join("auth-kek");
    auth_service::kek::Kek::create_if_missing(&kek_path)?;
    let kek = kek_path.to_string_lossy().into_owned();
    // The services name each other, so their addresses are chosen before any starts;
    // a caller is given every replica of a backend.
    let addrs = Addresses::choose(topology.replicas, http)?;
    let (auth_url, registry_url, deploy_url) = (
        Addresses::urls(&addrs.auth),
        Addresses::urls(&addrs.registry),
        Addresses::urls(&addrs.deploy),
    );
    let public_url = format!("http://{http}");
    let trust = ["--deploy-credential-file", credential.as_str()];
    let trust_gateway = ["--gateway-credential-file", gateway_credential.as_str()];
    let services_flag = [
        "--services-dir",
        services.as_str(),
        "--project-root",
        project_root.as_str(),
    ];
    for part in PARTS {
        for (index, addr) in addrs.of(part).iter().enumerate() {
            let listen = addr.to_string();
            // Each deploy replica stops the script groups left in its runs dir at
            // start: one runs dir each (the first keeps the usual one).
            let runs_dir = dirs.data.join(format!("deploy-runs-{}", index + 1));
            let runs_dir = runs_dir.to_string_lossy().into_owned();
            // Replicas share the data dir: each is named apart (its leases and runs).
            let replica_id = format!("deploy-{}", index + 1);
            let own_runs_dir = ["--runs-dir", runs_dir.as_str(), "--replica-id", replica_id.as_str()];
            let args: Vec<&str> = match part {
                "auth" => [
                    &[
                        "--listen",
                        &listen,
                        "--data-dir",
                        &data,
                        "--registry-url",
                        &registry_url,
                    ][..],
                    &trust,
                    &trust_gateway,
                    &[
                        "--registry-credential-file",
                        &registry_credential,
                        "--key-encryption-key-file",
                        &kek,
                    ],
                ]
                .concat(),
                "registry" => [
                    &["--listen", &listen, "--data-dir", &data, "--auth-url", &auth_url][..],
                    &services_flag,
                    &trust,
                    &trust_gateway,
                    &["--credential-file", &registry_credential],
                ]
                .concat(),
                "deploy" => [
                    &["--listen", &listen, "--data-dir", &data, "--auth-url", &auth_url][..],
                    &services_flag,
                    &[
                        "--registry-url",
                        &registry_url,
                        "--credential-file",
                        &credential,
                        "--public-url",
                        &public_url,
                    ],
                    &trust_gateway,
                    if landlock { &["--landlock"][..] } else { &[] },
                    if index > 0 { &own_runs_dir[..] } else { &[] },
                ]
                .concat(),
                _ => vec![
                    "--listen",
                    &listen,
                    "--auth-url",
                    &auth_url,
                    "--registry-url",
                    &registry_url,
                    "--deploy-url",
                    &deploy_url,
                    "--credential-file",
                    &gateway_credential,
                ],
            };
            let name = topology.name(part, index);
            running.push(spawn(&name, part, &args, &topology.env(part), dirs.run).await?);
        }
    }
    Ok(())
}

/// Starts `slipway serve <sub>`, writes its pid file and waits until it has written
/// its address file. The process is killed if `up` drops it without stopping it.
async fn spawn(
    name: &str,
    part: &'static str,
    args: &[&str],
    env: &[(&'static str, String)],
    run_dir: &Path,
) -> anyhow::Result<Running> {
    let addr_file = run_dir.join(format!("{name}.addr"));
    let _ = std::fs::remove_file(&addr_file);
    let pid_file = run_dir.join(format!("{name}.pid"));
    let exe = std::env::current_exe().context("locating the slipway binary")?;
    let mut command = Command::new(exe);
    command
        .arg("serve")
        .arg(part)
        .args(args)
        .arg("--addr-file")
        .arg(&addr_file)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for var in PRIVATE_ENV {
        command.env_remove(var);
    }
    command.envs(env.iter().map(|(k, v)| (k, v)));
    let mut child = command.spawn().with_context(|| format!("starting {name}"))?;
    if let Some(pid) = child.id() {
        std::fs::write(&pid_file, format!("{pid}\n")).with_context(|| format!("writing {}", pid_file.display()))?;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(addr) = std::fs::read_to_string(&addr_file)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            return Ok(Running {
                name: name.to_owned(),
                part,
                args: args.iter().map(|a| (*a).to_owned()).collect(),
                env: env.to_vec(),
                child,
                addr,
                restarts: Restarts::default(),
            });
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

/// SIGTERM in reverse start order (the gateway stops taking requests first), then
/// SIGKILL for anything still running after 10 s.
async fn stop_all(running: &mut Vec<Running>) {
    while let Some(mut r) = running.pop() {
        if let Some(pid) = r.child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        match tokio::time::timeout(Duration::from_secs(10), r.child.wait()).await {
            Ok(_) => tracing::info!(service = %r.name, "stopped"),
            Err(_) => {
                tracing::warn!(service = %r.name, "did not stop in 10 s; killing");
                let _ = r.child.kill().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_listens_where_the_service_was() {
        let args = ["--listen", "127.0.0.1:0", "--data-dir", "d"].map(String::from);
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(
            listen_on(&args, addr),
            ["--listen", "127.0.0.1:8080", "--data-dir", "d"].map(String::from)
        );
    }
}

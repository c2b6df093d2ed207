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
    name: &'static str,
    child: Child,
    addr: SocketAddr,
}

pub async fn up(args: UpArgs) -> anyhow::Result<()> {
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

    ensure_admin(&data_dir, &args.admin_user, args.admin_password).await?;

    let shutdown = common::shutdown::on_signal();
    let mut running: Vec<Running> = Vec::new();
    let dirs = Dirs {
        data: &data_dir,
        run: &run_dir,
        services: &services_dir,
        project_root: &project_root,
    };
    let started = start_all(&dirs, args.http, !args.no_landlock, &mut running).await;
    if let Err(error) = started {
        stop_all(&mut running).await;
        return Err(error);
    }

    println!("slipway is up");
    for r in &running {
        let scheme = if r.name == "gateway" { "http" } else { "grpc" };
        println!("  {:<10} {scheme}://{}", r.name, r.addr);
    }
    if let Some(gateway) = running.iter().find(|r| r.name == "gateway") {
        println!("  console    http://{}/ui/", gateway.addr);
    }
    println!("  data dir   {}", data_dir.display());
    println!("  services   {} ({services_origin})", services_dir.display());
    println!("  project    {}", project_root.display());
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

/// The directories `up` hands to the services.
struct Dirs<'a> {
    data: &'a Path,
    run: &'a Path,
    services: &'a Path,
    project_root: &'a Path,
}

async fn start_all(
    dirs: &Dirs<'_>,
    http: SocketAddr,
    landlock: bool,
    running: &mut Vec<Running>,
) -> anyhow::Result<()> {
    let data = dirs.data.to_string_lossy().into_owned();
    let services = dirs.services.to_string_lossy().into_owned();
    let project_root = dirs.project_root.to_string_lossy().into_owned();
    // Each internal service's credential: the deploy service's is trusted by the auth
    // and registry services; the registry and the gateway present theirs to follow
    // the auth service's revocation feed.
    let [credential, registry_credential, gateway_credential] =
        ["deploy-service.key", "registry-service.key", "gateway.key"].map(|file| {
            let path = dirs.data.join("credentials").join(file);
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
    let services_flag = [
        "--services-dir",
        services.as_str(),
        "--project-root",
        project_root.as_str(),
    ];
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
                if landlock { &["--landlock"][..] } else { &[] },
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
        running.push(spawn(name, name, &args, dirs.run).await?);
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

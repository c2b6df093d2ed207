//! A scaled-out Slipway for one test: N gateways and N replicas of each backend as
//! separate processes on loopback, all on one fresh PostgreSQL database (each service
//! keeps its own tables), every replica with a data dir of its own. Each caller is
//! given every replica of a backend as one comma-separated URL list, as
//! `slipway up --replicas` and the Kubernetes manifests do, and balances over them.
//! Replicas are named `auth-1`, `auth-2`, …, `gateway-1`, …; each can be killed and
//! started again at its address.

use std::{net::SocketAddr, path::Path, time::Duration};

use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use crate::{
    db::{Backend, TestDatabase},
    process::Proc,
    stack::{ADMIN, ADMIN_PASSWORD, Process, Secrets, Wiring},
    wait::wait_until,
};

/// How many replicas of each part, and the settings, before a [`Replicas`] starts.
pub struct ReplicasBuilder<'a> {
    counts: [usize; 4],
    prepare: Box<dyn FnOnce(&Path) + 'a>,
    env: Vec<(Process, &'static str, String)>,
}

impl<'a> ReplicasBuilder<'a> {
    pub fn auth(mut self, n: usize) -> Self {
        self.counts[0] = n.max(1);
        self
    }

    pub fn registry(mut self, n: usize) -> Self {
        self.counts[1] = n.max(1);
        self
    }

    pub fn deploy(mut self, n: usize) -> Self {
        self.counts[2] = n.max(1);
        self
    }

    pub fn gateways(mut self, n: usize) -> Self {
        self.counts[3] = n.max(1);
        self
    }

    /// Fills the services directory before the services start.
    pub fn services(mut self, prepare: impl FnOnce(&Path) + 'a) -> Self {
        self.prepare = Box::new(prepare);
        self
    }

    /// Sets an environment variable of every replica of one part.
    pub fn env(mut self, process: Process, variable: &'static str, value: impl Into<String>) -> Self {
        self.env.push((process, variable, value.into()));
        self
    }

    /// Starts every replica (PostgreSQL must be available) and waits until each serves.
    pub async fn start(self) -> Replicas {
        Replicas::launch(self).await
    }
}

/// The running replicas. Stopped (SIGTERM, gateways first) when dropped; every log is
/// printed when the test panics.
pub struct Replicas {
    pub dir: tempfile::TempDir,
    pub auth: Vec<SocketAddr>,
    pub registry: Vec<SocketAddr>,
    pub deploy: Vec<SocketAddr>,
    pub gateways: Vec<SocketAddr>,
    pub http: reqwest::Client,
    procs: Vec<Proc>,
    database: TestDatabase,
}

const PARTS: [(&str, &str, Process); 4] = [
    ("auth", "auth-service", Process::Auth),
    ("registry", "registry-service", Process::Registry),
    ("deploy", "deploy-service", Process::Deploy),
    ("gateway", "gateway", Process::Gateway),
];

impl Replicas {
    /// 1 of each until told otherwise.
    pub fn builder<'a>() -> ReplicasBuilder<'a> {
        ReplicasBuilder {
            counts: [1; 4],
            prepare: Box::new(|_| {}),
            env: Vec::new(),
        }
    }

    async fn launch(builder: ReplicasBuilder<'_>) -> Replicas {
        let ReplicasBuilder { counts, prepare, env } = builder;
        let dir = tempfile::tempdir().expect("temp dir");
        let services_dir = dir.path().join("services");
        std::fs::create_dir_all(&services_dir).expect("services dir");
        prepare(&services_dir);
        let database = TestDatabase::create(Backend::Postgres, dir.path(), "scale")
            .await
            .expect("a PostgreSQL database");
        let secrets = Secrets::create(dir.path());
        // Every address up front: the parts name each other, and a replica started
        // again must come back where its callers look for it.
        let addrs: Vec<Vec<SocketAddr>> = counts
            .iter()
            .map(|n| (0..*n).map(|_| reserve_port()).collect())
            .collect();
        let urls = |part: usize| {
            addrs[part]
                .iter()
                .map(|a| format!("http://{a}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let (auth_urls, registry_urls, deploy_urls) = (urls(0), urls(1), urls(2));
        let services = services_dir.to_string_lossy().into_owned();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client");
        let mut procs = Vec::new();
        for (part, (name, binary, process)) in PARTS.into_iter().enumerate() {
            for (index, listen) in addrs[part].iter().enumerate() {
                let replica = format!("{name}-{}", index + 1);
                let data_dir = dir.path().join(&replica);
                std::fs::create_dir_all(&data_dir).expect("data dir");
                let addr_file = dir.path().join(format!("{replica}.addr"));
                let mut args: Vec<String> = vec![
                    "--listen".into(),
                    listen.to_string(),
                    "--addr-file".into(),
                    addr_file.to_string_lossy().into_owned(),
                ];
                // Scripts report through the gateways in turn.
                let public = format!("http://{}", addrs[3][index % addrs[3].len()]);
                let wiring = Wiring {
                    secrets: &secrets,
                    services_dir: &services,
                    auth: &auth_urls,
                    registry: &registry_urls,
                    deploy: &deploy_urls,
                    public: &public,
                };
                args.extend(wiring.flags(process));
                let mut envs: Vec<(&str, String)> = env
                    .iter()
                    .filter(|(p, _, _)| *p == process)
                    .map(|(_, k, v)| (*k, v.clone()))
                    .collect();
                if process != Process::Gateway {
                    args.extend(["--data-dir".into(), data_dir.to_string_lossy().into_owned()]);
                    envs.push(("SLIPWAY_DATABASE_URL", database.url.clone()));
                }
                if process == Process::Auth {
                    envs.push(("SLIPWAY_ADMIN_USER", ADMIN.to_owned()));
                    envs.push(("SLIPWAY_ADMIN_PASSWORD", ADMIN_PASSWORD.to_owned()));
                }
                let mut proc = Proc::spawn(&replica, binary, &args, &envs, dir.path());
                // One at a time, each serving before the next starts: the first of each
                // part migrates the fresh database (and the first auth replica makes
                // the admin user and the first signing key).
                tokio::task::block_in_place(|| proc.wait_addr(&addr_file));
                wait_serving(&http, &proc, *listen).await;
                procs.push(proc);
            }
        }
        let mut addrs = addrs.into_iter();
        let mut next = || addrs.next().expect("four parts");
        Replicas {
            dir,
            auth: next(),
            registry: next(),
            deploy: next(),
            gateways: next(),
            http,
            procs,
            database,
        }
    }

    /// The database every replica uses.
    pub fn database_url(&self) -> &str {
        &self.database.url
    }

    /// `http://<gateway i>/path`.
    pub fn url(&self, gateway: usize, path: &str) -> String {
        format!("http://{}{}", self.gateways[gateway], path)
    }

    /// The address of a replica by name (`deploy-2`).
    pub fn addr(&self, name: &str) -> SocketAddr {
        let (part, index) = name.rsplit_once('-').expect("a replica name: part-N");
        let index: usize = index.parse().expect("a replica number");
        let list = match part {
            "auth" => &self.auth,
            "registry" => &self.registry,
            "deploy" => &self.deploy,
            "gateway" => &self.gateways,
            other => panic!("no part {other}"),
        };
        list[index - 1]
    }

    fn proc(&mut self, name: &str) -> &mut Proc {
        self.procs
            .iter_mut()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no replica {name}"))
    }

    /// SIGKILL, as a crash would end it.
    pub fn kill(&mut self, name: &str) {
        self.proc(name).kill();
    }

    /// Starts a killed (or stopped) replica again at its address and waits until it
    /// serves.
    pub async fn restart(&mut self, name: &str) {
        let addr_file = self.dir.path().join(format!("{name}.addr"));
        let _ = std::fs::remove_file(&addr_file);
        let proc = self.proc(name);
        proc.restart();
        tokio::task::block_in_place(|| proc.wait_addr(&addr_file));
        let addr = self.addr(name);
        let proc = self.procs.iter().find(|p| p.name == name).expect("the replica");
        wait_serving(&self.http, proc, addr).await;
    }

    /// The log of one replica.
    pub fn log(&self, name: &str) -> String {
        self.procs
            .iter()
            .find(|p| p.name == name)
            .map(Proc::log_text)
            .unwrap_or_default()
    }

    /// Every replica's log, for failure reports.
    pub fn logs(&self) -> String {
        self.procs
            .iter()
            .map(|p| format!("----- {} log -----\n{}\n", p.name, p.log_text()))
            .collect()
    }

    /// A user token for the admin, logged in through gateway `gateway`.
    pub async fn admin_token(&self, gateway: usize) -> String {
        let response = self
            .http
            .post(self.url(gateway, "/token"))
            .form(&[
                ("grant_type", "password"),
                ("username", ADMIN),
                ("password", ADMIN_PASSWORD),
            ])
            .send()
            .await
            .expect("POST /token");
        assert_eq!(response.status(), 200, "admin login failed\n{}", self.logs());
        let body: serde_json::Value = response.json().await.expect("a JSON body");
        body["access_token"].as_str().expect("access_token").to_owned()
    }

    /// Stops every replica with SIGTERM, gateways first.
    pub fn stop(&mut self) {
        for proc in self.procs.iter_mut().rev() {
            proc.stop(Duration::from_secs(10));
        }
    }
}

/// Waits until one replica serves: a backend's gRPC health check says serving (its
/// database and the auth service's feed are there), a gateway is ready.
async fn wait_serving(http: &reqwest::Client, proc: &Proc, addr: SocketAddr) {
    let within = Duration::from_secs(60);
    let name = &proc.name;
    if name.starts_with("gateway") {
        wait_until(within, async || {
            match http.get(format!("http://{addr}/readyz")).send().await {
                Ok(r) if r.status().is_success() => Ok(()),
                _ => Err(format!("{name} is not ready\n{}", proc.log_text())),
            }
        })
        .await;
        return;
    }
    wait_until(within, async || {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).expect("url");
        if let Ok(channel) = endpoint.connect().await {
            let status = HealthClient::new(channel)
                .check(HealthCheckRequest { service: String::new() })
                .await;
            if status.is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32) {
                return Ok(());
            }
        }
        Err(format!("{name} at {addr} is not serving\n{}", proc.log_text()))
    })
    .await;
}

fn reserve_port() -> SocketAddr {
    common::server::free_loopback_port().expect("a free loopback port")
}

impl Drop for Replicas {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        self.stop();
    }
}

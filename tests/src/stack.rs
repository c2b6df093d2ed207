//! A whole Slipway system for one test: auth, registry and deploy services and the
//! gateway as separate processes on loopback, each with a fresh database.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use common::token::Claims;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::Value;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

mod replicas;
mod wiring;

pub use wiring::{Secrets, Wiring};

use crate::{
    db::{Backend, TestDatabase},
    process::Proc,
    wait::wait_until,
};

pub const ADMIN: &str = "admin";
pub const ADMIN_PASSWORD: &str = "correct horse battery staple";

/// The four processes of a stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Process {
    Auth,
    Registry,
    Deploy,
    Gateway,
}

impl Process {
    fn named(name: &str) -> Process {
        match name {
            "auth" => Process::Auth,
            "registry" => Process::Registry,
            "deploy" => Process::Deploy,
            "gateway" => Process::Gateway,
            other => panic!("no process {other}"),
        }
    }
}

/// Settings for a stack before it starts ([`Stack::builder`]).
pub struct StackBuilder<'a> {
    backend: Backend,
    prepare: Box<dyn FnOnce(&Path) + 'a>,
    env: Vec<(Process, &'static str, String)>,
    postgres: Option<String>,
    data_dirs: Vec<(Process, PathBuf)>,
}

impl<'a> StackBuilder<'a> {
    /// Creates the PostgreSQL databases on the server at `base`
    /// (`postgres://user@host:port`) instead of the shared one.
    pub fn postgres(mut self, base: impl Into<String>) -> Self {
        self.postgres = Some(base.into());
        self
    }

    /// Puts one service's data directory (and its SQLite database) in `dir` instead of
    /// the stack's temp dir: a small file system the test fills, say.
    pub fn data_dir(mut self, process: Process, dir: &Path) -> Self {
        self.data_dirs.push((process, dir.to_owned()));
        self
    }

    /// Fills the services directory before the services start.
    pub fn services(mut self, prepare: impl FnOnce(&Path) + 'a) -> Self {
        self.prepare = Box::new(prepare);
        self
    }

    /// Sets an environment variable of one process.
    pub fn env(mut self, process: Process, variable: &'static str, value: impl Into<String>) -> Self {
        self.env.push((process, variable, value.into()));
        self
    }

    /// Starts every process and waits until the stack is healthy.
    pub async fn start(self) -> Stack {
        Stack::launch(self).await
    }
}

pub struct Stack {
    pub backend: Backend,
    pub dir: tempfile::TempDir,
    pub auth: SocketAddr,
    pub registry: SocketAddr,
    pub deploy: SocketAddr,
    pub gateway: SocketAddr,
    pub http: reqwest::Client,
    procs: Vec<Proc>,
    databases: Vec<TestDatabase>,
}

impl Stack {
    /// The gateway's `/metrics` text.
    pub async fn metrics(&self) -> String {
        let response = self.http.get(self.url("/metrics")).send().await.expect("GET /metrics");
        response.text().await.expect("the /metrics body")
    }

    /// A stack with an empty services directory and default settings.
    pub async fn start(backend: Backend) -> Stack {
        Stack::builder(backend).start().await
    }

    /// Starts a stack after `prepare` has filled the services directory.
    pub async fn start_with(backend: Backend, prepare: impl FnOnce(&Path)) -> Stack {
        Stack::builder(backend).services(prepare).start().await
    }

    /// A stack to configure before it starts: services directory, per-process
    /// environment.
    pub fn builder<'a>(backend: Backend) -> StackBuilder<'a> {
        StackBuilder {
            backend,
            prepare: Box::new(|_| {}),
            env: Vec::new(),
            postgres: None,
            data_dirs: Vec::new(),
        }
    }

    async fn launch(builder: StackBuilder<'_>) -> Stack {
        let StackBuilder {
            backend,
            prepare,
            env,
            postgres,
            data_dirs,
        } = builder;
        let postgres = postgres.unwrap_or_else(crate::db::postgres_base_url);
        let env_of = |process: Process| -> Vec<(&str, String)> {
            env.iter()
                .filter(|(p, _, _)| *p == process)
                .map(|(_, k, v)| (*k, v.clone()))
                .collect()
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let services_dir = dir.path().join("services");
        std::fs::create_dir_all(&services_dir).expect("services dir");
        prepare(&services_dir);
        let secrets = Secrets::create(dir.path());
        // The services name each other (and deploy scripts are told the gateway's URL),
        // and a restarted service must come back where the others expect it, so every
        // address is chosen up front.
        let [auth, registry, deploy, gateway] = [(); 4].map(|()| reserve_port());
        let [auth_url, registry_url, deploy_url, gateway_url] =
            [auth, registry, deploy, gateway].map(|a| format!("http://{a}"));
        let services = path(&services_dir);
        let wiring = Wiring {
            secrets: &secrets,
            services_dir: &services,
            auth: &auth_url,
            registry: &registry_url,
            deploy: &deploy_url,
            public: &gateway_url,
        };
        let mut databases = Vec::new();
        let mut procs = Vec::new();
        for (name, binary, listen) in [
            ("auth", "auth-service", auth),
            ("registry", "registry-service", registry),
            ("deploy", "deploy-service", deploy),
        ] {
            let data_dir = data_dirs
                .iter()
                .find(|(p, _)| *p == Process::named(name))
                .map_or_else(|| dir.path().to_owned(), |(_, d)| d.clone());
            let db = TestDatabase::create_on(backend, &postgres, &data_dir, name)
                .await
                .expect("test database");
            let addr_file = dir.path().join(format!("{name}.addr"));
            let mut args: Vec<String> = vec![
                "--listen".into(),
                listen.to_string(),
                "--data-dir".into(),
                path(&data_dir),
                "--database-url".into(),
                db.url.clone(),
                "--addr-file".into(),
                path(&addr_file),
            ];
            args.extend(wiring.flags(Process::named(name)));
            let mut envs = env_of(Process::named(name));
            if name == "auth" {
                envs.push(("SLIPWAY_ADMIN_USER", ADMIN.to_owned()));
                envs.push(("SLIPWAY_ADMIN_PASSWORD", ADMIN_PASSWORD.to_owned()));
            }
            let mut proc = Proc::spawn(name, binary, &args, &envs, dir.path());
            proc.wait_addr(&addr_file);
            procs.push(proc);
            databases.push(db);
        }
        let addr_file = dir.path().join("gateway.addr");
        let mut args = vec![
            "--listen".into(),
            gateway.to_string(),
            "--addr-file".into(),
            path(&addr_file),
        ];
        args.extend(wiring.flags(Process::Gateway));
        let mut proc = Proc::spawn("gateway", "gateway", &args, &env_of(Process::Gateway), dir.path());
        proc.wait_addr(&addr_file);
        procs.push(proc);

        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client");
        let stack = Stack {
            backend,
            dir,
            auth,
            registry,
            deploy,
            gateway,
            http,
            procs,
            databases,
        };
        stack.wait_healthy().await;
        stack
    }

    /// Polls every backend's gRPC health check and the gateway's `/readyz` (the logs
    /// are printed when this fails, as the stack drops).
    async fn wait_healthy(&self) {
        let within = Duration::from_secs(30);
        for addr in [self.auth, self.registry, self.deploy] {
            wait_until(within, async || {
                if let Ok(channel) = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                    .expect("url")
                    .connect()
                    .await
                {
                    let status = HealthClient::new(channel)
                        .check(HealthCheckRequest { service: String::new() })
                        .await;
                    if status.is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32) {
                        return Ok(());
                    }
                }
                Err(format!("{addr} not healthy"))
            })
            .await;
        }
        wait_until(within, async || {
            let ready = self.http.get(self.url("/readyz")).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                Ok(())
            } else {
                Err("gateway not ready".to_owned())
            }
        })
        .await;
    }

    /// The database URL a service of this stack runs on ("auth", "registry", "deploy").
    pub fn database_url(&self, service: &str) -> String {
        let index = ["auth", "registry", "deploy"]
            .iter()
            .position(|s| *s == service)
            .expect("a service name");
        self.databases[index].url.clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.gateway, path)
    }

    /// Every process's log, for failure reports.
    pub fn logs(&self) -> String {
        self.procs
            .iter()
            .map(|p| format!("----- {} log -----\n{}\n", p.name, p.log_text()))
            .collect()
    }

    /// `POST /token` with a form; returns status and JSON body.
    pub async fn login(&self, username: &str, password: &str) -> (u16, Value) {
        let response = self
            .http
            .post(self.url("/token"))
            .form(&[
                ("grant_type", "password"),
                ("username", username),
                ("password", password),
            ])
            .send()
            .await
            .expect("POST /token");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A user token for the admin.
    pub async fn admin_token(&self) -> String {
        let (status, body) = self.login(ADMIN, ADMIN_PASSWORD).await;
        assert_eq!(status, 200, "admin login failed: {body}\n{}", self.logs());
        body["access_token"].as_str().expect("access_token").to_owned()
    }

    /// Signs arbitrary claims with the auth service's real current key, to build
    /// tokens that are authentic but wrong in one way (expired, wrong type, …).
    pub fn sign_with_real_key(&self, claims: &Claims) -> String {
        sign(&self.real_signing_key(), claims)
    }

    /// The auth service's current signing key, read from its database and opened
    /// with the stack's key-encryption key (on a thread of its own, so callers need
    /// not be async).
    pub fn real_signing_key(&self) -> ed25519_dalek::SigningKey {
        let url = self.database_url("auth");
        let kek = self.dir.path().join("auth-kek");
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("runtime");
                    runtime.block_on(crate::keys::current_signing_key(&url, &kek))
                })
                .join()
                .expect("reading the signing key")
        })
    }

    /// Stops every process with SIGTERM, gateway first; returns the names of those
    /// that needed SIGKILL. Logs stay readable afterwards.
    pub fn stop(&mut self) -> Vec<String> {
        let mut killed = Vec::new();
        for proc in self.procs.iter_mut().rev() {
            if !proc.stop(Duration::from_secs(10)) {
                killed.push(proc.name.clone());
            }
        }
        killed
    }

    /// The services directory the registry and deploy services read.
    pub fn services_dir(&self) -> PathBuf {
        self.dir.path().join("services")
    }

    /// The process named "auth", "registry", "deploy" or "gateway".
    pub fn proc(&mut self, name: &str) -> &mut Proc {
        self.procs
            .iter_mut()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no process {name}"))
    }

    /// Restarts one process (stopped or killed before) at the same address and waits
    /// until the whole stack is healthy again.
    pub async fn restart(&mut self, name: &str) {
        let addr_file = self.dir.path().join(format!("{name}.addr"));
        let _ = std::fs::remove_file(&addr_file);
        let proc = self.proc(name);
        proc.restart();
        proc.wait_addr(&addr_file);
        self.wait_healthy().await;
    }

    /// Starts one process (killed or stopped before) again at the same address and
    /// returns once it listens, without waiting for the rest of the stack.
    pub async fn respawn(&mut self, name: &str) {
        let addr_file = self.dir.path().join(format!("{name}.addr"));
        let _ = std::fs::remove_file(&addr_file);
        let proc = self.proc(name);
        proc.restart();
        tokio::task::block_in_place(|| proc.wait_addr(&addr_file));
    }

    /// Waits until one process serves by itself: a backend's gRPC health check says
    /// serving, the gateway answers `/healthz`.
    pub async fn wait_serving(&self, name: &str) {
        let within = Duration::from_secs(60);
        let addr = match name {
            "auth" => self.auth,
            "registry" => self.registry,
            "deploy" => self.deploy,
            _ => {
                wait_until(within, async || {
                    match self.http.get(self.url("/healthz")).send().await {
                        Ok(r) if r.status().is_success() => Ok(()),
                        _ => Err("the gateway does not answer /healthz".to_owned()),
                    }
                })
                .await;
                return;
            }
        };
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
            Err(format!("{name} at {addr} not serving"))
        })
        .await;
    }

    /// The log of one process ("auth", "registry", "deploy", "gateway").
    pub fn log(&self, name: &str) -> String {
        self.procs
            .iter()
            .find(|p| p.name == name)
            .map(Proc::log_text)
            .unwrap_or_default()
    }
}

/// Signs claims with any Ed25519 key, naming it by its key id.
pub fn sign(key: &ed25519_dalek::SigningKey, claims: &Claims) -> String {
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    let der = key.to_pkcs8_der().expect("pkcs8");
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(common::token::key_id(&key.verifying_key()));
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(der.as_bytes())).expect("sign")
}

/// A loopback address with a port that was free a moment ago, for a process that
/// must be named before it starts.
fn reserve_port() -> SocketAddr {
    common::server::free_loopback_port().expect("a free loopback port")
}

fn path(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        self.stop();
    }
}

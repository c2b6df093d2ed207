//! A whole Slipway system for one test: auth, registry and deploy services and the
//! gateway as separate processes on loopback, each with a fresh database.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use common::token::Claims;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::Value;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use crate::{
    db::{Backend, TestDatabase},
    process::Proc,
};

pub const ADMIN: &str = "admin";
pub const ADMIN_PASSWORD: &str = "correct horse battery staple";

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
    pub async fn start(backend: Backend) -> Stack {
        let dir = tempfile::tempdir().expect("temp dir");
        let services_dir = dir.path().join("services");
        std::fs::create_dir_all(&services_dir).expect("services dir");
        let mut databases = Vec::new();
        let mut procs = Vec::new();
        let mut addrs = Vec::new();
        for (name, binary) in [
            ("auth", "auth-service"),
            ("registry", "registry-service"),
            ("deploy", "deploy-service"),
        ] {
            let db = TestDatabase::create(backend, dir.path(), name)
                .await
                .expect("test database");
            let addr_file = dir.path().join(format!("{name}.addr"));
            let mut args = vec![
                "--listen".into(),
                "127.0.0.1:0".into(),
                "--data-dir".into(),
                path(dir.path()),
                "--database-url".into(),
                db.url.clone(),
                "--addr-file".into(),
                path(&addr_file),
            ];
            if name != "auth" {
                args.extend(["--services-dir".into(), path(&services_dir)]);
            }
            let envs = [
                ("SLIPWAY_ADMIN_USER", ADMIN.to_owned()),
                ("SLIPWAY_ADMIN_PASSWORD", ADMIN_PASSWORD.to_owned()),
            ];
            let envs: &[(&str, String)] = if name == "auth" { &envs } else { &[] };
            let mut proc = Proc::spawn(name, binary, &args, envs, dir.path());
            addrs.push(proc.wait_addr(&addr_file));
            procs.push(proc);
            databases.push(db);
        }
        let addr_file = dir.path().join("gateway.addr");
        let url = |a: SocketAddr| format!("http://{a}");
        let args = vec![
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--addr-file".into(),
            path(&addr_file),
            "--auth-url".into(),
            url(addrs[0]),
            "--registry-url".into(),
            url(addrs[1]),
            "--deploy-url".into(),
            url(addrs[2]),
        ];
        let mut gateway = Proc::spawn("gateway", "gateway", &args, &[], dir.path());
        let gateway_addr = gateway.wait_addr(&addr_file);
        procs.push(gateway);

        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client");
        let stack = Stack {
            backend,
            dir,
            auth: addrs[0],
            registry: addrs[1],
            deploy: addrs[2],
            gateway: gateway_addr,
            http,
            procs,
            databases,
        };
        stack.wait_healthy().await;
        stack
    }

    /// Polls every backend's gRPC health check and the gateway's `/readyz`.
    async fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for addr in [self.auth, self.registry, self.deploy] {
            loop {
                if let Ok(channel) = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                    .expect("url")
                    .connect()
                    .await
                {
                    let status = HealthClient::new(channel)
                        .check(HealthCheckRequest { service: String::new() })
                        .await;
                    if status.is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32) {
                        break;
                    }
                }
                assert!(Instant::now() < deadline, "{addr} not healthy in 30 s\n{}", self.logs());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        loop {
            if self
                .http
                .get(self.url("/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return;
            }
            assert!(Instant::now() < deadline, "gateway not ready in 30 s\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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
        let keys_dir = self.dir.path().join("auth-keys");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&keys_dir)
            .expect("auth keys dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        files.sort();
        let seed: [u8; 32] = std::fs::read(files.last().expect("a key"))
            .expect("key")
            .try_into()
            .expect("32 bytes");
        sign(&ed25519_dalek::SigningKey::from_bytes(&seed), claims)
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

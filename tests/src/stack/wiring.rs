//! What each part is told at start, shared by the stack (one of each) and
//! `tests::replicas` (N of each): the secrets in the test's directory, and the flags
//! that name the other parts and those secrets.

use std::path::Path;

use super::{Process, path};

/// The internal services' credentials and the auth service's key-encryption key, as
/// files in a test's directory.
pub struct Secrets {
    /// The deploy service's credential (trusted by auth and the registry).
    pub deploy: String,
    /// The registry's (trusted by auth).
    pub registry: String,
    /// The gateway's (trusted by auth, the registry and the deploy service).
    pub gateway: String,
    /// The key-encryption key sealing the auth service's signing keys.
    pub kek: String,
}

impl Secrets {
    /// Creates them in `dir` (kept if they exist).
    pub fn create(dir: &Path) -> Secrets {
        let [deploy, registry, gateway] = ["deploy-service.key", "registry-service.key", "gateway.key"].map(|file| {
            let key = dir.join(file);
            common::identity::Credential::create_if_missing(&key).expect("service credential");
            path(&key)
        });
        let kek = dir.join("auth-kek");
        auth_service::kek::Kek::create_if_missing(&kek).expect("key-encryption key");
        Secrets {
            deploy,
            registry,
            gateway,
            kek: path(&kek),
        }
    }
}

/// Where the parts are: each a URL, or replicas' URLs separated by commas.
pub struct Wiring<'a> {
    pub secrets: &'a Secrets,
    pub services_dir: &'a str,
    pub auth: &'a str,
    pub registry: &'a str,
    pub deploy: &'a str,
    /// The gateway deploy scripts report through.
    pub public: &'a str,
}

impl Wiring<'_> {
    /// The flags of `process` naming the other parts and the secrets it needs.
    pub fn flags(&self, process: Process) -> Vec<String> {
        let s = self.secrets;
        let pairs: Vec<(&str, &str)> = match process {
            Process::Auth => vec![
                ("--registry-url", self.registry),
                ("--deploy-credential-file", &s.deploy),
                ("--registry-credential-file", &s.registry),
                ("--gateway-credential-file", &s.gateway),
                ("--key-encryption-key-file", &s.kek),
            ],
            Process::Registry => vec![
                ("--services-dir", self.services_dir),
                ("--auth-url", self.auth),
                ("--deploy-credential-file", &s.deploy),
                ("--credential-file", &s.registry),
                ("--gateway-credential-file", &s.gateway),
            ],
            Process::Deploy => vec![
                ("--services-dir", self.services_dir),
                ("--auth-url", self.auth),
                ("--registry-url", self.registry),
                ("--credential-file", &s.deploy),
                ("--public-url", self.public),
                ("--gateway-credential-file", &s.gateway),
            ],
            Process::Gateway => vec![
                ("--auth-url", self.auth),
                ("--registry-url", self.registry),
                ("--deploy-url", self.deploy),
                ("--credential-file", &s.gateway),
            ],
        };
        pairs
            .into_iter()
            .flat_map(|(flag, value)| [flag.to_owned(), value.to_owned()])
            .collect()
    }
}

//! More replicas of a backend on the stack's database (issue 15): each on a port
//! and, for the registry and the deploy service, a data directory of its own (a
//! deploy replica's replica id and runs stay its own), stopped with the stack.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use super::{Stack, path, reserve_port};
use crate::process::Proc;

/// The binary a stack process named `of` runs.
fn binary_of(of: &str) -> &'static str {
    match of {
        "auth" => "auth-service",
        "registry" => "registry-service",
        "deploy" => "deploy-service",
        "gateway" => "gateway",
        other => panic!("no replicas of {other} here"),
    }
}

impl Stack {
    /// Spawns another replica of `of` ("auth", "registry", "deploy" or "gateway") named `name`
    /// with the flags, environment and database of the process `of`, listening on a
    /// port reserved for it (a restart keeps it); `change(flag, value)` may replace a
    /// flag's value or drop the flag (`None`). Does not wait for it; returns the
    /// process and the file it writes its address to.
    pub fn spawn_replica(
        &self,
        of: &str,
        name: &str,
        change: impl Fn(&str, &str) -> Option<String>,
    ) -> (Proc, PathBuf) {
        let base = self
            .procs
            .iter()
            .find(|p| p.name == of)
            .unwrap_or_else(|| panic!("no process {of}"));
        let addr_file = self.dir.path().join(format!("{name}.addr"));
        let listen = reserve_port();
        let mut args: Vec<String> = Vec::new();
        let mut given = base.args().iter();
        while let Some(flag) = given.next() {
            let value = given.next().expect("flags come with values");
            let value = match flag.as_str() {
                "--listen" => Some(listen.to_string()),
                "--addr-file" => Some(path(&addr_file)),
                _ => change(flag, value),
            };
            if let Some(value) = value {
                args.extend([flag.clone(), value]);
            }
        }
        let proc = Proc::spawn(name, binary_of(of), &args, &base.envs(), self.dir.path());
        (proc, addr_file)
    }

    /// Spawns another auth service named `name` on the database of "auth", with the
    /// key-encryption key in `kek` (`None`: none given); does not wait for it.
    pub fn spawn_auth_replica(&self, name: &str, kek: Option<&Path>) -> (Proc, PathBuf) {
        self.spawn_replica("auth", name, |flag, value| match flag {
            "--key-encryption-key-file" => kek.map(path),
            _ => Some(value.to_owned()),
        })
    }

    /// Starts a second (third, …) auth replica on the same database and key-encryption
    /// key as "auth". Returns its address.
    pub fn add_auth_replica(&mut self, name: &str) -> SocketAddr {
        let (proc, addr_file) = self.spawn_auth_replica(name, Some(&self.dir.path().join("auth-kek")));
        self.keep(proc, &addr_file)
    }

    /// Starts another replica of `of` ("registry" or "deploy") named `name` on the
    /// same database, with a data directory of its own (`<stack dir>/<name>-data`).
    /// Returns its address.
    pub fn add_replica(&mut self, of: &str, name: &str) -> SocketAddr {
        let data_dir = self.dir.path().join(format!("{name}-data"));
        std::fs::create_dir_all(&data_dir).expect("the replica's data dir");
        let (proc, addr_file) = self.spawn_replica(of, name, |flag, value| match flag {
            "--data-dir" => Some(path(&data_dir)),
            _ => Some(value.to_owned()),
        });
        self.keep(proc, &addr_file)
    }

    /// Another deploy service (run only on PostgreSQL: replicas share one database).
    pub fn add_deploy_replica(&mut self, name: &str) -> SocketAddr {
        self.add_replica("deploy", name)
    }

    /// Waits until `proc` listens and keeps it with the stack's processes.
    fn keep(&mut self, mut proc: Proc, addr_file: &Path) -> SocketAddr {
        let addr = proc.wait_addr(addr_file);
        self.procs.push(proc);
        addr
    }
}

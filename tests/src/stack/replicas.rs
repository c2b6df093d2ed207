//! More replicas of the registry or the deploy service on the stack's database (issue
//! 15): each on a port and data directory of its own (a deploy replica's runs stay
//! its own), stopped with the stack.

use std::net::SocketAddr;

use super::{Stack, path};
use crate::process::Proc;

impl Stack {
    /// Starts another replica of `of` ("registry" or "deploy") named `name`, with the
    /// same flags and database URL; returns its address once it listens.
    pub fn add_replica(&mut self, of: &str, name: &str) -> SocketAddr {
        let base = self
            .procs
            .iter()
            .find(|p| p.name == of)
            .unwrap_or_else(|| panic!("no process {of}"));
        let binary = match of {
            "registry" => "registry-service",
            "deploy" => "deploy-service",
            other => panic!("no replicas of {other} here (auth: add_auth_replica)"),
        };
        let addr_file = self.dir.path().join(format!("{name}.addr"));
        let data_dir = self.dir.path().join(format!("{name}-data"));
        std::fs::create_dir_all(&data_dir).expect("replica data dir");
        let mut args: Vec<String> = Vec::new();
        let mut given = base.args().iter();
        while let Some(flag) = given.next() {
            let value = given.next().expect("flags come with values").clone();
            let value = match flag.as_str() {
                "--listen" => "127.0.0.1:0".to_owned(),
                "--addr-file" => path(&addr_file),
                "--data-dir" => path(&data_dir),
                _ => value,
            };
            args.extend([flag.clone(), value]);
        }
        let mut proc = Proc::spawn(name, binary, &args, &base.envs(), self.dir.path());
        let addr = proc.wait_addr(&addr_file);
        self.procs.push(proc);
        addr
    }
}

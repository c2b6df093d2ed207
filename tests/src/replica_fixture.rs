//! More processes beside a stack's own: another replica of a service (or another
//! gateway) started like one of the stack's, with some flags changed; stopped when
//! dropped, and their logs printed when a test fails.

use std::net::SocketAddr;

use crate::{Stack, process::Proc};

/// Processes a test started beside its stack.
#[derive(Default)]
pub struct Extras(Vec<Proc>);

impl Extras {
    /// Starts `name` like the stack's process `like` (same binary, flags and
    /// environment) on a port of its own, with the flags in `set` changed; waits
    /// until it listens and returns its address.
    pub fn spawn_like(&mut self, stack: &mut Stack, like: &str, name: &str, set: &[(&str, String)]) -> SocketAddr {
        let (mut proc, addr_file) = stack.spawn_replica(like, name, |flag, value| {
            Some(
                set.iter()
                    .find(|(f, _)| *f == flag)
                    .map_or(value, |(_, v)| v)
                    .to_owned(),
            )
        });
        let addr = tokio::task::block_in_place(|| proc.wait_addr(&addr_file));
        self.0.push(proc);
        addr
    }

    /// The process named `name`.
    pub fn proc(&mut self, name: &str) -> &mut Proc {
        self.0
            .iter_mut()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no process {name}"))
    }

    pub fn log(&self, name: &str) -> String {
        self.0
            .iter()
            .find(|p| p.name == name)
            .map(Proc::log_text)
            .unwrap_or_default()
    }
}

impl Drop for Extras {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for proc in &self.0 {
                eprintln!("----- {} log -----\n{}\n", proc.name, proc.log_text());
            }
        }
        for proc in self.0.iter_mut().rev() {
            proc.stop(std::time::Duration::from_secs(10));
        }
    }
}

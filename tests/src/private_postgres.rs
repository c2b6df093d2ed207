//! A PostgreSQL server owned by one test (`initdb` and `pg_ctl` into a temp dir, on a
//! free loopback port), so that the test can stop and start it under load without
//! touching the machine's shared server. As root, the server runs as the `postgres`
//! user (`initdb` refuses root). Required where PostgreSQL is (CI); skipped with a
//! notice elsewhere when no PostgreSQL binaries are installed.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// A running private server; stopped (immediately) and deleted when dropped.
pub struct PrivatePostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// Commands run as this user (`runuser -u`), or as ourselves when `None`.
    user: Option<&'static str>,
}

impl PrivatePostgres {
    /// Creates and starts a cluster; `None` when PostgreSQL is not installed here and
    /// not required.
    pub fn start() -> Option<PrivatePostgres> {
        let Some(bin) = bin_dir() else {
            assert!(
                !crate::db::postgres_required(),
                "PostgreSQL is required here but no initdb was found (/usr/lib/postgresql/*/bin or SLIPWAY_TEST_PG_BIN)"
            );
            eprintln!("SKIPPED: no PostgreSQL binaries (initdb) here; set CI=true to require them");
            return None;
        };
        // initdb refuses root: as root, the cluster belongs to the postgres user.
        use std::os::unix::fs::MetadataExt;
        let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        let user = root.then_some("postgres");
        let dir = tempfile::tempdir().expect("temp dir");
        if let Some(user) = user {
            let status = Command::new("chown")
                .arg(format!("{user}:"))
                .arg(dir.path())
                .status()
                .expect("running chown");
            assert!(
                status.success(),
                "chown {user} of the cluster dir failed (is there a {user} user?)"
            );
        }
        let port = common::server::free_loopback_port().expect("a free port").port();
        let server = PrivatePostgres { dir, bin, port, user };
        let data = server.data();
        server.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ],
        );
        server.start_again();
        Some(server)
    }

    /// `postgres://postgres@127.0.0.1:<port>`, for [`crate::stack::StackBuilder::postgres`].
    pub fn base_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }

    /// `pg_ctl start`, waiting until it accepts connections.
    pub fn start_again(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &path(&log),
                "-w",
                "-t",
                "60",
                "-o",
                &options,
                "start",
            ],
        );
    }

    /// `pg_ctl stop -m <mode>` (`fast`: sessions ended, a clean shutdown;
    /// `immediate`: the processes killed, crash recovery at the next start).
    pub fn stop(&self, mode: &str) {
        self.run("pg_ctl", &["-D", &self.data(), "-w", "-t", "60", "-m", mode, "stop"]);
    }

    /// The server's own log, for failure reports.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn data(&self) -> String {
        path(&self.dir.path().join("data"))
    }

    fn run(&self, program: &str, args: &[&str]) {
        let binary = self.bin.join(program);
        let mut command = match self.user {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(&binary);
                command
            }
            None => Command::new(&binary),
        };
        let output = command
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("running {program}: {e}"));
        assert!(
            output.status.success(),
            "{program} {args:?} failed ({}):\n{}{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.log()
        );
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.data();
        let mut command = match self.user {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(self.bin.join("pg_ctl"));
                command
            }
            None => Command::new(self.bin.join("pg_ctl")),
        };
        let _ = command.args(["-D", &data, "-m", "immediate", "-w", "stop"]).output();
    }
}

/// `SLIPWAY_TEST_PG_BIN`, or the newest `/usr/lib/postgresql/<version>/bin` with an
/// `initdb`.
fn bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("SLIPWAY_TEST_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn path(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

//! Real processes: locating (and building, once) the binaries, starting one with its
//! output in a log file, waiting for its address file, and stopping it by PID.

use std::{
    fs::File,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use nix::{sys::signal::Signal, unistd::Pid};

/// The directory holding the binaries of the profile these tests were built with,
/// after building them once per test process (a no-op when they are fresh).
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/<test binary>
        let profile_dir = exe.parent().and_then(Path::parent).expect("profile dir").to_path_buf();
        let target_dir = profile_dir.parent().expect("target dir");
        let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        // Every binary of the workspace. Cargo unifies features over the packages and
        // targets it is asked for; naming the packages (`-p auth-service …`) left out
        // the tests crate's features (and the dev-dependencies') and compiled every
        // workspace crate a second time in each CI run. In CI (`cargo test
        // --workspace`), `--tests` makes the selection the same as the outer build's,
        // so only the binaries themselves are built here; locally it would build
        // every test target for one test file, so it is left out.
        build.args(["build", "--workspace", "--bins"]);
        if std::env::var_os("CI").is_some_and(|v| v == "true") {
            build.arg("--tests");
        }
        build.arg("--target-dir").arg(target_dir);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        // Cargo sets these for this test binary; build scripts that watch them (ring's)
        // would look changed and half the tree would be rebuilt on every run.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if [
                "CARGO_PKG_",
                "CARGO_MANIFEST_",
                "CARGO_CRATE_",
                "CARGO_BIN_",
                "CARGO_PRIMARY_",
                "CARGO_TARGET_TMPDIR",
                "OUT_DIR",
            ]
            .iter()
            .any(|prefix| key.starts_with(prefix))
            {
                build.env_remove(key.as_ref());
            }
        }
        let status = build.status().expect("running cargo build");
        assert!(status.success(), "building the binaries failed");
        profile_dir
    })
}

/// A running binary whose output goes to a log file.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
    binary: String,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    cwd: Option<PathBuf>,
}

impl Proc {
    pub fn spawn(name: &str, binary: &str, args: &[String], envs: &[(&str, String)], dir: &Path) -> Proc {
        Proc::spawn_in(name, binary, args, envs, dir, None)
    }

    /// `spawn` with `cwd` as the working directory (the test's own when `None`).
    pub fn spawn_in(
        name: &str,
        binary: &str,
        args: &[String],
        envs: &[(&str, String)],
        dir: &Path,
        cwd: Option<&Path>,
    ) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let envs: Vec<(String, String)> = envs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
        let cwd = cwd.map(Path::to_path_buf);
        let child = launch(binary, args, &envs, &log, cwd.as_deref());
        Proc {
            name: name.to_owned(),
            child,
            log,
            binary: binary.to_owned(),
            args: args.to_vec(),
            envs,
            cwd,
        }
    }

    /// The arguments it was started with.
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// The environment it was started with (beyond `SLIPWAY_LOG`).
    pub fn envs(&self) -> Vec<(&str, String)> {
        self.envs.iter().map(|(k, v)| (k.as_str(), v.clone())).collect()
    }

    /// Starts the same binary with the same arguments again (after `stop` or `kill`),
    /// appending to the same log.
    pub fn restart(&mut self) {
        self.child = launch(&self.binary, &self.args, &self.envs, &self.log, self.cwd.as_deref());
    }

    /// SIGKILL, as a crash would end it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the address the process writes once it listens.
    pub fn wait_addr(&mut self, addr_file: &Path) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(addr) = std::fs::read_to_string(addr_file)
                .ok()
                .and_then(|t| t.trim().parse().ok())
            {
                return addr;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited during start ({status}):\n{}", self.name, self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "{} did not start in 60 s:\n{}",
                self.name,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then SIGKILL after `grace`; returns whether it exited on SIGTERM.
    pub fn stop(&mut self, grace: Duration) -> bool {
        if let Ok(Some(_)) = self.child.try_wait() {
            return true;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

/// Spawns `binary` with its output appended to `log`.
fn launch(binary: &str, args: &[String], envs: &[(String, String)], log: &Path, cwd: Option<&Path>) -> Child {
    let out = File::options().create(true).append(true).open(log).expect("log file");
    let err = out.try_clone().expect("log file");
    let mut command = Command::new(bin_dir().join(binary));
    command.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
    if let Some(cwd) = cwd {
        command.current_dir(cwd);
    }
    // Tests decide every setting; nothing leaks in from the caller's environment.
    for (key, _) in std::env::vars() {
        if key.starts_with("SLIPWAY_") && key != "SLIPWAY_LOG" {
            command.env_remove(key);
        }
    }
    command.env(
        "SLIPWAY_LOG",
        std::env::var("SLIPWAY_LOG").unwrap_or_else(|_| "info".into()),
    );
    for (key, value) in envs {
        command.env(key, value);
    }
    command.spawn().unwrap_or_else(|e| panic!("starting {binary}: {e}"))
}

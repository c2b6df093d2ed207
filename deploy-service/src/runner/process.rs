//! Starting a deploy script and stopping it: an argument vector (no shell), a
//! minimal environment, the project root as working directory, its own process
//! group (so a cancel or a timeout stops everything it started), stdout and stderr
//! each in its own pipe (the log tells them apart), and, where the kernel has Landlock, no access to the paths
//! it is denied (the data dirs). A process is recognised later (after a restart of
//! the deploy service) by its id together with its start time.

use std::{
    collections::BTreeSet,
    io,
    os::fd::{AsRawFd, OwnedFd, RawFd},
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    sync::{Once, OnceLock},
    time::Duration,
};

use landlock::{ABI, Access, AccessFs, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr};

use nix::{
    sys::signal::{Signal, killpg},
    unistd::Pid,
};
use tokio::{net::unix::pipe, process::Child};

/// The whole environment a deploy script gets.
#[derive(Debug, Clone)]
pub struct ScriptEnv {
    pub path: String,
    pub home: String,
    pub lang: String,
    /// Paths the script may not touch at all (read, write, list, execute), enforced
    /// with Landlock where the kernel has it; the script's own config file stays
    /// readable. Empty: no restriction.
    pub denied: Vec<PathBuf>,
}

/// A started script: its process and the read ends of its output.
pub struct Spawned {
    pub child: Child,
    pub stdout: pipe::Receiver,
    pub stderr: pipe::Receiver,
    pub pid: i32,
}

/// Runs `script --config <config>` in `cwd`.
pub fn spawn(script: &Path, config: &Path, env: &ScriptEnv, cwd: &Path) -> io::Result<Spawned> {
    let (reader, writer) = io::pipe()?;
    let (err_reader, stderr) = io::pipe()?;
    let mut command = tokio::process::Command::new(script);
    command
        .arg("--config")
        .arg(config)
        .env_clear()
        .env("PATH", &env.path)
        .env("HOME", &env.home)
        .env("LANG", &env.lang)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(stderr)
        .process_group(0)
        .kill_on_drop(true);
    let ruleset = landlock_ruleset(&env.denied, config)?;
    if let Some(fd) = &ruleset {
        apply_in_child(&mut command, fd.as_raw_fd());
    }
    let child = command.spawn()?;
    // The command holds our copies of the pipes' write ends: without them, a read
    // end sees EOF once the script (and whatever it started) closes its output. The
    // ruleset was only needed for the fork (the child's copy closes at exec).
    drop(command);
    drop(ruleset);
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .ok_or_else(|| io::Error::other("the script exited before its process id was read"))?;
    let stdout = pipe::Receiver::from_owned_fd(OwnedFd::from(reader))?;
    let stderr = pipe::Receiver::from_owned_fd(OwnedFd::from(err_reader))?;
    Ok(Spawned {
        child,
        stdout,
        stderr,
        pid,
    })
}

/// Whether this kernel has Landlock (asked once).
pub fn landlock_supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        // Without Landlock, creating a ruleset gives no descriptor (best effort).
        Ruleset::default()
            .handle_access(AccessFs::from_all(ABI::V1))
            .and_then(Ruleset::create)
            .is_ok_and(|created| Option::<OwnedFd>::from(created).is_some())
    })
}

/// The Landlock ruleset for a script denied `denied` (none when nothing is denied, or
/// the kernel has no Landlock: then the script runs unrestricted, logged once).
///
/// Landlock only grants, and a grant on a directory covers everything beneath it. So
/// the script gets every access beneath each entry of each directory that contains a
/// denied path (recursively up to `/`), except the entries that are denied or contain
/// one, and its own config file. The price: in those containing directories (say
/// the data dir's parent) the script can use the entries that existed when it
/// started, but not list the directory or create new entries in it.
fn landlock_ruleset(denied: &[PathBuf], config: &Path) -> io::Result<Option<OwnedFd>> {
    if denied.is_empty() {
        return Ok(None);
    }
    if !landlock_supported() {
        static WARNED: Once = Once::new();
        WARNED.call_once(|| {
            tracing::warn!("this kernel has no Landlock: deploy scripts are not kept out of the data dir");
        });
        return Ok(None);
    }
    // A denied path that does not exist has nothing to protect.
    let denied: Vec<PathBuf> = denied.iter().filter_map(|p| p.canonicalize().ok()).collect();
    let containing: BTreeSet<PathBuf> = denied
        .iter()
        .flat_map(|d| d.ancestors().skip(1).map(Path::to_path_buf))
        .collect();
    let abi = ABI::V5;
    let landlock_err = |e: landlock::RulesetError| io::Error::other(format!("landlock: {e}"));
    let mut ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
        .and_then(Ruleset::create)
        .map_err(landlock_err)?;
    let mut granted: Vec<PathBuf> = Vec::new();
    for dir in &containing {
        let Ok(entries) = std::fs::read_dir(dir) else { continue };
        for entry in entries.flatten() {
            // Where the entry really leads: a symbolic link to the data dir grants nothing.
            let Ok(real) = entry.path().canonicalize() else {
                continue;
            };
            let is_denied = denied.iter().any(|d| real.starts_with(d));
            let contains_denied = denied.iter().any(|d| d.starts_with(&real));
            if !is_denied && !contains_denied {
                granted.push(real);
            }
        }
    }
    granted.push(config.to_path_buf());
    for path in granted {
        // Gone meanwhile, or not ours to open: nothing to grant.
        let Ok(fd) = PathFd::new(&path) else { continue };
        let access = if path.is_dir() {
            AccessFs::from_all(abi)
        } else {
            AccessFs::from_file(abi)
        };
        (&mut ruleset)
            .add_rule(PathBeneath::new(fd, access))
            .map_err(landlock_err)?;
    }
    Ok(ruleset.into())
}

/// Has the child restrict itself with `ruleset` between fork and exec. The descriptor
/// must stay open until the command is spawned.
#[allow(unsafe_code)] // pre_exec: the only way to run code in the child before exec
fn apply_in_child(command: &mut tokio::process::Command, ruleset: RawFd) {
    // SAFETY: the closure runs in the forked child before exec; it makes two system
    // calls and nothing else (no allocation, no lock), which is what is allowed there.
    unsafe {
        command.pre_exec(move || restrict_self(ruleset));
    }
}

/// In the child, before exec: no new privileges (Landlock's condition for an
/// unprivileged process; it also means `sudo` does not work in the script), then the
/// ruleset.
#[allow(unsafe_code)] // two system calls libc offers only as unsafe functions
fn restrict_self(ruleset: RawFd) -> io::Result<()> {
    // SAFETY: plain system calls with integer arguments.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0u32) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Sends `signal` to every process of the group led by `pgid`.
pub fn signal_group(pgid: i32, signal: Signal) {
    if pgid > 1 {
        // ESRCH (the group is gone) is what we want anyway.
        let _ = killpg(Pid::from_raw(pgid), signal);
    }
}

/// Stops the script's process group: SIGTERM, up to `grace` for the script to exit,
/// then SIGKILL to whatever is left of the group. Returns the script's exit status.
pub async fn stop(child: &mut Child, pgid: i32, grace: Duration) -> Option<ExitStatus> {
    signal_group(pgid, Signal::SIGTERM);
    let status = match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => status.ok(),
        Err(_) => None,
    };
    signal_group(pgid, Signal::SIGKILL);
    match status {
        Some(status) => Some(status),
        None => {
            let _ = child.start_kill();
            child.wait().await.ok()
        }
    }
}

/// The start time of process `pid` in clock ticks after boot (Linux `/proc`).
pub fn start_time(pid: i32) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from its end.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    // Field 22 of the whole line is the 20th after the name.
    fields.get(19)?.parse().ok()
}

/// Whether process `pid` is still the one that started at `start`.
pub fn is_alive(pid: i32, start: Option<i64>) -> bool {
    pid > 1 && start.is_some() && start_time(pid) == start
}

/// Stops an orphaned script left by a deploy service that died, if it is still the
/// same process: SIGTERM to its group, up to `grace`, then SIGKILL. Returns whether
/// it was running.
pub async fn stop_orphan(pid: i32, start: Option<i64>, grace: Duration) -> bool {
    if !is_alive(pid, start) {
        return false;
    }
    signal_group(pid, Signal::SIGTERM);
    let deadline = tokio::time::Instant::now() + grace;
    while is_alive(pid, start) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    signal_group(pid, Signal::SIGKILL);
    true
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    #[tokio::test]
    async fn scripts_get_argv_env_and_cwd_and_their_group_is_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("s.sh");
        std::fs::write(
            &script,
            "#!/bin/sh\necho \"args=$1 $2\"\necho \"cwd=$(pwd)\" >&2\nenv | sort\nsleep 30 &\nwait\n",
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let env = ScriptEnv {
            path: "/usr/bin:/bin".into(),
            home: "/nonexistent".into(),
            lang: "C.UTF-8".into(),
            denied: Vec::new(),
        };
        let mut spawned = spawn(&script, Path::new("/tmp/c.json"), &env, dir.path()).unwrap();
        let start = start_time(spawned.pid);
        assert!(is_alive(spawned.pid, start));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let status = stop(&mut spawned.child, spawned.pid, Duration::from_secs(3)).await;
        assert!(!status.unwrap().success());
        let mut text = String::new();
        spawned.stdout.read_to_string(&mut text).await.unwrap();
        spawned.stderr.read_to_string(&mut text).await.unwrap();
        assert!(text.contains("args=--config /tmp/c.json"), "{text}");
        assert!(text.contains(&format!("cwd={}", dir.path().display())), "{text}");
        let vars: Vec<&str> = text
            .lines()
            .filter(|l| l.contains('=') && !l.starts_with("args=") && !l.starts_with("cwd="))
            .map(|l| l.split('=').next().unwrap())
            .collect();
        // sh itself adds PWD (and maybe SHLVL, _): nothing from our environment.
        for var in &vars {
            assert!(
                ["HOME", "LANG", "PATH", "PWD", "SHLVL", "_", "OLDPWD"].contains(var),
                "unexpected variable {var}: {text}"
            );
        }
        assert!(!is_alive(spawned.pid, start));
    }
}

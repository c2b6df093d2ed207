//! Starting a deploy script and stopping it: an argument vector (no shell), a
//! minimal environment, the project root as working directory, its own process
//! group (so a cancel or a timeout stops everything it started), stdout and stderr
//! merged into one pipe. A process is recognised later (after a restart of the
//! deploy service) by its id together with its start time.

use std::{
    io,
    os::fd::OwnedFd,
    path::Path,
    process::{ExitStatus, Stdio},
    time::Duration,
};

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
}

/// A started script: its process and the read end of its output.
pub struct Spawned {
    pub child: Child,
    pub output: pipe::Receiver,
    pub pid: i32,
}

/// Runs `script --config <config>` in `cwd`.
pub fn spawn(script: &Path, config: &Path, env: &ScriptEnv, cwd: &Path) -> io::Result<Spawned> {
    let (reader, writer) = io::pipe()?;
    let stderr = writer.try_clone()?;
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
    let child = command.spawn()?;
    // The command holds our copies of the pipe's write end: without them, the read
    // end sees EOF once the script (and whatever it started) closes its output.
    drop(command);
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .ok_or_else(|| io::Error::other("the script exited before its process id was read"))?;
    let output = pipe::Receiver::from_owned_fd(OwnedFd::from(reader))?;
    Ok(Spawned { child, output, pid })
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
        };
        let mut spawned = spawn(&script, Path::new("/tmp/c.json"), &env, dir.path()).unwrap();
        let start = start_time(spawned.pid);
        assert!(is_alive(spawned.pid, start));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let status = stop(&mut spawned.child, spawned.pid, Duration::from_secs(3)).await;
        assert!(!status.unwrap().success());
        let mut text = String::new();
        spawned.output.read_to_string(&mut text).await.unwrap();
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

//! How a script's run ended: the outcome and exit code, told from the script's exit
//! status, a cancel, a failure, or the run lost to another replica.

use std::path::Path;

use tokio::process::Child;

use super::{STOP_GRACE, collected::Collected, process};
use crate::model::{Outcome, cut};

/// What ended the script's run, with its exit code when it exited by itself.
pub(super) struct Ended {
    pub(super) outcome: Outcome,
    pub(super) exit_code: Option<i64>,
    /// Another replica ended the run (its owner's lease had expired): the script was
    /// stopped and nothing more is written for the run.
    pub(super) lost: bool,
}

impl Ended {
    pub(super) fn failed(reason: impl Into<String>) -> Ended {
        Ended {
            outcome: Outcome::Failed(reason.into()),
            exit_code: None,
            lost: false,
        }
    }

    pub(super) fn cancelled(by: &str) -> Ended {
        Ended {
            outcome: Outcome::Cancelled(format!("cancelled by {by}")),
            exit_code: None,
            lost: false,
        }
    }

    pub(super) fn lost() -> Ended {
        Ended {
            lost: true,
            ..Ended::failed(crate::storage::RUNNER_LOST)
        }
    }
}

/// The outcome of a script that exited by itself.
pub(super) fn exit_outcome(status: Option<std::io::Result<std::process::ExitStatus>>, collected: &Collected) -> Ended {
    use std::os::unix::process::ExitStatusExt;
    let last = collected
        .last_output
        .as_deref()
        .map(|l| format!("; last output: {}", cut(l.trim(), 500)))
        .unwrap_or_default();
    match status {
        Some(Ok(status)) => match (status.code(), status.signal()) {
            (Some(0), _) => Ended {
                outcome: Outcome::Exited,
                exit_code: Some(0),
                lost: false,
            },
            (Some(code), _) => Ended {
                outcome: Outcome::Failed(format!("the deploy script exited with status {code}{last}")),
                exit_code: Some(i64::from(code)),
                lost: false,
            },
            (None, Some(signal)) => Ended::failed(format!("the deploy script was killed by signal {signal}{last}")),
            (None, None) => Ended::failed("the deploy script ended without an exit status"),
        },
        Some(Err(error)) => Ended::failed(format!("waiting for the deploy script failed: {error}")),
        None => Ended::failed("the deploy script ended without an exit status"),
    }
}

/// Checks that the script is an executable file.
pub(super) fn check_script(script: &Path, relative: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(script) {
        Ok(meta) if !meta.is_file() => Err(format!("the deploy script {relative} is not a file")),
        Ok(meta) if meta.permissions().mode() & 0o111 == 0 => {
            Err(format!("the deploy script {relative} is not executable"))
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(format!("the deploy script {relative} does not exist"))
        }
        Err(e) => Err(format!("the deploy script {relative} cannot be read: {e}")),
    }
}

/// Reaps the script if it has not been waited for (it always has exited or been
/// stopped by now, but a failure path may leave it running).
pub(super) async fn ensure_gone(child: &mut Child, pid: i32) {
    if let Ok(None) = child.try_wait() {
        process::stop(child, pid, STOP_GRACE).await;
    }
}

//! The runner: runs one deployment's deploy script from start to end (contract
//! 4.6-4.9, safely). It mints the run's deployment token, writes the config file,
//! starts the script, applies the step reports the script prints, enforces the time
//! limit, stops the script on cancel or shutdown, and then ends the deployment,
//! publishes its deployed service, scrubs the config file and revokes the token.
//! Every other line the script prints goes, redacted, to the run's log (`crate::logs`),
//! which is complete before the deployment ends.

mod output;
#[cfg(test)]
mod output_props;
mod process;
mod secret_file;

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use crate::model::DeploymentId;
use secrecy::ExposeSecret;
use serde_json::Value;
use tokio::{process::Child, sync::mpsc, time::Instant};
use tokio_util::sync::CancellationToken;

pub use output::MAX_LINE_BYTES;
pub use process::{ScriptEnv, stop_orphan};
pub use secret_file::{prepare_dir, scrub_dir};

use self::{
    output::{Item, Line},
    secret_file::{Contents, SecretFile},
};
use crate::{
    backends::{Backends, DeploymentToken},
    logs::{Logs, RunLog, Stream},
    model::{Outcome, Report, cut},
    plan::MAX_TIMEOUT_SECS,
    storage::{ReportRefused, Store, deployments},
};

/// How long a deployment token outlives the run's time limit.
const TOKEN_MARGIN_SECS: i64 = 300;
/// How long a stopped script gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// How long output is still waited for after the script exited and nothing more
/// arrives (something it started in the background may hold the pipe open).
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(5);
/// Most reports stored in one transaction.
const BATCH: usize = 256;
/// How long a run waits for a database that cannot be reached to store its script's
/// step reports before it ends the run.
const STORE_PATIENCE: Duration = Duration::from_secs(30);

/// Where and how scripts run.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    pub services_dir: PathBuf,
    pub project_root: PathBuf,
    /// The private directory for config files.
    pub runs_dir: PathBuf,
    /// The gateway's URL, for `steps_url` and `deployment_finish_url`.
    pub public_url: String,
    pub env: ScriptEnv,
    pub ssh_auth_sock: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Runner {
    store: Store,
    backends: Backends,
    logs: Logs,
    config: RunnerConfig,
}

/// What ended the script's run, with its exit code when it exited by itself.
struct Ended {
    outcome: Outcome,
    exit_code: Option<i64>,
}

impl Ended {
    fn failed(reason: impl Into<String>) -> Ended {
        Ended {
            outcome: Outcome::Failed(reason.into()),
            exit_code: None,
        }
    }
}

/// What the run collected from the script's output.
#[derive(Default)]
struct Collected {
    deployed_service: Option<Value>,
    last_output: Option<String>,
    /// The run's deployment token, blanked out of anything the script prints.
    secret: Option<secrecy::SecretString>,
}

impl Collected {
    /// `text` with the run's deployment token replaced, should the script print it.
    fn redact(&self, text: String) -> String {
        match &self.secret {
            Some(secret) if !secret.expose_secret().is_empty() && text.contains(secret.expose_secret()) => {
                text.replace(secret.expose_secret(), "[redacted]")
            }
            _ => text,
        }
    }

    /// `value` with the run's deployment token replaced in every string and key.
    fn redact_value(&self, value: &mut Value) {
        match value {
            Value::String(text) => *text = self.redact(std::mem::take(text)),
            Value::Array(items) => items.iter_mut().for_each(|item| self.redact_value(item)),
            Value::Object(map) => {
                let entries = std::mem::take(map);
                for (key, mut item) in entries {
                    self.redact_value(&mut item);
                    map.insert(self.redact(key), item);
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }
}

impl Runner {
    pub fn new(store: Store, backends: Backends, logs: Logs, config: RunnerConfig) -> Runner {
        Runner {
            store,
            backends,
            logs,
            config,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn backends(&self) -> &Backends {
        &self.backends
    }

    /// Runs a deployment the queue has just started, to its end. `cancel` carries the
    /// name of a user who cancels it; `shutdown` stops it with the service;
    /// `script_running` is cleared once the script has ended.
    pub async fn run(
        &self,
        deployment: deployments::Model,
        cancel: mpsc::Receiver<String>,
        shutdown: CancellationToken,
        script_running: &AtomicBool,
    ) -> deployments::Model {
        let id = deployment.id;
        let mut token_id = None;
        let mut collected = Collected::default();
        let mut log = self.logs.run_log(id);
        let ended = self
            .execute(&deployment, cancel, &shutdown, &mut token_id, &mut collected, &mut log)
            .await;
        script_running.store(false, Ordering::SeqCst);
        // Every line stored before the deployment ends: a reader that sees it ended
        // has the whole output.
        log.close().await;
        let ended_row = match self.finished_early(id).await {
            Some(row) => self.after_finish(row, ended, &collected).await,
            None => {
                let outcome = self.publish(&deployment, ended.outcome, &collected).await;
                let row = self.end(id, &outcome, ended.exit_code).await;
                tracing::info!(%id, service = %deployment.service, outcome = ?outcome, "deployment ended");
                row
            }
        };
        if let Some(token_id) = token_id {
            self.revoke(&token_id).await;
        }
        ended_row.unwrap_or(deployment)
    }

    /// The deployment, if it was finished (`FinishDeployment`) while its script ran.
    async fn finished_early(&self, id: DeploymentId) -> Option<deployments::Model> {
        match self.store.get_deployment(id).await {
            Ok(row) => row.filter(|row| row.finished.is_some()),
            Err(error) => {
                tracing::error!(%id, %error, "cannot read the deployment after its run");
                None
            }
        }
    }

    /// The script of a deployment finished while it ran has ended: the outcome
    /// recorded at finish stands. The deployed service is published only when the
    /// deployment succeeded and the script then exited 0.
    async fn after_finish(
        &self,
        row: deployments::Model,
        ended: Ended,
        collected: &Collected,
    ) -> Option<deployments::Model> {
        let id = row.id;
        if ended.outcome != Outcome::Exited {
            tracing::warn!(
                %id,
                status = %row.status,
                script = ?ended.outcome,
                "the deploy script ended badly after its deployment was finished; the outcome is kept"
            );
        } else {
            tracing::info!(%id, status = %row.status, "the deploy script of a finished deployment exited");
        }
        if let Err(error) = self.store.set_exit_code(id, ended.exit_code).await {
            tracing::error!(%id, %error, "exit code not stored");
        }
        let succeeded = row.status == crate::model::Status::Succeeded;
        if let (true, Outcome::Exited, Some(config)) = (succeeded, &ended.outcome, &collected.deployed_service)
            && let Err(error) = self.backends.publish(id, &row.service, config).await
        {
            tracing::error!(%id, %error, "deployed service of a finished deployment not published");
        }
        self.store.get_deployment(id).await.ok().flatten().or(Some(row))
    }

    async fn execute(
        &self,
        deployment: &deployments::Model,
        mut cancel: mpsc::Receiver<String>,
        shutdown: &CancellationToken,
        token_id: &mut Option<String>,
        collected: &mut Collected,
        log: &mut RunLog,
    ) -> Ended {
        let id = deployment.id;
        let timeout = deployment
            .timeout_secs
            .unwrap_or(MAX_TIMEOUT_SECS)
            .clamp(1, MAX_TIMEOUT_SECS);
        let deadline = Instant::now() + Duration::from_secs(timeout.unsigned_abs());
        let relative = deployment.deploy_script.clone().unwrap_or_default();
        let script = self.config.services_dir.join(&relative);
        if let Err(reason) = check_script(&script, &relative) {
            return Ended::failed(reason);
        }
        let lifetime = (timeout + TOKEN_MARGIN_SECS).clamp(60, MAX_TIMEOUT_SECS);
        let token = match self.mint(deployment, lifetime.unsigned_abs()).await {
            Ok(token) => token,
            Err(reason) => return Ended::failed(reason),
        };
        *token_id = Some(token.id.clone());
        if let Err(error) = self.store.set_token(id, &token.id).await {
            tracing::error!(%id, %error, "token id not stored");
        }
        let file = match self.write_config(deployment, &token, &relative) {
            Ok(file) => file,
            Err(error) => return Ended::failed(format!("could not write the deploy script's config file: {error}")),
        };
        collected.secret = Some(token.token.clone());
        drop(token);
        if let Ok(by) = cancel.try_recv() {
            return cancelled(&by);
        }
        let spawned = match process::spawn(&script, file.path(), &self.config.env, &self.config.project_root) {
            Ok(spawned) => spawned,
            Err(error) => return Ended::failed(format!("could not start the deploy script {relative}: {error}")),
        };
        let (mut child, pid) = (spawned.child, spawned.pid);
        if let Err(error) = self
            .store
            .set_process(id, i64::from(pid), process::start_time(pid))
            .await
        {
            tracing::error!(%id, %error, "process id not stored");
        }
        tracing::info!(%id, pid, script = %relative, "deploy script started");
        let (items_tx, mut items) = mpsc::channel(BATCH);
        let readers = [
            tokio::spawn(output::read(spawned.stdout, Stream::Stdout, items_tx.clone())),
            tokio::spawn(output::read(spawned.stderr, Stream::Stderr, items_tx)),
        ];
        let mut exited = None;
        let mut output_open = true;
        let mut drain_deadline = deadline;
        let ended = loop {
            tokio::select! {
                Some(by) = cancel.recv() => {
                    process::stop(&mut child, pid, STOP_GRACE).await;
                    break cancelled(&by);
                }
                () = shutdown.cancelled() => {
                    process::stop(&mut child, pid, STOP_GRACE).await;
                    break Ended::failed("the deploy service stopped during the run; the deploy script was stopped");
                }
                () = tokio::time::sleep_until(deadline) => {
                    process::stop(&mut child, pid, STOP_GRACE).await;
                    break Ended::failed(format!("timed out after {timeout} s; the deploy script was stopped"));
                }
                status = child.wait(), if exited.is_none() => {
                    exited = Some(status);
                    if !output_open {
                        break exit_outcome(exited.take(), collected);
                    }
                    drain_deadline = Instant::now() + DRAIN_AFTER_EXIT;
                }
                () = tokio::time::sleep_until(drain_deadline), if exited.is_some() => {
                    tracing::warn!(%id, "output still open after the script exited; no longer read");
                    break exit_outcome(exited.take(), collected);
                }
                item = items.recv(), if output_open => match item {
                    None => {
                        output_open = false;
                        if exited.is_some() {
                            break exit_outcome(exited.take(), collected);
                        }
                    }
                    Some(first) => {
                        if exited.is_some() {
                            // Still printing: keep reading.
                            drain_deadline = Instant::now() + DRAIN_AFTER_EXIT;
                        }
                        if let Err(reason) = self.handle(id, first, &mut items, collected, log).await {
                            process::stop(&mut child, pid, STOP_GRACE).await;
                            break Ended::failed(reason);
                        }
                    }
                },
            }
        };
        for reader in readers {
            reader.abort();
        }
        ensure_gone(&mut child, pid).await;
        drop(file);
        ended
    }

    /// Handles one output item and whatever else is already waiting, storing their
    /// reports in one transaction and passing their log lines on to the run's log. An
    /// error ends the run for that reason.
    async fn handle(
        &self,
        id: DeploymentId,
        first: Item,
        items: &mut mpsc::Receiver<Item>,
        collected: &mut Collected,
        log: &mut RunLog,
    ) -> Result<(), String> {
        let mut reports: Vec<Report> = Vec::new();
        let mut next = Some(first);
        let mut refused = None;
        while let Some(item) = next.take() {
            match item {
                Item::Line(_, _, Line::Report(mut report)) => {
                    report.message = collected.redact(report.message);
                    reports.push(report);
                }
                Item::Line(stream, time, Line::Log(text)) => {
                    let text = collected.redact(text);
                    log.push(stream, time, &text);
                    if !text.trim().is_empty() {
                        collected.last_output = Some(text);
                    }
                }
                Item::Line(_, _, Line::DeployedService(mut config)) => {
                    collected.redact_value(&mut config);
                    if let Err(error) = self.store.set_deployed_config(id, config.clone()).await {
                        tracing::error!(%id, %error, "deployed service config not stored");
                    }
                    collected.deployed_service = Some(config);
                }
                Item::Line(stream, time, Line::Refused(reason)) => {
                    let reason = collected.redact(reason);
                    log.push(stream, time, &format!("[slipway: {reason}]"));
                    refused = Some(reason);
                }
                Item::TooLong(stream, start) => {
                    let start = collected.redact(String::from_utf8_lossy(&start).into_owned());
                    let reason = format!("the deploy script printed a line longer than {MAX_LINE_BYTES} bytes");
                    log.push(stream, crate::model::now(), &start);
                    log.push(Stream::Marker, crate::model::now(), &format!("[slipway: {reason}]"));
                    refused = Some(reason)
                }
                Item::Failed(reason) => refused = Some(reason),
            }
            if refused.is_some() || reports.len() >= BATCH {
                break;
            }
            next = items.try_recv().ok();
        }
        log.flush();
        // A database that cannot be reached for now (restarting, a connection lost) is
        // waited for, up to STORE_PATIENCE, so that a blip does not end the run; the
        // script meanwhile blocks on its full output pipe.
        let give_up = tokio::time::Instant::now() + STORE_PATIENCE;
        let mut wait = Duration::from_millis(200);
        while !reports.is_empty() {
            match self.store.apply_reports(id, &reports).await {
                Ok(_) => break,
                Err(ReportRefused::Finished) => {
                    tracing::warn!(
                        %id,
                        count = reports.len(),
                        "reports after the deployment finished; ignored"
                    );
                    break;
                }
                Err(ReportRefused::Db(error))
                    if common::db::is_unavailable(&error) && tokio::time::Instant::now() < give_up =>
                {
                    tracing::warn!(%id, %error, "the database is unavailable; storing the step reports again");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
                Err(error) => {
                    tracing::error!(%id, %error, "step reports not stored");
                    return Err("the deploy service could not store a step report".into());
                }
            }
        }
        refused.map_or(Ok(()), Err)
    }

    async fn mint(&self, deployment: &deployments::Model, lifetime: u64) -> Result<DeploymentToken, String> {
        let mut attempt = 0;
        loop {
            match self
                .backends
                .mint_token(deployment.id, &deployment.service, lifetime)
                .await
            {
                Ok(token) => return Ok(token),
                Err(error) if attempt < 2 => {
                    tracing::warn!(id = %deployment.id, %error, "minting the deployment token failed; retrying");
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(error) => return Err(format!("could not get a deployment token: {error}")),
            }
        }
    }

    fn write_config(
        &self,
        deployment: &deployments::Model,
        token: &DeploymentToken,
        relative: &str,
    ) -> std::io::Result<SecretFile> {
        let base = self.config.public_url.trim_end_matches('/');
        let contents = Contents {
            deployment_id: deployment.id.to_string(),
            access_token: token.token.expose_secret(),
            deploy_script: relative.to_owned(),
            steps_url: format!("{base}/steps/"),
            deployment_finish_url: format!("{base}/deployments/finish/"),
            context: &deployment.context,
            path_for_deploy: &self.config.env.path,
            ssh_auth_sock: self.config.ssh_auth_sock.as_deref(),
        };
        SecretFile::write(&self.config.runs_dir, deployment.id, &contents)
    }

    /// Publishes the deployed service of a run that is about to succeed; a failed
    /// publish fails the deployment.
    async fn publish(&self, deployment: &deployments::Model, outcome: Outcome, collected: &Collected) -> Outcome {
        let (Outcome::Exited, Some(config)) = (&outcome, &collected.deployed_service) else {
            return outcome;
        };
        match self.store.failed_step(deployment.id).await {
            Ok(None) => {}
            Ok(Some(_)) => return outcome,
            Err(error) => tracing::error!(id = %deployment.id, %error, "cannot check the steps before publishing"),
        }
        match self.backends.publish(deployment.id, &deployment.service, config).await {
            Ok(()) => outcome,
            Err(error) => Outcome::Failed(format!(
                "the deploy script succeeded but its deployed service was not published: {error}"
            )),
        }
    }

    /// Ends the deployment, retrying while the database is unreachable.
    pub async fn end(&self, id: DeploymentId, outcome: &Outcome, exit_code: Option<i64>) -> Option<deployments::Model> {
        let mut wait = Duration::from_millis(200);
        for attempt in 0..6 {
            match self.store.end_deployment(id, outcome, exit_code, false).await {
                Ok(row) => return row,
                Err(error) => {
                    tracing::error!(%id, attempt, %error, "deployment not ended; retrying");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
            }
        }
        tracing::error!(
            %id,
            "deployment left running; the next start of the deploy service ends it"
        );
        None
    }

    /// Revokes a run's deployment token, retrying a few times.
    pub async fn revoke(&self, token_id: &str) {
        for attempt in 0..3 {
            match self.backends.revoke_token(token_id).await {
                Ok(()) => return,
                Err(error) => {
                    tracing::warn!(token_id, attempt, %error, "deployment token not revoked; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        tracing::error!(token_id, "deployment token not revoked; it expires on its own");
    }
}

fn cancelled(by: &str) -> Ended {
    Ended {
        outcome: Outcome::Cancelled(format!("cancelled by {by}")),
        exit_code: None,
    }
}

/// The outcome of a script that exited by itself.
fn exit_outcome(status: Option<std::io::Result<std::process::ExitStatus>>, collected: &Collected) -> Ended {
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
            },
            (Some(code), _) => Ended {
                outcome: Outcome::Failed(format!("the deploy script exited with status {code}{last}")),
                exit_code: Some(i64::from(code)),
            },
            (None, Some(signal)) => Ended::failed(format!("the deploy script was killed by signal {signal}{last}")),
            (None, None) => Ended::failed("the deploy script ended without an exit status"),
        },
        Some(Err(error)) => Ended::failed(format!("waiting for the deploy script failed: {error}")),
        None => Ended::failed("the deploy script ended without an exit status"),
    }
}

/// Checks that the script is an executable file.
fn check_script(script: &Path, relative: &str) -> Result<(), String> {
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
async fn ensure_gone(child: &mut Child, pid: i32) {
    if let Ok(None) = child.try_wait() {
        process::stop(child, pid, STOP_GRACE).await;
    }
}

//! One run's script from its token to its exit: mints the deployment token, writes
//! the config file, starts the script, applies the step reports it prints (in
//! batches), passes its other lines to the run's log, and stops it on cancel,
//! timeout, shutdown or when the run is lost to another replica.

use std::time::Duration;

use secrecy::ExposeSecret;
use tokio::{sync::mpsc, time::Instant};

use super::{
    BATCH, DRAIN_AFTER_EXIT, MAX_LINE_BYTES, Run, Runner, STOP_GRACE, STORE_PATIENCE, TOKEN_MARGIN_SECS,
    collected::Collected,
    ended::{Ended, check_script, ensure_gone, exit_outcome},
    output::{self, Item, Line},
    process,
    secret_file::{Contents, SecretFile},
};
use crate::{
    backends::DeploymentToken,
    logs::{RunLog, Stream},
    model::{DeploymentId, Report},
    plan::MAX_TIMEOUT_SECS,
    storage::{Fenced, RUNNER_LOST, ReportRefused, deployments},
};

impl Runner {
    /// Mints the run's token, writes the config file, runs the script to its end
    /// (or until it is cancelled, times out, the service stops or the run is lost)
    /// and returns how it ended.
    pub(super) async fn execute(
        &self,
        deployment: &deployments::Model,
        run: &mut Run,
        token_id: &mut Option<String>,
        collected: &mut Collected,
        log: &mut RunLog,
    ) -> Ended {
        let id = deployment.id;
        let claim = &run.claim;
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
        match self.store.set_token(id, claim, &token.id).await {
            Ok(()) => {}
            Err(Fenced::Lost) => return Ended::lost(),
            Err(error) => tracing::error!(%id, %error, "token id not stored"),
        }
        let file = match self.write_config(deployment, &token, &relative) {
            Ok(file) => file,
            Err(error) => return Ended::failed(format!("could not write the deploy script's config file: {error}")),
        };
        collected.secret = Some(token.token.clone());
        drop(token);
        if let Ok(by) = run.cancel.try_recv() {
            return Ended::cancelled(&by);
        }
        if run.lost.is_cancelled() {
            return Ended::lost();
        }
        let spawned = match process::spawn(&script, file.path(), &self.config.env, &self.config.project_root) {
            Ok(spawned) => spawned,
            Err(error) => return Ended::failed(format!("could not start the deploy script {relative}: {error}")),
        };
        let (mut child, pid) = (spawned.child, spawned.pid);
        match self
            .store
            .set_process(id, claim, i64::from(pid), process::start_time(pid))
            .await
        {
            Ok(()) => {}
            Err(Fenced::Lost) => run.lost.cancel(),
            Err(error) => tracing::error!(%id, %error, "process id not stored"),
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
                Some(by) = run.cancel.recv() => {
                    process::stop(&mut child, pid, STOP_GRACE).await;
                    break Ended::cancelled(&by);
                }
                () = run.lost.cancelled() => {
                    process::stop(&mut child, pid, STOP_GRACE).await;
                    break Ended::lost();
                }
                () = run.shutdown.cancelled() => {
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
                        if let Err(reason) = self.handle(id, run, first, &mut items, collected, log).await {
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
        if run.lost.is_cancelled() { Ended::lost() } else { ended }
    }

    /// Handles one output item and whatever else is already waiting, storing their
    /// reports in one transaction and passing their log lines on to the run's log. An
    /// error ends the run for that reason.
    async fn handle(
        &self,
        id: DeploymentId,
        run: &Run,
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
                    match self.store.set_deployed_config(id, &run.claim, config.clone()).await {
                        Ok(()) => {}
                        Err(Fenced::Lost) => run.lost.cancel(),
                        Err(error) => tracing::error!(%id, %error, "deployed service config not stored"),
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
            match self.store.apply_reports(id, &reports, Some(&run.claim)).await {
                Ok(_) => break,
                Err(ReportRefused::Lost) => {
                    run.lost.cancel();
                    return Err(RUNNER_LOST.into());
                }
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

    pub(super) async fn mint(&self, deployment: &deployments::Model, lifetime: u64) -> Result<DeploymentToken, String> {
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
}

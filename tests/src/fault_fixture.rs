//! The fault tests' fixture: a stack whose deploy scripts report steps through the
//! gateway (each answer written down), the steady load and the watchers around it,
//! the faults' bookkeeping, and the checks at the end: nothing acknowledged lost,
//! every deployment ended with a reason, watchers equal to the stored events.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use reqwest::Method;
use serde_json::{Value, json};

use crate::{
    Backend, Stack,
    fault_load::{self, BACKEND_TIMEOUT, Load, Target},
    fault_record::{Answer, Fault, Recorder},
    fault_watch::{self, Watchers},
    private_postgres::PrivatePostgres,
    stack::{Process, StackBuilder},
    support,
};

/// The services under load; each script reports [`HTTP_STEPS`] through the gateway
/// and one step on its output.
/// Everything answers through the gateway again within this of the restarted
/// process serving by itself (its own health check) or the database accepting
/// connections. A restarted auth service hashes the waiting logins first, and the
/// registry and deploy service are ready only once they hear the revocation feed
/// again: on this 2-core machine under the tests' own load, 2.1 to 4.2 s were seen.
pub const RECOVERY: Duration = Duration::from_secs(5);

pub const SERVICES: &[&str] = &["alpha", "beta", "gamma"];
pub const HTTP_STEPS: &[&str] = &["one", "two", "three"];

/// `SLIPWAY_FAULTS_LONG=1`: more rounds, longer outages.
pub fn long() -> bool {
    std::env::var("SLIPWAY_FAULTS_LONG").is_ok_and(|v| v == "1")
}

/// How long a service stays down, and the steady time around each fault.
pub fn down_time() -> Duration {
    Duration::from_millis(if long() { 4000 } else { 1500 })
}

pub fn steady_time() -> Duration {
    Duration::from_millis(if long() { 5000 } else { 1000 })
}

/// A script that reports each of [`HTTP_STEPS`] with `curl` (the answer written to
/// `<acks>/<deployment id>`: step, HTTP status, curl's exit code, times sent and
/// answered), then one step
/// on its output.
fn script(acks: &Path) -> String {
    let steps = HTTP_STEPS.join(" ");
    let acks = acks.display();
    format!(
        r#"#!/bin/sh
url=$(sed -n 's/^  "steps_url": "\(.*\)",$/\1/p' "$2")
token=$(sed -n 's/^  "access_token": "\(.*\)",$/\1/p' "$2")
id=$(sed -n 's/^  "deployment_id": "\([0-9]*\)",$/\1/p' "$2")
for step in {steps}; do
  sleep 0.1
  now=$(date -u +%Y-%m-%dT%H:%M:%S.%6NZ)
  began=$(date +%s.%N)
  answer=$(curl -s -o /dev/null --max-time 5 -w '%{{http_code}} %{{exitcode}}' \
    -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    -d "{{\"name\": \"$step\", \"state\": \"success\", \"started\": \"$now\", \"finished\": \"$now\", \"message\": \"$step of $id\"}}" "$url")
  echo "$step $answer $began $(date +%s.%N)" >> "{acks}/$id"
  echo "reported $step: $answer"
done
echo "{{\"name\": \"four\", \"state\": \"success\", \"message\": \"four of $id\"}}"
"#
    )
}

/// The services directory: [`SERVICES`], each with the reporting script.
pub fn services(root: &Path) {
    let acks = acks_dir(root.parent().expect("the stack dir"));
    std::fs::create_dir_all(&acks).unwrap();
    let mut steps: Vec<Value> = HTTP_STEPS.iter().map(|s| json!({"name": s})).collect();
    steps.push(json!({"name": "four"}));
    for name in SERVICES {
        support::write_service(root, name, json!({"steps": steps}), &script(&acks));
    }
}

fn acks_dir(stack_dir: &Path) -> PathBuf {
    stack_dir.join("acks")
}

/// A stack builder for these tests: the services, the gateway's backend deadline,
/// and room for every service's runs.
pub fn builder<'a>(backend: Backend) -> StackBuilder<'a> {
    Stack::builder(backend)
        .services(services)
        .env(
            Process::Gateway,
            "SLIPWAY_BACKEND_TIMEOUT_MS",
            BACKEND_TIMEOUT.as_millis().to_string(),
        )
        .env(Process::Deploy, "SLIPWAY_MAX_RUNNING", "6")
        .env(Process::Deploy, "SLIPWAY_MAX_RUNNING_PER_SERVICE", "2")
}

/// The load, the watchers and what they record, over one stack.
pub struct Faults {
    pub recorder: Arc<Recorder>,
    pub target: Target,
    pub load: Load,
    pub watchers: Watchers,
    acks: PathBuf,
    gateway_lives: usize,
}

impl Faults {
    /// Mints the tokens, opens the watchers and starts the load.
    pub async fn start(stack: &Stack) -> Faults {
        let admin = stack.admin_token().await;
        let mut services = Vec::new();
        for name in SERVICES {
            services.push((name.to_string(), support::service_token(stack, &admin, name).await));
        }
        let target = Target::new(stack.gateway, admin.clone(), services);
        let recorder = Arc::new(Recorder::default());
        let watchers = Watchers::start(stack.gateway, &admin);
        let every = Duration::from_millis(if long() { 150 } else { 250 });
        let load = Load::start(&target, &recorder, every);
        let faults = Faults {
            recorder,
            target,
            load,
            watchers,
            acks: acks_dir(stack.dir.path()),
            gateway_lives: 1,
        };
        faults.wait_answering(Duration::from_secs(30)).await;
        faults
    }

    /// Waits until every path answers 2xx and every watcher is connected; returns how
    /// long that took.
    pub async fn wait_answering(&self, within: Duration) -> Duration {
        let flags = self.watchers.flags();
        let all = move || flags.iter().all(|f| f.load(std::sync::atomic::Ordering::SeqCst));
        fault_load::wait_answering(&self.target, within, all).await
    }

    /// A steady phase of `time`.
    pub async fn steady(&self, time: Duration) {
        self.recorder.phase("steady");
        tokio::time::sleep(time).await;
    }

    /// SIGKILLs one process, keeps it down, starts it again at the same address and
    /// waits until everything answers; a token revoked before stays refused.
    pub async fn kill_and_restart(&mut self, stack: &mut Stack, name: &str) {
        fault_load::revoke_fresh(&self.target, &self.load.shared).await;
        self.recorder.phase(format!("{name} down"));
        let killed = Instant::now();
        stack.proc(name).kill();
        tokio::time::sleep(down_time()).await;
        self.recorder.phase(format!("{name} restarting"));
        let restarted = Instant::now();
        stack.respawn(name).await;
        stack.wait_serving(name).await;
        let start = restarted.elapsed();
        let recovery = self.wait_answering(Duration::from_secs(30)).await;
        if name == "gateway" {
            self.gateway_lives += 1;
        }
        self.recorder.fault(Fault {
            name: format!("SIGKILL {name}"),
            down: restarted - killed,
            start,
            recovery,
        });
    }

    /// Stops the test's PostgreSQL server (`pg_ctl stop -m <mode>`) under the load,
    /// keeps it down, starts it again and waits until everything answers.
    pub async fn restart_database(&mut self, postgres: &PrivatePostgres, mode: &str) {
        self.recorder.phase(format!("postgres -m {mode} down"));
        let stopped = Instant::now();
        tokio::task::block_in_place(|| postgres.stop(mode));
        tokio::time::sleep(down_time()).await;
        self.recorder.phase(format!("postgres -m {mode} restarting"));
        let restarted = Instant::now();
        tokio::task::block_in_place(|| postgres.start_again());
        let start = restarted.elapsed();
        let recovery = self.wait_answering(Duration::from_secs(30)).await;
        self.recorder.fault(Fault {
            name: format!("postgres stop -m {mode}"),
            down: restarted - stopped,
            start,
            recovery,
        });
    }

    /// Holds `LOCK TABLE <table> IN ACCESS EXCLUSIVE MODE` on `database_url` for `time`
    /// under the load, then waits until everything answers.
    pub async fn lock_table(&mut self, database_url: &str, table: &str, time: Duration) {
        use sea_orm::{ConnectionTrait, TransactionTrait};
        let db = sea_orm::Database::connect(database_url)
            .await
            .expect("connecting to lock");
        let txn = db.begin().await.expect("a transaction");
        self.recorder.phase(format!("{table} locked down"));
        let locked = Instant::now();
        txn.execute_unprepared(&format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
            .await
            .expect("locking the table");
        tokio::time::sleep(time).await;
        txn.commit().await.expect("releasing the lock");
        self.recorder.phase(format!("{table} released"));
        let released = Instant::now();
        let recovery = self.wait_answering(Duration::from_secs(30)).await;
        self.recorder.fault(Fault {
            name: format!("{table} locked"),
            down: released - locked,
            start: Duration::ZERO,
            recovery,
        });
        let _ = db.close().await;
    }

    /// Stops the load, waits until every deployment has ended and the watchers have
    /// caught up, prints the figures and returns every problem found, a fault after
    /// which everything answered again only later than `recovery` included.
    pub async fn finish(self, stack: &Stack, recovery: Duration) -> Vec<String> {
        let slow: Vec<String> = self
            .recorder
            .faults()
            .into_iter()
            .filter(|fault| fault.recovery > recovery)
            .map(|fault| {
                format!(
                    "{}: everything answered again only after {:?}",
                    fault.name, fault.recovery
                )
            })
            .collect();
        let mut problems = self.check(stack).await;
        problems.extend(slow);
        problems
    }

    async fn check(self, stack: &Stack) -> Vec<String> {
        let Faults {
            recorder,
            target,
            load,
            watchers,
            acks,
            gateway_lives,
        } = self;
        let shared = load.stop().await;
        let mut problems = Vec::new();
        let deployments = wait_all_ended(&target).await;
        let acked_starts: Vec<i64> = shared.started.lock().unwrap().iter().map(|(id, _)| *id).collect();
        let mut lost = 0;
        for id in &acked_starts {
            if !deployments.iter().any(|d| id_of(d) == *id) {
                lost += 1;
                problems.push(format!("deployment {id} was answered 200 but is not stored"));
            }
        }
        for d in &deployments {
            let status = d["status"].as_str().unwrap_or_default();
            if ![
                "DEPLOYMENT_STATUS_SUCCEEDED",
                "DEPLOYMENT_STATUS_FAILED",
                "DEPLOYMENT_STATUS_CANCELLED",
            ]
            .contains(&status)
            {
                problems.push(format!("deployment left {status}: {d}"));
            }
            let reason = d["failureReason"].as_str().unwrap_or_default();
            if status != "DEPLOYMENT_STATUS_SUCCEEDED" && reason.is_empty() {
                problems.push(format!("deployment ended {status} without a reason: {d}"));
            }
        }
        let acks = read_acks(&acks, &recorder);
        let mut acked_steps = 0;
        let mut steps_of: std::collections::HashMap<i64, Vec<Value>> = Default::default();
        for (id, step, answer) in &acks {
            if *answer != Answer::Ok {
                continue;
            }
            acked_steps += 1;
            if !steps_of.contains_key(id) {
                let path = format!("/v1/deployments/{id}/steps");
                let (answer, body) = target.call(Method::GET, &path, Some(&target.admin), None).await;
                assert_eq!(answer, Answer::Ok, "{path}: {body}");
                steps_of.insert(*id, body["body"]["steps"].as_array().cloned().unwrap_or_default());
            }
            let stored = steps_of[id].iter().any(|s| {
                s["name"] == step.as_str() && s["state"] == "success" && s["message"] == format!("{step} of {id}")
            });
            if !stored {
                lost += 1;
                problems.push(format!(
                    "step {step} of deployment {id} was answered 200 but is not stored: {:?}",
                    steps_of[id]
                ));
            }
        }
        let stored = fault_watch::stored_events(stack.gateway, &target.admin).await;
        let last = stored.last().map_or(0, |e| e.sequence);
        let seen = watchers.finish(last).await;
        problems.extend(fault_watch::compare(&seen, &stored, gateway_lives));
        let ended = |s: &str| deployments.iter().filter(|d| d["status"] == s).count();
        println!(
            "faults: {} injected\n{}deployments: {} ({} started with 200; {} succeeded, {} failed, {} cancelled)\n\
             step reports answered 200: {acked_steps}; stored events: {}; acknowledged writes lost: {lost}",
            recorder.faults().len(),
            recorder.table(),
            deployments.len(),
            acked_starts.len(),
            ended("DEPLOYMENT_STATUS_SUCCEEDED"),
            ended("DEPLOYMENT_STATUS_FAILED"),
            ended("DEPLOYMENT_STATUS_CANCELLED"),
            stored.len(),
        );
        problems.extend(answer_problems(&recorder));
        problems
    }
}

/// The scripts' step reports: (deployment, step, answer), each recorded too.
fn read_acks(dir: &Path, recorder: &Recorder) -> Vec<(i64, String, Answer)> {
    let mut acks = Vec::new();
    for entry in std::fs::read_dir(dir).expect("the acks dir") {
        let entry = entry.unwrap();
        let id: i64 = entry.file_name().to_str().unwrap().parse().unwrap();
        for line in std::fs::read_to_string(entry.path()).unwrap().lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [step, status, exit, began, time] = fields[..] else {
                panic!("a step report's line is not `step status exit began time`: {line:?}")
            };
            let answer = match (status.parse::<u16>().unwrap_or(0), exit) {
                (0, "28") => Answer::Hang,
                (0, _) => Answer::Dropped,
                (status, _) => Answer::of_status(status),
            };
            let at = |t: &str| recorder.instant_of(t.parse().unwrap_or(0.0));
            recorder.record_at(at(began), at(time), "step report", answer, line.to_owned());
            acks.push((id, step.to_owned(), answer));
        }
    }
    acks
}

/// What the answers break: a hang or an answer other than 2xx/4xx/503 anywhere, a
/// dropped connection while the gateway was up, a 4xx where none belongs, a revoked
/// token accepted, or a fault nobody noticed.
fn answer_problems(recorder: &Recorder) -> Vec<String> {
    let mut problems = Vec::new();
    let records = recorder.records();
    for (phase, r) in &records {
        let gateway_down = phase.starts_with("gateway") || recorder.phase_at(r.at).starts_with("gateway");
        let bad = match r.answer {
            Answer::Other | Answer::Hang => true,
            Answer::Dropped => !gateway_down,
            Answer::Ok => r.kind == "revoked",
            Answer::Client => !["revoked", "step report"].contains(&r.kind),
            Answer::Unavailable => false,
        };
        if bad && problems.len() < 20 {
            problems.push(format!("{phase}: {} answered {:?}: {}", r.kind, r.answer, r.detail));
        }
    }
    // Each outage was seen: some request was refused (or, the gateway down, dropped).
    let mut phases: Vec<&String> = records.iter().map(|(p, _)| p).collect();
    phases.sort();
    phases.dedup();
    for phase in phases.into_iter().filter(|p| p.ends_with(" down")) {
        let noticed = records
            .iter()
            .any(|(p, r)| p == phase && matches!(r.answer, Answer::Unavailable | Answer::Dropped));
        if !noticed {
            problems.push(format!("{phase}: no request noticed the outage"));
        }
    }
    problems
}

fn id_of(deployment: &Value) -> i64 {
    deployment["id"].as_str().and_then(|s| s.parse().ok()).unwrap_or(-1)
}

/// Every deployment (as `/v1` JSON), once none is queued or running any more.
pub async fn wait_all_ended(target: &Target) -> Vec<Value> {
    crate::wait_until(Duration::from_secs(90), async || {
        let all = list_deployments(target).await?;
        match all.iter().find(|d| {
            ["DEPLOYMENT_STATUS_QUEUED", "DEPLOYMENT_STATUS_RUNNING"].contains(&d["status"].as_str().unwrap_or(""))
        }) {
            Some(open) => Err(format!("a deployment has not ended: {open}")),
            None => Ok(all),
        }
    })
    .await
}

async fn list_deployments(target: &Target) -> Result<Vec<Value>, String> {
    let mut all = Vec::new();
    let mut page = String::new();
    loop {
        let path = format!("/v1/deployments?page_size=500&page_token={page}");
        let (answer, body) = target.call(Method::GET, &path, Some(&target.admin), None).await;
        if answer != Answer::Ok {
            return Err(format!("listing deployments: {body}"));
        }
        let body = &body["body"];
        all.extend(body["deployments"].as_array().cloned().unwrap_or_default());
        page = body["nextPageToken"].as_str().unwrap_or_default().to_owned();
        if page.is_empty() {
            return Ok(all);
        }
    }
}

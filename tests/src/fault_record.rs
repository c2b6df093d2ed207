//! What the fault tests count: every request's answer, by kind and by the phase it
//! ended in (steady, a service down, restarting, …), and the faults' figures.

use std::{
    collections::BTreeMap,
    sync::Mutex,
    time::{Duration, Instant, SystemTime},
};

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Answer {
    /// 2xx.
    Ok,
    /// 4xx.
    Client,
    /// 503 (UNAVAILABLE on gRPC).
    Unavailable,
    /// No HTTP answer: the connection was refused or broken (only while the gateway
    /// itself is down).
    Dropped,
    /// Any other status (500, 502, …) or error.
    Other,
    /// No answer within the client's timeout: a hang.
    Hang,
}

impl Answer {
    pub fn of_status(status: u16) -> Answer {
        match status {
            200..=299 => Answer::Ok,
            400..=499 => Answer::Client,
            503 => Answer::Unavailable,
            _ => Answer::Other,
        }
    }

    pub fn of_error(error: &reqwest::Error) -> Answer {
        if error.is_timeout() {
            Answer::Hang
        } else if error.is_connect() || error.is_request() || error.is_body() {
            Answer::Dropped
        } else {
            Answer::Other
        }
    }

    const ALL: [Answer; 6] = [
        Answer::Ok,
        Answer::Client,
        Answer::Unavailable,
        Answer::Dropped,
        Answer::Other,
        Answer::Hang,
    ];
}

#[derive(Debug, Clone)]
pub struct Record {
    /// When the request was sent and when its answer came.
    pub started: Instant,
    pub at: Instant,
    pub kind: &'static str,
    pub answer: Answer,
    pub detail: String,
}

/// One fault's figures.
#[derive(Debug, Clone)]
pub struct Fault {
    pub name: String,
    pub down: Duration,
    /// From the restart to serving by itself (health check, or accepting connections).
    pub start: Duration,
    /// From serving by itself to every probe through the gateway answering again.
    pub recovery: Duration,
}

/// Every record and the phase timeline, shared by the load's tasks.
pub struct Recorder {
    anchor: (Instant, SystemTime),
    records: Mutex<Vec<Record>>,
    phases: Mutex<Vec<(Instant, String)>>,
    faults: Mutex<Vec<Fault>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            anchor: (Instant::now(), SystemTime::now()),
            records: Mutex::new(Vec::new()),
            phases: Mutex::new(vec![(Instant::now(), "steady".to_owned())]),
            faults: Mutex::new(Vec::new()),
        }
    }
}

impl Recorder {
    /// Records a request sent at `started` and answered now.
    pub fn record(&self, started: Instant, kind: &'static str, answer: Answer, detail: impl Into<String>) {
        self.record_at(started, Instant::now(), kind, answer, detail);
    }

    pub fn record_at(
        &self,
        started: Instant,
        at: Instant,
        kind: &'static str,
        answer: Answer,
        detail: impl Into<String>,
    ) {
        let record = Record {
            started,
            at,
            kind,
            answer,
            detail: detail.into(),
        };
        self.records.lock().unwrap().push(record);
    }

    /// The instant of a wall-clock time (seconds since the epoch, as `date +%s.%N`).
    pub fn instant_of(&self, epoch_secs: f64) -> Instant {
        let (instant, system) = self.anchor;
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs_f64(epoch_secs.max(0.0));
        match at.duration_since(system) {
            Ok(after) => instant + after,
            Err(before) => instant.checked_sub(before.duration()).unwrap_or(instant),
        }
    }

    /// Starts a phase (records that end from now on count in it).
    pub fn phase(&self, name: impl Into<String>) {
        self.phases.lock().unwrap().push((Instant::now(), name.into()));
    }

    pub fn fault(&self, fault: Fault) {
        self.faults.lock().unwrap().push(fault);
    }

    pub fn faults(&self) -> Vec<Fault> {
        self.faults.lock().unwrap().clone()
    }

    /// Every record with the phase it was sent in.
    pub fn records(&self) -> Vec<(String, Record)> {
        let records = self.records.lock().unwrap().clone();
        records.into_iter().map(|r| (self.phase_at(r.started), r)).collect()
    }

    /// The phase at `at`.
    pub fn phase_at(&self, at: Instant) -> String {
        let phases = self.phases.lock().unwrap();
        phases
            .iter()
            .rev()
            .find(|(start, _)| *start <= at)
            .map_or("steady", |(_, name)| name.as_str())
            .to_owned()
    }

    /// The answers per phase (in the order the phases came) as a table, then the
    /// faults' figures.
    pub fn table(&self) -> String {
        let mut order: Vec<String> = Vec::new();
        for (_, name) in self.phases.lock().unwrap().iter() {
            if !order.contains(name) {
                order.push(name.clone());
            }
        }
        let mut counts: BTreeMap<String, BTreeMap<Answer, usize>> = BTreeMap::new();
        for (phase, record) in self.records() {
            *counts.entry(phase).or_default().entry(record.answer).or_default() += 1;
        }
        let mut text = format!(
            "{:<28} {:>6} {:>6} {:>6} {:>8} {:>6} {:>6}\n",
            "phase", "2xx", "4xx", "503", "dropped", "other", "hang"
        );
        let mut totals: BTreeMap<Answer, usize> = BTreeMap::new();
        for phase in &order {
            let row = counts.get(phase).cloned().unwrap_or_default();
            let n = |a: Answer| row.get(&a).copied().unwrap_or(0);
            text += &format!("{phase:<28}");
            for answer in Answer::ALL {
                *totals.entry(answer).or_default() += n(answer);
                let width = if answer == Answer::Dropped { 8 } else { 6 };
                text += &format!(" {:>width$}", n(answer));
            }
            text.push('\n');
        }
        text += &format!("{:<28}", "total");
        for answer in Answer::ALL {
            let width = if answer == Answer::Dropped { 8 } else { 6 };
            text += &format!(" {:>width$}", totals.get(&answer).copied().unwrap_or(0));
        }
        text.push('\n');
        let mut kinds: BTreeMap<&str, BTreeMap<Answer, usize>> = BTreeMap::new();
        for (_, record) in self.records() {
            *kinds.entry(record.kind).or_default().entry(record.answer).or_default() += 1;
        }
        for (kind, row) in kinds {
            text += &format!("{:<28}", format!("(by kind) {kind}"));
            for answer in Answer::ALL {
                let width = if answer == Answer::Dropped { 8 } else { 6 };
                text += &format!(" {:>width$}", row.get(&answer).copied().unwrap_or(0));
            }
            text.push('\n');
        }
        text += &format!(
            "{:<28} {:>10} {:>10} {:>10}\n",
            "fault", "down ms", "start ms", "recover ms"
        );
        for fault in self.faults() {
            text += &format!(
                "{:<28} {:>10} {:>10} {:>10}\n",
                fault.name,
                fault.down.as_millis(),
                fault.start.as_millis(),
                fault.recovery.as_millis()
            );
        }
        text
    }
}

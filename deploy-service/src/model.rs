//! The deploy service's vocabulary: deployment statuses, step states, the limits of
//! what a step may hold, and how a run ended.

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::{DeriveActiveEnum, DeriveValueType, EnumIter, Iterable, entity::prelude::StringLen};

/// The name of the step every failed or cancelled deployment ends with.
pub const FAILED_STEP: &str = "failed step";
/// The one step planned when nothing better is known (fastDeploy's placeholder).
pub const UNKNOWN_STEP: &str = "Unknown step";
/// Longest step message kept (fastDeploy's `MAX_STEP_MESSAGE_SIZE`); longer ones are cut.
pub const MAX_MESSAGE_CHARS: usize = 4096;
/// Longest step name accepted.
pub const MAX_NAME_CHARS: usize = 255;

/// Now, to the microsecond: what both databases store, so a value read back equals
/// the value written (and the value sent in events).
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// A service's id in the registry, as deployments name their service: never to be
/// taken for a deployment's id (the proto messages carry it as a plain integer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, DeriveValueType)]
pub struct ServiceId(pub i64);

/// A deployment's id: what its steps, events and output lines name it by, never to
/// be taken for its service's id or a step's id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, DeriveValueType)]
pub struct DeploymentId(pub i64);

impl std::fmt::Display for DeploymentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A deployment's status, stored (the `deployments.status` column) as its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
pub enum Status {
    #[sea_orm(string_value = "queued")]
    Queued,
    #[sea_orm(string_value = "running")]
    Running,
    #[sea_orm(string_value = "succeeded")]
    Succeeded,
    #[sea_orm(string_value = "failed")]
    Failed,
    #[sea_orm(string_value = "cancelled")]
    Cancelled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Status> {
        Status::iter().find(|s| s.as_str() == text)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for Status {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepState {
    Pending,
    Running,
    Success,
    Failure,
}

impl StepState {
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Pending => "pending",
            StepState::Running => "running",
            StepState::Success => "success",
            StepState::Failure => "failure",
        }
    }

    /// One of the four states, exactly; anything else is refused.
    pub fn parse(text: &str) -> Option<StepState> {
        [
            StepState::Pending,
            StepState::Running,
            StepState::Success,
            StepState::Failure,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }

    pub fn is_done(self) -> bool {
        matches!(self, StepState::Success | StepState::Failure)
    }
}

/// A step report, from a JSON line on the script's stdout or from `ReportStep`.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub name: String,
    pub state: StepState,
    pub message: String,
    /// When the reporter says the step started.
    pub started: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error("a step needs a name")]
    EmptyName,
    #[error("a step name is at most {MAX_NAME_CHARS} characters")]
    NameTooLong,
    #[error("unknown step state {0:?}: use pending, running, success or failure")]
    UnknownState(String),
}

impl Report {
    /// A checked report: a name of 1 to 255 characters, one of the four states, and
    /// the message cut to 4096 characters.
    pub fn new(name: &str, state: &str, message: &str, started: Option<DateTime<Utc>>) -> Result<Report, ReportError> {
        if name.is_empty() {
            return Err(ReportError::EmptyName);
        }
        if name.chars().count() > MAX_NAME_CHARS {
            return Err(ReportError::NameTooLong);
        }
        let state = StepState::parse(state).ok_or_else(|| ReportError::UnknownState(cut(state, 64)))?;
        Ok(Report {
            name: name.to_owned(),
            state,
            message: cut(message, MAX_MESSAGE_CHARS),
            started: started.map(|t| t.trunc_subsecs(6)),
        })
    }
}

/// At most `max` characters of `text`.
pub fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => text[..end].to_owned(),
        None => text.to_owned(),
    }
}

/// How a run ended, as the runner (or a user) saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The script exited 0: succeeded, unless a step failed.
    Exited,
    /// Failed for this reason (a `failed step` says it).
    Failed(String),
    /// Cancelled for this reason (a `failed step` says it).
    Cancelled(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_accept_the_four_states_only_and_cut_long_messages() {
        for state in ["pending", "running", "success", "failure"] {
            assert!(Report::new("a", state, "", None).is_ok(), "{state}");
        }
        for state in ["", "Success", "skipped", "ok "] {
            assert!(matches!(
                Report::new("a", state, "", None),
                Err(ReportError::UnknownState(_))
            ));
        }
        assert_eq!(Report::new("", "success", "", None), Err(ReportError::EmptyName));
        assert_eq!(
            Report::new(&"n".repeat(256), "success", "", None),
            Err(ReportError::NameTooLong)
        );
        assert!(Report::new(&"ü".repeat(255), "success", "", None).is_ok());
        let long = "é".repeat(5000);
        let report = Report::new("a", "success", &long, None).unwrap();
        assert_eq!(report.message.chars().count(), MAX_MESSAGE_CHARS);
    }

    #[test]
    fn statuses_round_trip() {
        for s in ["queued", "running", "succeeded", "failed", "cancelled"] {
            assert_eq!(Status::parse(s).unwrap().as_str(), s);
        }
        assert_eq!(Status::parse("done"), None);
    }
}

//! The step state machine (fastDeploy contract 4.10, without its bugs 23-27): how one
//! report changes the steps of a running deployment. Pure: the caller loads the
//! steps, applies reports, and stores the rows this says it changed.
//!
//! * The report names a step; the step it applies to is, among the steps with that
//!   name, the running one, else the first pending one. A name with no running or
//!   pending step (a new name, or one whose steps all finished) is a new step,
//!   appended after the others: a retried step shows every attempt (contract 4.10
//!   step 6).
//! * `success`/`failure` finishes the step (`finished` = now). When the running step
//!   succeeds and no other step is still running, the next pending step (by sequence)
//!   becomes running. A failure hands over to nothing: the pending steps wait.
//! * A pending step reported out of order is finished (or made running) without
//!   touching the step that is running.
//! * A step never goes back: a `pending` report for the running step only updates
//!   its message.

use chrono::{DateTime, Utc};

use crate::model::DeploymentId;
use crate::{
    model::{Report, StepState},
    storage::steps::Model as Step,
};

fn state(step: &Step) -> StepState {
    StepState::parse(&step.state).unwrap_or(StepState::Pending)
}

/// The step a report about `name` applies to (one pass over the steps): its running
/// step, else its first pending one; None for a new step.
fn target(steps: &[Step], name: &str) -> Option<usize> {
    let mut pending = None;
    for (i, step) in steps.iter().enumerate().filter(|(_, s)| s.name == name) {
        match state(step) {
            StepState::Running => return Some(i),
            StepState::Pending => {
                pending.get_or_insert(i);
            }
            StepState::Success | StepState::Failure => {}
        }
    }
    pending
}

/// Applies `report` to `steps` (the visible steps of one running deployment, in
/// sequence order, which it keeps). Returns the indices of the rows changed or added, in the order
/// their events are sent; added rows have id 0 until stored.
pub fn apply(steps: &mut Vec<Step>, deployment_id: DeploymentId, report: &Report, now: DateTime<Utc>) -> Vec<usize> {
    let Some(i) = target(steps, &report.name) else {
        // Steps are in sequence order: the new one goes after the last.
        let sequence = steps.last().map_or(0, |s| s.sequence) + 1;
        let started = (report.state != StepState::Pending).then(|| report.started.unwrap_or(now));
        steps.push(Step {
            id: 0,
            deployment_id,
            sequence,
            name: report.name.clone(),
            state: report.state.as_str().into(),
            started,
            finished: report.state.is_done().then_some(now),
            message: report.message.clone(),
            removed: false,
        });
        return vec![steps.len() - 1];
    };
    let was = state(&steps[i]);
    let step = &mut steps[i];
    step.message = report.message.clone();
    let mut changed = vec![i];
    match (was, report.state) {
        (_, StepState::Success | StepState::Failure) => {
            step.state = report.state.as_str().into();
            step.started = step.started.or(report.started).or(Some(now));
            step.finished = Some(now);
            let hand_over = was == StepState::Running
                && report.state == StepState::Success
                && !steps.iter().any(|s| state(s) == StepState::Running);
            if let Some(next) = hand_over.then(|| next_pending(steps)).flatten() {
                steps[next].state = StepState::Running.as_str().into();
                steps[next].started = Some(now);
                changed.push(next);
            }
        }
        (StepState::Pending, StepState::Running) => {
            step.state = StepState::Running.as_str().into();
            step.started = Some(report.started.unwrap_or(now));
        }
        // Never backwards: only the message changes.
        _ => {}
    }
    changed
}

/// The pending step with the lowest sequence.
pub fn next_pending(steps: &[Step]) -> Option<usize> {
    steps
        .iter()
        .enumerate()
        .filter(|(_, s)| state(s) == StepState::Pending)
        .min_by_key(|(_, s)| s.sequence)
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(names: &[&str]) -> Vec<Step> {
        names
            .iter()
            .enumerate()
            .map(|(i, name)| Step {
                id: i as i64 + 1,
                deployment_id: DeploymentId(9),
                sequence: i as i64 + 1,
                name: (*name).into(),
                state: if i == 0 { "running" } else { "pending" }.into(),
                started: None,
                finished: None,
                message: String::new(),
                removed: false,
            })
            .collect()
    }

    fn report(steps: &mut Vec<Step>, name: &str, state: &str) -> Vec<usize> {
        let report = Report::new(name, state, &format!("{name} {state}"), None).unwrap();
        apply(steps, DeploymentId(9), &report, chrono::Utc::now())
    }

    fn states(steps: &[Step]) -> Vec<(String, String)> {
        steps.iter().map(|s| (s.name.clone(), s.state.clone())).collect()
    }

    fn expect(steps: &[Step], want: &[(&str, &str)]) {
        let want: Vec<(String, String)> = want.iter().map(|(n, s)| ((*n).into(), (*s).into())).collect();
        assert_eq!(states(steps), want);
    }

    #[test]
    fn success_of_the_running_step_hands_over_to_the_next_pending_one() {
        let mut steps = plan(&["one", "two", "three"]);
        assert_eq!(report(&mut steps, "one", "success"), [0, 1]);
        expect(&steps, &[("one", "success"), ("two", "running"), ("three", "pending")]);
        assert!(steps[1].started.is_some() && steps[0].finished.is_some());
        report(&mut steps, "two", "success");
        report(&mut steps, "three", "success");
        expect(&steps, &[("one", "success"), ("two", "success"), ("three", "success")]);
    }

    #[test]
    fn a_failure_hands_over_to_nothing() {
        let mut steps = plan(&["one", "two"]);
        assert_eq!(report(&mut steps, "one", "failure"), [0]);
        expect(&steps, &[("one", "failure"), ("two", "pending")]);
    }

    #[test]
    fn out_of_order_reports_leave_the_running_step_alone_and_are_never_picked_again() {
        let mut steps = plan(&["one", "two", "three"]);
        assert_eq!(report(&mut steps, "two", "success"), [1]);
        expect(&steps, &[("one", "running"), ("two", "success"), ("three", "pending")]);
        // The next pending step is three, not the already reported two (bug 23).
        report(&mut steps, "one", "success");
        expect(&steps, &[("one", "success"), ("two", "success"), ("three", "running")]);
    }

    #[test]
    fn unknown_and_completed_names_append() {
        let mut steps = plan(&["one"]);
        assert_eq!(report(&mut steps, "extra", "success"), [1]);
        assert_eq!(steps[1].sequence, 2);
        assert_eq!(steps[1].id, 0);
        report(&mut steps, "one", "failure");
        // A retried step: both attempts show (contract 4.10 step 6).
        assert_eq!(report(&mut steps, "one", "success"), [2]);
        expect(&steps, &[("one", "failure"), ("extra", "success"), ("one", "success")]);
        assert_eq!(
            (steps[0].message.as_str(), steps[2].message.as_str()),
            ("one failure", "one success")
        );
        // A running retry is the step later reports apply to.
        report(&mut steps, "extra", "running");
        assert_eq!(report(&mut steps, "extra", "success"), [3]);
        expect(
            &steps,
            &[
                ("one", "failure"),
                ("extra", "success"),
                ("one", "success"),
                ("extra", "success"),
            ],
        );
    }

    #[test]
    fn the_running_step_never_goes_back() {
        let mut steps = plan(&["one", "two"]);
        report(&mut steps, "one", "pending");
        expect(&steps, &[("one", "running"), ("two", "pending")]);
        assert_eq!(steps[0].message, "one pending", "only the message changes");
    }

    #[test]
    fn a_pending_step_reported_running_runs_beside_the_running_one() {
        let mut steps = plan(&["one", "two", "three"]);
        report(&mut steps, "two", "running");
        expect(&steps, &[("one", "running"), ("two", "running"), ("three", "pending")]);
        // one succeeds while two still runs: nothing new starts.
        assert_eq!(report(&mut steps, "one", "success"), [0]);
        // The last running step done: the next pending one runs.
        assert_eq!(report(&mut steps, "two", "success"), [1, 2]);
        expect(&steps, &[("one", "success"), ("two", "success"), ("three", "running")]);
    }

    #[test]
    fn an_unknown_running_step_starts_without_finishing() {
        let mut steps = plan(&[]);
        report(&mut steps, "build", "running");
        assert!(steps[0].started.is_some() && steps[0].finished.is_none());
        report(&mut steps, "build", "success");
        expect(&steps, &[("build", "success")]);
    }
}

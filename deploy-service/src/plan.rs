//! What a new deployment is planned to do (fastDeploy contract 4.5, without bugs
//! 20-22): the step names of the service's last deployment that succeeded, else the
//! `steps` of its config.json, else one `Unknown step`; and the settings config.json
//! fixes for the run (deploy script, time limit).

use std::path::{Component, Path, PathBuf};

use serde_json::Value;

use crate::{
    model::{MAX_NAME_CHARS, UNKNOWN_STEP},
    storage::steps::Model as Step,
};

/// Longest time limit a config.json may set (a deployment token lives at most 7 days).
pub const MAX_TIMEOUT_SECS: i64 = 7 * 24 * 3600;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "Something went wrong: config.json `steps` must be a list of objects, each with a string `name` (1 to 255 characters)"
    )]
    BadSteps,
    #[error(
        "Something went wrong: config.json `timeout_seconds` must be a whole number of seconds from 1 to {MAX_TIMEOUT_SECS}"
    )]
    BadTimeout,
    #[error("Something went wrong: config.json `deploy_script` must be a non-empty string")]
    BadScriptName,
    #[error("Something went wrong: the deploy script {0} is outside the services directory")]
    ScriptOutside(String),
}

/// The planned step names, in order.
///
/// `last_succeeded` holds every step of the service's last succeeded deployment, in
/// sequence order, including those removed at its end because they were never
/// reported (so they stay planned, bug 22), except a never-reported placeholder.
pub fn steps(last_succeeded: &[Step], config: &Value) -> Result<Vec<String>, PlanError> {
    let from_last: Vec<String> = last_succeeded
        .iter()
        .filter(|s| !(s.removed && s.name == UNKNOWN_STEP))
        .map(|s| s.name.clone())
        .collect();
    // A bad `steps` value is refused even when the last run decides the plan.
    let declared = declared_steps(config)?;
    if !from_last.is_empty() {
        return Ok(from_last);
    }
    if !declared.is_empty() {
        return Ok(declared);
    }
    Ok(vec![UNKNOWN_STEP.to_owned()])
}

fn declared_steps(config: &Value) -> Result<Vec<String>, PlanError> {
    let Some(steps) = config.get("steps").filter(|s| !s.is_null()) else {
        return Ok(Vec::new());
    };
    let list = steps.as_array().ok_or(PlanError::BadSteps)?;
    list.iter()
        .map(|entry| match entry.get("name") {
            Some(Value::String(name)) if !name.is_empty() && name.chars().count() <= MAX_NAME_CHARS => Ok(name.clone()),
            _ => Err(PlanError::BadSteps),
        })
        .collect()
}

/// config.json `timeout_seconds`, or `default`.
pub fn timeout_secs(config: &Value, default: u64) -> Result<i64, PlanError> {
    match config.get("timeout_seconds") {
        None | Some(Value::Null) => Ok(i64::try_from(default)
            .unwrap_or(MAX_TIMEOUT_SECS)
            .clamp(1, MAX_TIMEOUT_SECS)),
        Some(value) => {
            let whole = value.as_i64().or_else(|| {
                value
                    .as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 1e15)
                    .map(|f| f as i64)
            });
            whole
                .filter(|s| (1..=MAX_TIMEOUT_SECS).contains(s))
                .ok_or(PlanError::BadTimeout)
        }
    }
}

/// The deploy script of service `name`, relative to the services directory, as
/// fastDeploy resolves it (contract 4.7: `deploy_script`, default `deploy.sh`, is
/// prefixed with `<name>/` unless absolute or already so prefixed) but never leaving
/// the services directory (no `..`; an absolute path must lie inside it).
pub fn deploy_script(services_dir: &Path, name: &str, config: &Value) -> Result<PathBuf, PlanError> {
    let script = match config.get("deploy_script") {
        None | Some(Value::Null) => "deploy.sh",
        Some(Value::String(s)) if !s.is_empty() => s.as_str(),
        Some(_) => return Err(PlanError::BadScriptName),
    };
    let path = if Path::new(script).is_absolute() || script.starts_with(&format!("{name}/")) {
        PathBuf::from(script)
    } else {
        Path::new(name).join(script)
    };
    let relative = if path.is_absolute() {
        let canonical = services_dir.canonicalize().ok();
        path.strip_prefix(services_dir)
            .ok()
            .or_else(|| canonical.as_deref().and_then(|c| path.strip_prefix(c).ok()))
            .map(Path::to_owned)
    } else {
        Some(path.clone())
    };
    let outside = || PlanError::ScriptOutside(script.to_owned());
    let relative = relative.ok_or_else(outside)?;
    let normal = relative.components().all(|c| matches!(c, Component::Normal(_)));
    if !normal || relative.as_os_str().is_empty() {
        return Err(outside());
    }
    Ok(relative)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::DeploymentId;

    fn step(name: &str, state: &str, removed: bool) -> Step {
        Step {
            id: 1,
            deployment_id: DeploymentId(1),
            sequence: 1,
            name: name.into(),
            state: state.into(),
            started: None,
            finished: None,
            message: "old message".into(),
            removed,
        }
    }

    #[test]
    fn the_last_success_wins_then_config_then_the_placeholder() {
        let config = json!({"steps": [{"name": "a", "description": "x"}, {"name": "b"}]});
        let last = [
            step("one", "success", false),
            step("two", "pending", true),
            step(UNKNOWN_STEP, "running", true),
        ];
        assert_eq!(steps(&last, &config).unwrap(), ["one", "two"]);
        assert_eq!(steps(&[], &config).unwrap(), ["a", "b"]);
        assert_eq!(steps(&[], &json!({})).unwrap(), [UNKNOWN_STEP]);
        assert_eq!(steps(&[], &json!({"steps": []})).unwrap(), [UNKNOWN_STEP]);
        // Only a never-reported placeholder: the config decides.
        assert_eq!(steps(&last[2..], &config).unwrap(), ["a", "b"]);
    }

    #[test]
    fn bad_steps_are_refused() {
        for bad in [
            json!({"steps": {"name": "a"}}),
            json!({"steps": [{"title": "a"}]}),
            json!({"steps": [{"name": 3}]}),
            json!({"steps": ["a"]}),
            json!({"steps": [{"name": ""}]}),
        ] {
            assert_eq!(steps(&[], &bad), Err(PlanError::BadSteps), "{bad}");
        }
    }

    #[test]
    fn timeouts_are_whole_positive_seconds() {
        assert_eq!(timeout_secs(&json!({}), 3600), Ok(3600));
        assert_eq!(timeout_secs(&json!({"timeout_seconds": 5}), 3600), Ok(5));
        assert_eq!(timeout_secs(&json!({"timeout_seconds": 5.0}), 3600), Ok(5));
        for bad in [json!(0), json!(-1), json!(1.5), json!("5"), json!(MAX_TIMEOUT_SECS + 1)] {
            assert_eq!(
                timeout_secs(&json!({"timeout_seconds": bad}), 3600),
                Err(PlanError::BadTimeout)
            );
        }
    }

    #[test]
    fn scripts_resolve_inside_the_services_directory_only() {
        let dir = Path::new("/srv/services");
        let resolve = |config: Value| deploy_script(dir, "alpha", &config);
        assert_eq!(resolve(json!({})).unwrap(), Path::new("alpha/deploy.sh"));
        assert_eq!(
            resolve(json!({"deploy_script": "alpha/x.sh"})).unwrap(),
            Path::new("alpha/x.sh")
        );
        assert_eq!(
            resolve(json!({"deploy_script": "bin/run"})).unwrap(),
            Path::new("alpha/bin/run")
        );
        assert_eq!(
            resolve(json!({"deploy_script": "/srv/services/beta/d.sh"})).unwrap(),
            Path::new("beta/d.sh")
        );
        for bad in ["../../etc/x", "/etc/passwd", "alpha/../../x"] {
            assert!(
                matches!(resolve(json!({"deploy_script": bad})), Err(PlanError::ScriptOutside(_))),
                "{bad}"
            );
        }
        assert_eq!(resolve(json!({"deploy_script": 1})), Err(PlanError::BadScriptName));
    }
}

//! Steps derived from an Ansible playbook (contract 4.2): "Gathering Facts", then the
//! name of every named task of the first play; a first play without `tasks` (only
//! roles) gives no steps.

use std::{io::Read, path::Path};

use serde_json::{Value, json};
use serde_yaml_ng::Value as Yaml;

use super::paths::inside;

/// The largest playbook read.
const MAX_PLAYBOOK_BYTES: u64 = 4 * 1024 * 1024;

/// The steps of the playbook at `path` (relative to `project_root`).
pub fn steps(project_root: &Path, path: &str) -> Result<Value, String> {
    let relative =
        inside(project_root, Path::new(path)).ok_or_else(|| format!("playbook {path} is outside the project root"))?;
    let mut text = String::new();
    std::fs::File::open(project_root.join(relative))
        .and_then(|f| f.take(MAX_PLAYBOOK_BYTES + 1).read_to_string(&mut text))
        .map_err(|e| format!("playbook {path} cannot be read: {e}"))?;
    if text.len() as u64 > MAX_PLAYBOOK_BYTES {
        return Err(format!("playbook {path} is larger than {MAX_PLAYBOOK_BYTES} bytes"));
    }
    let parsed: Yaml = serde_yaml_ng::from_str(&text).map_err(|e| format!("playbook {path} is not valid YAML: {e}"))?;
    from_playbook(&parsed).map_err(|reason| format!("playbook {path}: {reason}"))
}

fn from_playbook(parsed: &Yaml) -> Result<Value, String> {
    let play = match parsed {
        Yaml::Sequence(plays) => plays.first().ok_or("it holds no play")?,
        _ => return Err("it must be a list of plays".into()),
    };
    let Yaml::Mapping(play) = play else {
        return Err("its first play must be a mapping".into());
    };
    let Some(tasks) = play.get("tasks") else {
        return Ok(json!([]));
    };
    let Yaml::Sequence(tasks) = tasks else {
        return Err("`tasks` of its first play must be a list".into());
    };
    let mut steps = vec![json!({ "name": "Gathering Facts" })];
    for task in tasks {
        let name = match task.get("name") {
            None | Some(Yaml::Null) => continue,
            Some(Yaml::String(s)) => s.clone(),
            Some(Yaml::Number(n)) => n.to_string(),
            Some(Yaml::Bool(b)) => b.to_string(),
            Some(_) => return Err("a task `name` must be a string".into()),
        };
        steps.push(json!({ "name": name }));
    }
    Ok(Value::Array(steps))
}

//! Reading the services directory (fastDeploy contract 4.2): every immediate,
//! non-hidden subdirectory is one service named after it, whose `config.json` object
//! becomes the service's data. A folder that cannot be read as a service is reported
//! as a problem with its reason and never stops the others.

mod paths;
mod playbook;

use std::{
    io::Read,
    path::{Path, PathBuf},
};

use serde_json::Value;

/// The largest `config.json` read.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// Why one folder is not a usable service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub service: String,
    pub reason: String,
}

/// What a scan of the services directory found: good services (sorted by name),
/// problem folders (not synced), and warnings about services that are synced but
/// cannot deploy as they are (a deploy script missing or not executable).
#[derive(Debug, Default)]
pub struct Scan {
    pub services: Vec<(String, Value)>,
    pub problems: Vec<Problem>,
    pub warnings: Vec<Problem>,
}

#[derive(Debug, thiserror::Error)]
#[error("the services directory {path} cannot be read: {source}")]
pub struct CatalogError {
    path: PathBuf,
    source: std::io::Error,
}

/// The services directory and the project root that `ansible_playbook` paths are
/// relative to.
#[derive(Debug, Clone)]
pub struct Catalog {
    services_dir: PathBuf,
    project_root: PathBuf,
}

impl Catalog {
    /// `project_root` defaults to the services directory's parent.
    pub fn new(services_dir: &Path, project_root: Option<&Path>) -> Catalog {
        let services_dir = std::path::absolute(services_dir).unwrap_or_else(|_| services_dir.to_owned());
        let project_root = match project_root {
            Some(root) => std::path::absolute(root).unwrap_or_else(|_| root.to_owned()),
            None => services_dir
                .parent()
                .map(Path::to_owned)
                .unwrap_or_else(|| services_dir.clone()),
        };
        Catalog {
            services_dir,
            project_root,
        }
    }

    pub fn services_dir(&self) -> &Path {
        &self.services_dir
    }

    /// The service folders: immediate subdirectories whose names are UTF-8 and do not
    /// start with '.', sorted. Folders with non-UTF-8 names come back as `Err(lossy name)`.
    fn folders(&self) -> Result<Vec<Result<String, String>>, CatalogError> {
        let unreadable = |source| CatalogError {
            path: self.services_dir.clone(),
            source,
        };
        let mut folders = Vec::new();
        for entry in std::fs::read_dir(&self.services_dir).map_err(unreadable)? {
            let entry = entry.map_err(unreadable)?;
            let name = entry.file_name();
            if name.as_encoded_bytes().starts_with(b".") || !entry.path().is_dir() {
                continue;
            }
            folders.push(name.into_string().map_err(|n| n.to_string_lossy().into_owned()));
        }
        folders.sort();
        Ok(folders)
    }

    /// Names of the service folders, whether or not they hold a usable service.
    pub fn names(&self) -> Result<Vec<String>, CatalogError> {
        Ok(self.folders()?.into_iter().filter_map(Result::ok).collect())
    }

    /// Reads every service folder.
    pub fn scan(&self) -> Result<Scan, CatalogError> {
        let mut scan = Scan::default();
        for folder in self.folders()? {
            match folder {
                Ok(name) => match self.read_service(&name) {
                    Ok((data, warning)) => {
                        if let Some(reason) = warning {
                            scan.warnings.push(Problem {
                                service: name.clone(),
                                reason,
                            });
                        }
                        scan.services.push((name, data));
                    }
                    Err(reason) => scan.problems.push(Problem { service: name, reason }),
                },
                Err(lossy) => scan.problems.push(Problem {
                    service: lossy,
                    reason: "the folder name is not valid UTF-8".into(),
                }),
            }
        }
        Ok(scan)
    }

    /// One service's data: its `config.json`, with `steps` derived from its Ansible
    /// playbook when it names one, and a warning when its deploy script cannot run;
    /// or why it is not a usable service.
    fn read_service(&self, name: &str) -> Result<(Value, Option<String>), String> {
        let mut data = read_config(&self.services_dir.join(name).join("config.json"))?;
        let Value::Object(object) = &mut data else {
            return Err(format!("config.json must hold a JSON object, not {}", kind(&data)));
        };
        let script = match object.get("deploy_script") {
            None => "deploy.sh",
            Some(Value::String(s)) if !s.is_empty() => s.as_str(),
            Some(_) => return Err("`deploy_script` must be a non-empty string".into()),
        };
        let relative = paths::script_inside(&self.services_dir, name, script)?;
        let warning = paths::script_warning(&self.services_dir, &relative);
        match object.get("ansible_playbook") {
            None => check_steps(object.get("steps"))?,
            Some(Value::String(playbook)) => {
                let steps = playbook::steps(&self.project_root, playbook)?;
                object.insert("steps".into(), steps);
            }
            Some(_) => return Err("`ansible_playbook` must be a string".into()),
        }
        Ok((data, warning))
    }
}

fn read_config(path: &Path) -> Result<Value, String> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err("config.json is missing".into()),
        Err(e) => return Err(format!("config.json cannot be read: {e}")),
    };
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("config.json cannot be read: {e}"))?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(format!("config.json is larger than {MAX_CONFIG_BYTES} bytes"));
    }
    serde_json::from_str(&text).map_err(|e| format!("config.json is not valid JSON: {e}"))
}

/// Declared steps must be what a deployment can start from: a list of objects, each
/// with a string `name`.
fn check_steps(steps: Option<&Value>) -> Result<(), String> {
    let Some(steps) = steps else { return Ok(()) };
    let valid = steps
        .as_array()
        .is_some_and(|list| list.iter().all(|s| s.get("name").is_some_and(Value::is_string)));
    if valid {
        Ok(())
    } else {
        Err("`steps` must be a list of objects, each with a string `name`".into())
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;

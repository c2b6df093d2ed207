//! The config file a deploy script gets with `--config` (contract 4.8, safely): JSON
//! with 2-space indents and exactly fastDeploy's keys, mode 0600, in a 0700 directory
//! of the deploy service's data dir, overwritten and removed when the run ends
//! (whatever its outcome, also when the run task unwinds) and at the next start for
//! files a crashed service left behind.

use std::{
    fs::{DirBuilder, OpenOptions, Permissions},
    io::{self, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use crate::model::DeploymentId;
use rand::RngCore;
use serde::Serialize;
use serde_json::Value;

/// The keys of the file, in fastDeploy's order.
#[derive(Serialize)]
pub struct Contents<'a> {
    /// The real deployment id, as a string.
    pub deployment_id: String,
    pub access_token: &'a str,
    /// The script, relative to the services directory (e.g. `alpha/deploy.sh`).
    pub deploy_script: String,
    pub steps_url: String,
    pub deployment_finish_url: String,
    pub context: &'a Value,
    pub path_for_deploy: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssh_auth_sock: Option<&'a str>,
}

/// The private directory for config files, created 0700 (and made 0700 if it exists).
pub fn prepare_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    std::fs::set_permissions(dir, Permissions::from_mode(0o700))
}

/// One written config file; dropping it scrubs it.
#[derive(Debug)]
pub struct SecretFile {
    path: PathBuf,
}

impl SecretFile {
    pub fn write(dir: &Path, deployment_id: DeploymentId, contents: &Contents<'_>) -> io::Result<SecretFile> {
        let mut random = [0u8; 8];
        rand::rngs::OsRng.fill_bytes(&mut random);
        let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let path = dir.join(format!("deploy_{deployment_id}_{suffix}.json"));
        let mut text = serde_json::to_vec_pretty(contents).map_err(io::Error::other)?;
        text.push(b'\n');
        let mut file = match OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path) {
            Ok(file) => file,
            Err(error) => {
                text.fill(0);
                return Err(error);
            }
        };
        // From here on, dropping `SecretFile` removes the file, also on failure.
        let secret = SecretFile { path };
        // Not synced: the file lives only as long as the run, and is scrubbed after.
        let written = file.write_all(&text);
        text.fill(0);
        written.map(|()| secret)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SecretFile {
    fn drop(&mut self) {
        if let Err(error) = scrub(&self.path) {
            tracing::error!(path = %self.path.display(), %error, "config file not removed");
        }
    }
}

/// Overwrites a file with zeros, syncs it, and unlinks it.
pub fn scrub(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_file() => {
            let mut file = OpenOptions::new().write(true).open(path)?;
            let zeros = vec![0u8; usize::try_from(meta.len()).unwrap_or(0).min(1 << 20)];
            file.write_all(&zeros)?;
            file.sync_all()?;
            std::fs::remove_file(path)
        }
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The deployments whose config files are in `dir` (`deploy_<id>_<random>.json`):
/// after a crash, the runs whose scripts may still be running here.
pub fn run_file_ids(dir: &Path) -> io::Result<Vec<DeploymentId>> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let id = name
            .to_str()
            .and_then(|n| n.strip_prefix("deploy_"))
            .and_then(|n| n.split('_').next())
            .and_then(|n| n.parse().ok());
        if let Some(id) = id {
            ids.push(DeploymentId(id));
        }
    }
    ids.sort();
    ids.dedup();
    Ok(ids)
}

/// Scrubs every file left in `dir` (by a deploy service that did not stop cleanly).
pub fn scrub_dir(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        scrub(&path)?;
        removed += 1;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn written_private_with_fastdeploy_keys_and_scrubbed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let runs = dir.path().join("runs");
        prepare_dir(&runs).unwrap();
        assert_eq!(std::fs::metadata(&runs).unwrap().permissions().mode() & 0o777, 0o700);
        let context = json!({"env": {"A": "b"}});
        let contents = Contents {
            deployment_id: "7".into(),
            access_token: "tok",
            deploy_script: "alpha/deploy.sh".into(),
            steps_url: "http://gw/steps/".into(),
            deployment_finish_url: "http://gw/deployments/finish/".into(),
            context: &context,
            path_for_deploy: "/usr/bin:/bin",
            ssh_auth_sock: None,
        };
        let file = SecretFile::write(&runs, DeploymentId(7), &contents).unwrap();
        let path = file.path().to_owned();
        assert_eq!(run_file_ids(&runs).unwrap(), [DeploymentId(7)]);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("{\n  \"deployment_id\": \"7\",\n  \"access_token\": \"tok\""),
            "{text}"
        );
        let value: Value = serde_json::from_str(&text).unwrap();
        let keys: Vec<&String> = value.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 7, "no ssh_auth_sock when unset: {keys:?}");
        drop(file);
        assert!(!path.exists());

        std::fs::write(runs.join("left-over.json"), "secret").unwrap();
        assert_eq!(scrub_dir(&runs).unwrap(), 1);
        assert_eq!(std::fs::read_dir(&runs).unwrap().count(), 0);
    }
}

//! Paths named in `config.json`, resolved as fastDeploy does (contract 4.7) but never
//! outside the directory they belong to: a deploy script stays inside the services
//! directory, a playbook inside the project root. The check is on the path as written
//! (no `..`, an absolute path must lie under the directory); symlinked service folders
//! keep working.

use std::path::{Component, Path, PathBuf};

/// `path` (absolute, or relative to `base`) as a path relative to `base`, or None
/// when it would leave `base`.
pub fn inside(base: &Path, path: &Path) -> Option<PathBuf> {
    let relative = if path.is_absolute() {
        let canonical = base.canonicalize().ok();
        path.strip_prefix(base)
            .ok()
            .or_else(|| canonical.as_deref().and_then(|c| path.strip_prefix(c).ok()))?
            .to_owned()
    } else {
        path.to_owned()
    };
    let normal = relative
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    (normal && relative.components().next().is_some()).then_some(relative)
}

/// The deploy script of service `name` relative to the services directory: `script`
/// if absolute or already starting with `<name>/`, else `<name>/<script>`.
pub fn script_path(name: &str, script: &str) -> PathBuf {
    if Path::new(script).is_absolute() || script.starts_with(&format!("{name}/")) {
        PathBuf::from(script)
    } else {
        Path::new(name).join(script)
    }
}

/// The deploy script of service `name` relative to the services directory, or the
/// problem when its path leaves the services directory.
pub fn script_inside(services_dir: &Path, name: &str, script: &str) -> Result<PathBuf, String> {
    inside(services_dir, &script_path(name, script))
        .ok_or_else(|| format!("deploy script {script} is outside the services directory"))
}

/// Why the deploy script (relative to the services directory) cannot run now: missing,
/// not a file or not executable. fastDeploy still lists such a service and fails its
/// deployments when they run (contract 4.7), so this is a warning, not a problem.
pub fn script_warning(services_dir: &Path, relative: &Path) -> Option<String> {
    let shown = relative.display();
    let metadata = match std::fs::metadata(services_dir.join(relative)) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Some(format!("deploy script {shown} does not exist"));
        }
        Err(e) => return Some(format!("deploy script {shown} cannot be read: {e}")),
    };
    if !metadata.is_file() {
        return Some(format!("deploy script {shown} is not a file"));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if metadata.permissions().mode() & 0o111 == 0 {
            return Some(format!("deploy script {shown} is not executable"));
        }
    }
    None
}

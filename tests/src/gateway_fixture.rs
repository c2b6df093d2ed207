//! Fixture of the gateway's gRPC tests: two services, a native gRPC login.

use std::{fs, os::unix::fs::PermissionsExt, path::Path};

pub fn write_service(root: &Path, name: &str) {
    let dir = root.join(name);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("config.json"), format!(r#"{{"description": "{name}"}}"#)).unwrap();
    let script = dir.join("deploy.sh");
    fs::write(
        &script,
        "#!/bin/sh\necho '{\"name\": \"build\", \"state\": \"success\"}'\n",
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
}

pub fn two_services(root: &Path) {
    write_service(root, "alpha");
    write_service(root, "beta");
}

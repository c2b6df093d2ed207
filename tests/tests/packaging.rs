//! The artefacts that deploy Slipway, checked against the real binaries: the
//! Kubernetes manifests (deploy/kubernetes), the systemd units (deploy/systemd) and the
//! image (deploy/Containerfile). Every flag and `SLIPWAY_*` setting they use must be
//! in the `--help` of the binary that reads it (so renaming a flag fails here), and
//! every reference between them must resolve: Services to pods, ports, volumes,
//! Secrets, credentials, backend URLs. No network: the binaries run on loopback only.

#[path = "packaging/containerfile.rs"]
mod containerfile;
#[path = "packaging/help.rs"]
mod help;
#[path = "packaging/kubernetes.rs"]
mod kubernetes;
#[path = "packaging/manifests.rs"]
mod manifests;
#[path = "packaging/pods.rs"]
mod pods;
#[path = "packaging/running.rs"]
mod running;
#[path = "packaging/scale.rs"]
mod scale;
#[path = "packaging/systemd.rs"]
mod systemd;

use std::path::PathBuf;

/// The repository root (the workspace).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests package lives in the workspace")
        .to_path_buf()
}

pub fn deploy_dir() -> PathBuf {
    repo_root().join("deploy")
}

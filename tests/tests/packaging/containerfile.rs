//! deploy/Containerfile: it cannot be built here (no registry), so what it promises is
//! checked against the workspace and the manifests: it builds and installs the binary
//! its entrypoint runs, copies every workspace member, builds and runs on the same
//! Debian release (glibc), uses a Rust at least the workspace's `rust-version`, and runs
//! as the user the pods expect.

use std::collections::BTreeSet;

use crate::{deploy_dir, manifests::Manifests, repo_root};

pub struct Containerfile {
    /// Instructions with their continuation lines joined: (keyword, arguments).
    pub lines: Vec<(String, String)>,
}

impl Containerfile {
    pub fn load() -> Containerfile {
        let text = std::fs::read_to_string(deploy_dir().join("Containerfile")).expect("deploy/Containerfile");
        let mut lines = Vec::new();
        let mut current = String::new();
        for line in text.lines() {
            let trimmed = line.trim();
            if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
                continue;
            }
            match trimmed.strip_suffix('\\') {
                Some(part) => {
                    current.push_str(part);
                    current.push(' ');
                }
                None => {
                    current.push_str(trimmed);
                    let (keyword, args) = current.split_once(char::is_whitespace).unwrap_or((&current, ""));
                    lines.push((keyword.to_uppercase(), args.trim().to_owned()));
                    current.clear();
                }
            }
        }
        Containerfile { lines }
    }

    fn all(&self, keyword: &str) -> Vec<&str> {
        self.lines
            .iter()
            .filter(|(k, _)| k == keyword)
            .map(|(_, a)| a.as_str())
            .collect()
    }

    /// The image's ENTRYPOINT, in exec (JSON) form.
    pub fn entrypoint(&self) -> Vec<String> {
        let entrypoints = self.all("ENTRYPOINT");
        let last = entrypoints.last().expect("the Containerfile sets an ENTRYPOINT");
        serde_json::from_str(last).expect("ENTRYPOINT in exec form: a JSON array of strings")
    }

    /// The numeric user id the image runs as (`USER uid[:gid]`).
    pub fn uid(&self) -> u64 {
        let users = self.all("USER");
        let user = users.last().expect("the Containerfile sets a USER");
        user.split(':')
            .next()
            .and_then(|u| u.parse().ok())
            .expect("USER is numeric, so Kubernetes can check runAsNonRoot")
    }
}

/// The `members` of the workspace's Cargo.toml.
fn workspace_members() -> Vec<String> {
    let text = std::fs::read_to_string(repo_root().join("Cargo.toml")).unwrap();
    let start = text.find("members = [").expect("workspace members") + "members = [".len();
    let end = start + text[start..].find(']').unwrap();
    text[start..end]
        .split(',')
        .map(|m| m.trim().trim_matches('"').to_owned())
        .filter(|m| !m.is_empty())
        .collect()
}

fn workspace_rust_version() -> (u32, u32) {
    let text = std::fs::read_to_string(repo_root().join("Cargo.toml")).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("rust-version"))
        .expect("rust-version");
    version(line.split('"').nth(1).unwrap()).unwrap()
}

fn version(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

#[test]
fn containerfile_builds_and_runs_what_the_manifests_expect() {
    let file = Containerfile::load();
    let froms = file.all("FROM");
    assert!(froms.len() >= 2, "a build stage and a runtime stage: {froms:?}");

    // The entrypoint's binary is built by the build stage and copied to that path.
    let entrypoint = file.entrypoint();
    let binary_path = entrypoint.last().unwrap();
    let binary = binary_path.rsplit('/').next().unwrap();
    assert!(
        file.all("RUN")
            .iter()
            .any(|r| r.contains("cargo build") && r.contains("--release") && r.contains(&format!("--bin {binary}"))),
        "no `cargo build --release --bin {binary}` in the Containerfile"
    );
    assert!(
        file.all("COPY")
            .iter()
            .any(|c| c.starts_with("--from=") && c.ends_with(&format!(" {binary_path}"))),
        "nothing copies the built binary to the entrypoint's {binary_path}"
    );

    // Cargo needs every workspace member to load the workspace.
    let copied: BTreeSet<String> = file
        .all("COPY")
        .iter()
        .filter(|c| !c.starts_with("--from="))
        .flat_map(|c| {
            let words: Vec<&str> = c.split_whitespace().collect();
            words[..words.len() - 1]
                .iter()
                .map(|w| w.trim_end_matches('/').to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    for needed in ["Cargo.toml", "Cargo.lock"] {
        assert!(copied.contains(needed), "the build stage does not copy {needed}");
    }
    for member in workspace_members() {
        assert!(
            copied
                .iter()
                .any(|c| member == *c || member.starts_with(&format!("{c}/"))),
            "workspace member {member} is not copied into the build stage (copied: {copied:?})"
        );
    }

    // Build and runtime on one Debian release: the binary links against its glibc.
    let release = |from: &str| {
        ["bookworm", "trixie", "bullseye"]
            .into_iter()
            .find(|r| from.contains(r))
            .unwrap_or_else(|| panic!("FROM {from}: name the Debian release in the tag"))
    };
    let build = froms.first().unwrap();
    let runtime = froms.last().unwrap();
    assert_eq!(release(build), release(runtime), "build and runtime stages differ");

    // The Rust image is at least the workspace's rust-version.
    let tag = build.split_whitespace().next().unwrap().rsplit(':').next().unwrap();
    let rust = version(tag.split('-').next().unwrap()).unwrap_or_else(|| panic!("pin the Rust version: {build}"));
    assert!(
        rust >= workspace_rust_version(),
        "{build} is older than the workspace's rust-version"
    );

    // The pods run as the image's user.
    let uid = file.uid();
    assert_ne!(uid, 0, "the image must not run as root");
    let manifests = Manifests::load();
    for workload in manifests.workloads() {
        assert_eq!(
            workload.pod()["securityContext"]["runAsUser"].as_u64(),
            Some(uid),
            "{}: runAsUser is not the image's USER",
            workload.name()
        );
    }
}

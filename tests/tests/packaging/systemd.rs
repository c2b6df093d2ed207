//! deploy/systemd against the real binaries and against itself: flags and settings
//! exist, the units agree on ports and directories, the deploy service's unit keeps
//! `sudo` working in deploy scripts (fastDeploy's bug 17) while the others are hardened,
//! and slipway.target starts them all.

use std::collections::BTreeSet;

use crate::{deploy_dir, help::Program};

struct Unit {
    file: String,
    /// (section, key, value), in file order.
    entries: Vec<(String, String, String)>,
}

impl Unit {
    fn load(file: &str) -> Unit {
        let path = deploy_dir().join("systemd").join(file);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let mut entries = Vec::new();
        let mut section = String::new();
        let mut pending = String::new();
        for line in text.lines() {
            let line = line.trim();
            if pending.is_empty() && (line.is_empty() || line.starts_with('#') || line.starts_with(';')) {
                continue;
            }
            if let Some(part) = line.strip_suffix('\\') {
                pending.push_str(part);
                pending.push(' ');
                continue;
            }
            pending.push_str(line);
            let entry = std::mem::take(&mut pending);
            if let Some(name) = entry.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
                section = name.to_owned();
            } else {
                let (key, value) = entry
                    .split_once('=')
                    .unwrap_or_else(|| panic!("{file}: not a setting: {entry}"));
                entries.push((section.clone(), key.trim().to_owned(), value.trim().to_owned()));
            }
        }
        Unit {
            file: file.to_owned(),
            entries,
        }
    }

    fn all(&self, section: &str, key: &str) -> Vec<&str> {
        self.entries
            .iter()
            .filter(|(s, k, _)| s == section && k == key)
            .map(|(_, _, v)| v.as_str())
            .collect()
    }

    fn last(&self, key: &str) -> Option<&str> {
        self.all("Service", key).last().copied()
    }

    /// The program ExecStart runs and its own arguments.
    fn program(&self) -> (Program, Vec<String>) {
        let exec = self
            .last("ExecStart")
            .unwrap_or_else(|| panic!("{}: no ExecStart", self.file));
        // Prefixes such as `-` or `+` change how systemd runs the command, not the command.
        let exec = exec.trim_start_matches(['-', '@', '+', '!', ':']);
        Program::from_argv(&words(exec))
    }

    /// `Environment=` assignments, in order.
    fn environment(&self) -> Vec<(String, String)> {
        self.all("Service", "Environment")
            .iter()
            .flat_map(|line| words(line))
            .map(|w| {
                let (k, v) = w.split_once('=').unwrap_or((&w, ""));
                (k.to_owned(), v.to_owned())
            })
            .collect()
    }

    fn env(&self, name: &str) -> Option<String> {
        self.environment()
            .into_iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
}

/// Whitespace-separated words; double quotes group.
fn words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

fn service_units() -> Vec<Unit> {
    let mut files: Vec<String> = std::fs::read_dir(deploy_dir().join("systemd"))
        .expect("deploy/systemd")
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|f| f.ends_with(".service"))
        .collect();
    files.sort();
    files.iter().map(|f| Unit::load(f)).collect()
}

/// `SLIPWAY_*` names assigned in an environment file, commented-out examples included.
fn env_file_settings(file: &str) -> Vec<String> {
    let text = std::fs::read_to_string(deploy_dir().join("systemd").join(file)).unwrap();
    text.lines()
        .map(|l| l.trim().trim_start_matches('#').trim())
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .filter(|k| k.starts_with("SLIPWAY_") && k.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn units_use_flags_and_settings_their_binary_has() {
    let mut parts = BTreeSet::new();
    let mut checked = 0;
    for unit in service_units() {
        let (program, args) = unit.program();
        let help = program.help();
        help.check_args(&program, &args, &unit.file);
        let credentials: Vec<&str> = unit
            .all("Service", "LoadCredential")
            .iter()
            .map(|c| c.split(':').next().unwrap())
            .collect();
        for (name, value) in unit.environment() {
            help.check_env(&program, &name, &unit.file);
            checked += 1;
            if let Some(credential) = value.strip_prefix("%d/") {
                assert!(
                    credentials.contains(&credential),
                    "{}: {name} reads credential {credential}, which no LoadCredential= provides",
                    unit.file
                );
            }
        }
        let env_files = unit.all("Service", "EnvironmentFile");
        assert!(!env_files.is_empty(), "{}: no EnvironmentFile", unit.file);
        for env_file in env_files {
            // The repository ships an example of every environment file a unit reads.
            let name = env_file.trim_start_matches('-').rsplit('/').next().unwrap();
            for setting in env_file_settings(name) {
                help.check_env(&program, &setting, &format!("deploy/systemd/{name}"));
                checked += 1;
            }
        }
        parts.insert(program.part().to_owned());
    }
    assert!(checked > 20, "only {checked} settings found in the units");
    let all: BTreeSet<String> = ["auth", "registry", "deploy", "gateway"].map(String::from).into();
    assert_eq!(parts, all, "one unit per part of Slipway");
}

#[test]
fn units_agree_on_ports_and_directories() {
    let units = service_units();
    let listening: BTreeSet<String> = units
        .iter()
        .filter_map(|u| u.env("SLIPWAY_LISTEN"))
        .map(|l| l.rsplit(':').next().unwrap().to_owned())
        .collect();
    assert_eq!(listening.len(), units.len(), "every unit listens on its own port");
    for unit in &units {
        for (name, value) in unit.environment() {
            let local = value
                .strip_prefix("http://127.0.0.1:")
                .or_else(|| value.strip_prefix("http://localhost:"));
            if let Some(port) = local {
                let port = port.split('/').next().unwrap();
                assert!(
                    listening.contains(port),
                    "{}: {name}={value}, but no unit listens there",
                    unit.file
                );
            }
        }
        // Everything but the state directory is read-only to a hardened unit.
        if let Some(data) = unit.env("SLIPWAY_DATA_DIR") {
            let state = unit
                .last("StateDirectory")
                .unwrap_or_else(|| panic!("{}: no StateDirectory", unit.file));
            assert_eq!(
                data,
                format!("/var/lib/{state}"),
                "{}: the data dir is the state dir",
                unit.file
            );
        }
    }
    let shared = |name: &str| -> BTreeSet<String> { units.iter().filter_map(|u| u.env(name)).collect() };
    for name in ["SLIPWAY_SERVICES_DIR", "SLIPWAY_PROJECT_ROOT"] {
        assert_eq!(
            shared(name).len(),
            1,
            "the registry and the deploy service disagree on {name}"
        );
    }
}

/// Settings after which systemd turns on no_new_privs (systemd.exec(5), NoNewPrivileges=),
/// so that `sudo` in a deploy script fails.
const IMPLY_NO_NEW_PRIVILEGES: &[&str] = &[
    "DynamicUser",
    "LockPersonality",
    "MemoryDenyWriteExecute",
    "PrivateDevices",
    "ProtectClock",
    "ProtectHostname",
    "ProtectKernelLogs",
    "ProtectKernelModules",
    "ProtectKernelTunables",
    "RestrictAddressFamilies",
    "RestrictNamespaces",
    "RestrictRealtime",
    "RestrictSUIDSGID",
    "SystemCallArchitectures",
    "SystemCallFilter",
    "SystemCallLog",
];

#[test]
fn deploy_unit_keeps_sudo_working_and_the_others_are_hardened() {
    let mut deploy_seen = false;
    for unit in service_units() {
        let file = &unit.file;
        let no_new_privileges = unit
            .last("NoNewPrivileges")
            .is_some_and(|v| ["yes", "true", "on", "1"].contains(&v));
        if unit.program().0.part() == "deploy" {
            deploy_seen = true;
            assert!(
                !no_new_privileges,
                "{file}: NoNewPrivileges=yes breaks sudo in deploy scripts"
            );
            for key in IMPLY_NO_NEW_PRIVILEGES {
                assert!(unit.last(key).is_none(), "{file}: {key}= implies NoNewPrivileges=yes");
            }
            // sudo's root would be bound too, or see a read-only system, or no real ids.
            for key in ["CapabilityBoundingSet", "ProtectSystem", "PrivateUsers"] {
                assert!(
                    unit.last(key).is_none(),
                    "{file}: {key}= gets in the way of sudo in scripts"
                );
            }
            // The service stops its scripts itself; systemd only cleans up after it.
            assert_eq!(unit.last("KillMode"), Some("mixed"), "{file}: KillMode");
        } else {
            assert!(no_new_privileges, "{file}: NoNewPrivileges=yes");
            assert_eq!(
                unit.last("ProtectSystem"),
                Some("strict"),
                "{file}: ProtectSystem=strict"
            );
            assert_eq!(unit.last("CapabilityBoundingSet"), Some(""), "{file}: no capabilities");
            assert_eq!(unit.last("PrivateTmp"), Some("yes"), "{file}: PrivateTmp");
            assert!(unit.last("SystemCallFilter").is_some(), "{file}: a system call filter");
        }
        assert!(
            unit.last("User").is_some_and(|u| u != "root"),
            "{file}: run as an unprivileged user"
        );
    }
    assert!(deploy_seen, "no unit runs the deploy service");
}

#[test]
fn slipway_target_starts_every_unit() {
    let target = Unit::load("slipway.target");
    let wanted: BTreeSet<String> = target.all("Unit", "Wants").iter().flat_map(|w| words(w)).collect();
    let units = service_units();
    let files: BTreeSet<String> = units.iter().map(|u| u.file.clone()).collect();
    assert_eq!(
        wanted, files,
        "slipway.target wants exactly the units of deploy/systemd"
    );
    for unit in &units {
        assert!(
            unit.all("Unit", "PartOf").contains(&"slipway.target"),
            "{}: PartOf=slipway.target",
            unit.file
        );
        assert!(
            unit.all("Install", "WantedBy").contains(&"slipway.target"),
            "{}: WantedBy=slipway.target",
            unit.file
        );
    }
}

/// Deploy scripts run as the deploy unit's user. Every other part that keeps state (the
/// auth service's signing keys and users, the registry's deployed-service configs) runs
/// as another user and group, in a state dir only that user may enter.
#[test]
fn other_parts_state_is_out_of_reach_of_deploy_scripts() {
    let units = service_units();
    let deploy = units
        .iter()
        .find(|u| u.program().0.part() == "deploy")
        .expect("a unit runs the deploy service");
    let script_user = deploy.last("User").expect("the deploy unit names its user");
    let script_group = deploy.last("Group").unwrap_or(script_user);
    let script_groups: BTreeSet<String> = deploy
        .all("Service", "SupplementaryGroups")
        .iter()
        .flat_map(|g| words(g))
        .chain([script_group.to_owned()])
        .collect();
    assert!(
        deploy.last("DynamicUser").is_none(),
        "{}: scripts need a fixed user",
        deploy.file
    );
    let mut parts = BTreeSet::new();
    for unit in units.iter().filter(|u| u.program().0.part() != "deploy") {
        let file = &unit.file;
        let user = unit.last("User").unwrap_or_else(|| panic!("{file}: no User="));
        let group = unit.last("Group").unwrap_or(user);
        assert_ne!(user, script_user, "{file}: runs as the user deploy scripts run as");
        assert!(
            !script_groups.contains(group),
            "{file}: its group {group} is one deploy scripts have"
        );
        if let Some(data) = unit.env("SLIPWAY_DATA_DIR") {
            parts.insert(unit.program().0.part().to_owned());
            assert_eq!(
                unit.last("StateDirectoryMode"),
                Some("0700"),
                "{file}: the state dir {data} is for its user alone"
            );
            assert_eq!(unit.last("UMask"), Some("0077"), "{file}: files it creates are private");
            assert_ne!(
                deploy.env("SLIPWAY_DATA_DIR").as_deref(),
                Some(data.as_str()),
                "{file}: shares the deploy service's data dir"
            );
        }
        if let Some(keys) = unit.env("SLIPWAY_KEYS_DIR") {
            let data = unit.env("SLIPWAY_DATA_DIR").unwrap_or_default();
            assert!(
                keys.starts_with(&format!("{data}/")),
                "{file}: the keys dir {keys} lies outside its private state dir"
            );
        }
    }
    assert!(
        parts.contains("auth") && parts.contains("registry"),
        "the auth and registry units keep state in a data dir: {parts:?}"
    );
}

//! What a binary accepts, read from its real `--help`: the long flags and the
//! `SLIPWAY_*` variables clap lists (`[env: SLIPWAY_X=]`).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    process::Command,
    sync::{Mutex, OnceLock},
};

use tests::process::bin_dir;

/// Settings every binary reads outside its flags (`common::telemetry`), so absent from
/// `--help`. `gateway_answers_the_probes_the_manifests_use` proves they are read.
pub const TELEMETRY: &[&str] = &["SLIPWAY_LOG_FORMAT"];

/// The binaries a manifest or unit may run.
const BINARIES: &[&str] = &[
    "slipway",
    "auth-service",
    "registry-service",
    "deploy-service",
    "gateway",
];

/// One runnable program: a binary and, for `slipway`, its `serve <part>` subcommand.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Program {
    pub binary: String,
    pub subcommand: Vec<String>,
}

impl Program {
    /// Splits a command line into the program it runs and that program's own
    /// arguments. Wrappers before the binary (`tini --`) are skipped.
    pub fn from_argv(argv: &[String]) -> (Program, Vec<String>) {
        let at = argv
            .iter()
            .position(|a| {
                let name = Path::new(a).file_name().and_then(|n| n.to_str()).unwrap_or("");
                BINARIES.contains(&name)
            })
            .unwrap_or_else(|| panic!("no Slipway binary in the command line {argv:?}"));
        let binary = Path::new(&argv[at]).file_name().unwrap().to_str().unwrap().to_owned();
        let mut rest = argv[at + 1..].to_vec();
        let mut subcommand = Vec::new();
        if binary == "slipway" {
            assert!(
                rest.len() >= 2 && rest[0] == "serve",
                "`slipway` must be run as `slipway serve <part>`, not {argv:?}"
            );
            subcommand = rest.drain(..2).collect();
        }
        (Program { binary, subcommand }, rest)
    }

    /// The part this program serves: `auth`, `registry`, `deploy` or `gateway`.
    pub fn part(&self) -> &str {
        match self.subcommand.get(1) {
            Some(part) => part,
            None => self.binary.trim_end_matches("-service"),
        }
    }

    pub fn help(&self) -> Help {
        static CACHE: OnceLock<Mutex<BTreeMap<Program, Help>>> = OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        if let Some(help) = cache.lock().unwrap().get(self) {
            return help.clone();
        }
        let mut command = Command::new(bin_dir().join(&self.binary));
        command.args(&self.subcommand).arg("--help");
        for (key, _) in std::env::vars() {
            if key.starts_with("SLIPWAY_") {
                command.env_remove(key);
            }
        }
        let output = command
            .output()
            .unwrap_or_else(|e| panic!("running {self:?} --help: {e}"));
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(output.status.success(), "{self:?} --help failed:\n{text}");
        let help = Help::parse(&text);
        assert!(
            help.flags.contains("--listen") && help.envs.contains("SLIPWAY_LISTEN"),
            "{self:?} --help does not read like a Slipway service's help:\n{text}"
        );
        cache.lock().unwrap().insert(self.clone(), help.clone());
        help
    }
}

#[derive(Debug, Clone, Default)]
pub struct Help {
    pub flags: BTreeSet<String>,
    pub envs: BTreeSet<String>,
}

impl Help {
    fn parse(text: &str) -> Help {
        let mut help = Help::default();
        for line in text.lines() {
            // Option lines start with the flags: `  -h, --help` or `      --listen <LISTEN>`.
            if line.trim_start().starts_with('-') {
                for word in line.split(|c: char| c.is_whitespace() || c == ',') {
                    if let Some(name) = word.strip_prefix("--").filter(|n| !n.is_empty()) {
                        help.flags
                            .insert(format!("--{}", name.split('=').next().unwrap_or(name)));
                    }
                }
            }
            for (i, _) in line.match_indices("[env: ") {
                let name: String = line[i + 6..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                help.envs.insert(name);
            }
        }
        help
    }

    /// Checks a command line's own arguments: every `--flag` (or `--flag=value`) must be
    /// one the program accepts.
    pub fn check_args(&self, program: &Program, args: &[String], context: &str) {
        for arg in args.iter().filter(|a| a.starts_with("--")) {
            let flag = arg.split('=').next().unwrap_or(arg);
            assert!(
                self.flags.contains(flag),
                "{context}: {program:?} has no flag {flag} (its --help lists {:?})",
                self.flags
            );
        }
    }

    /// Checks a setting's name: a `SLIPWAY_*` variable must be one the program reads.
    pub fn check_env(&self, program: &Program, name: &str, context: &str) {
        if name.starts_with("SLIPWAY_") && !TELEMETRY.contains(&name) {
            assert!(
                self.envs.contains(name),
                "{context}: {program:?} reads no {name} (its --help lists {:?})",
                self.envs
            );
        }
    }
}

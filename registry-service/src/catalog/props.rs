//! Property tests of what the registry reads from the services directory: any bytes
//! as `config.json`, config objects of any shape, and any text as the Ansible playbook
//! a config names, generated and from the corpus (`tests/corpus/config_json`,
//! `tests/corpus/playbook`). Nothing panics; the service is either served, with an
//! object whose `steps` are a list of named objects, or reported with a reason.

use std::{fs, os::unix::fs::PermissionsExt, path::Path};

use common::fuzz::{config, corpus, json_bytes, json_value, nasty_text, object_with};
use proptest::prelude::*;
use serde_json::{Value, json};

use super::Catalog;

const FIELDS: &[&str] = &["description", "steps", "deploy_script", "ansible_playbook", "env"];

/// Scans a services directory holding one service `svc` with `config` (and
/// `play.yml` holding `playbook` next to it), and checks what it made of it.
fn scan(config: &[u8], playbook: Option<&[u8]>) -> Result<(), TestCaseError> {
    let project = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
    let dir = project.path().join("services/svc");
    let write = |path: &Path, bytes: &[u8]| fs::write(path, bytes).map_err(|e| TestCaseError::fail(e.to_string()));
    fs::create_dir_all(&dir).map_err(|e| TestCaseError::fail(e.to_string()))?;
    write(&dir.join("config.json"), config)?;
    write(&dir.join("deploy.sh"), b"#!/bin/sh\n")?;
    fs::set_permissions(dir.join("deploy.sh"), fs::Permissions::from_mode(0o755))
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    if let Some(playbook) = playbook {
        write(&project.path().join("play.yml"), playbook)?;
    }
    let scan = Catalog::new(&project.path().join("services"), None)
        .scan()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let served: Vec<&Value> = scan
        .services
        .iter()
        .filter(|(n, _)| n == "svc")
        .map(|(_, d)| d)
        .collect();
    let refused = scan.problems.iter().filter(|p| p.service == "svc").count();
    prop_assert_eq!(served.len() + refused, 1, "{:?}", scan);
    if let Some(data) = served.first() {
        prop_assert!(data.is_object());
        if let Some(steps) = data.get("steps") {
            let named = steps
                .as_array()
                .is_some_and(|list| list.iter().all(|s| s.get("name").is_some_and(Value::is_string)));
            prop_assert!(named, "steps {}", steps);
        }
    }
    Ok(())
}

/// YAML text: JSON (which is YAML), plays of tasks with names of any shape written by
/// the YAML serializer, or anything.
fn playbook_text() -> impl Strategy<Value = String> {
    let plays = prop::collection::vec(
        (prop::collection::vec(json_value(), 0..5), json_value()).prop_map(|(names, extra)| {
            let tasks: Vec<Value> = names
                .into_iter()
                .map(|name| json!({"name": name, "debug": {}}))
                .collect();
            json!({"hosts": "all", "tasks": tasks, "vars": extra})
        }),
        0..3,
    )
    .prop_map(|plays| serde_yaml_ng::to_string(&plays).unwrap_or_default());
    prop_oneof![
        plays,
        json_value().prop_map(|v| v.to_string()),
        nasty_text(),
        any::<String>()
    ]
}

#[test]
fn the_corpus_is_read_without_panic() {
    for (name, config) in corpus("config_json") {
        scan(&config, None).unwrap_or_else(|e| panic!("config_json/{name}: {e}"));
    }
    for (name, playbook) in corpus("playbook") {
        scan(br#"{"ansible_playbook": "play.yml"}"#, Some(&playbook))
            .unwrap_or_else(|e| panic!("playbook/{name}: {e}"));
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_bytes_as_config(config in json_bytes()) {
        scan(&config, None)?;
    }

    #[test]
    fn configs_of_any_shape(object in object_with(
        FIELDS,
        json!({"description": "d", "steps": [{"name": "a"}], "deploy_script": "deploy.sh", "ansible_playbook": "play.yml"}),
    )) {
        scan(object.to_string().as_bytes(), Some(b"- hosts: all\n  tasks:\n    - name: one\n"))?;
    }

    #[test]
    fn any_playbook(text in playbook_text()) {
        scan(br#"{"ansible_playbook": "play.yml"}"#, Some(text.as_bytes()))?;
    }
}

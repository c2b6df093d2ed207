use std::{fs, os::unix::fs::PermissionsExt, path::Path};

use serde_json::json;

use super::*;

fn service(root: &Path, name: &str, config: &str) {
    let dir = root.join(name);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("config.json"), config).unwrap();
    script(&dir.join("deploy.sh"), 0o755);
}

fn script(path: &Path, mode: u32) {
    fs::write(path, "#!/bin/sh\necho '{\"name\": \"one\", \"state\": \"success\"}'\n").unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn reason<'a>(scan: &'a Scan, name: &str) -> &'a str {
    &scan
        .problems
        .iter()
        .find(|p| p.service == name)
        .unwrap_or_else(|| panic!("no problem for {name}: {scan:?}"))
        .reason
}

#[test]
fn good_folders_sync_and_each_bad_one_is_reported_with_its_reason() {
    let project = tempfile::tempdir().unwrap();
    let root = project.path().join("services");
    fs::create_dir_all(&root).unwrap();
    service(&root, "alpha", r#"{"description": "a", "steps": [{"name": "one"}]}"#);
    service(&root, "beta", "{}");
    service(&root, "bad-json", "{nope");
    service(&root, "not-object", "[1, 2]");
    service(&root, "bad-steps", r#"{"steps": [{"title": "x"}]}"#);
    fs::create_dir_all(root.join("no-config")).unwrap();
    service(&root, "no-script", r#"{"deploy_script": "missing.sh"}"#);
    service(&root, "escapes", r#"{"deploy_script": "../../outside.sh"}"#);
    service(&root, "absolute-outside", r#"{"deploy_script": "/bin/sh"}"#);
    service(&root, "not-executable", r#"{"deploy_script": "plain.sh"}"#);
    script(&root.join("not-executable/plain.sh"), 0o644);
    service(&root, ".hidden", "{}");
    fs::write(root.join("a-file"), "{}").unwrap();

    let catalog = Catalog::new(&root, None);
    let scan = catalog.scan().unwrap();
    let names: Vec<&str> = scan.services.iter().map(|(n, _)| n.as_str()).collect();
    // A missing or non-executable script is a warning: the service is still synced.
    assert_eq!(names, ["alpha", "beta", "no-script", "not-executable"]);
    assert_eq!(
        scan.services[0].1,
        json!({"description": "a", "steps": [{"name": "one"}]})
    );
    assert!(reason(&scan, "bad-json").starts_with("config.json is not valid JSON"));
    assert_eq!(
        reason(&scan, "not-object"),
        "config.json must hold a JSON object, not a list"
    );
    assert!(reason(&scan, "bad-steps").contains("`steps`"));
    assert_eq!(reason(&scan, "no-config"), "config.json is missing");
    let warnings: Vec<(&str, &str)> = scan
        .warnings
        .iter()
        .map(|w| (w.service.as_str(), w.reason.as_str()))
        .collect();
    assert_eq!(
        warnings,
        [
            ("no-script", "deploy script no-script/missing.sh does not exist"),
            (
                "not-executable",
                "deploy script not-executable/plain.sh is not executable"
            )
        ]
    );
    assert!(reason(&scan, "escapes").contains("outside the services directory"));
    assert!(reason(&scan, "absolute-outside").contains("outside the services directory"));
    assert_eq!(scan.problems.len(), 6, "{:?}", scan.problems);

    let names = catalog.names().unwrap();
    assert!(names.windows(2).all(|w| w[0] < w[1]), "sorted: {names:?}");
    assert!(names.contains(&"no-config".to_owned()) && !names.iter().any(|n| n.starts_with('.') || n == "a-file"));
}

#[test]
fn script_paths_follow_fastdeploy_rules_inside_the_services_dir() {
    let project = tempfile::tempdir().unwrap();
    let root = project.path().join("services");
    service(&root, "prefixed", r#"{"deploy_script": "prefixed/deploy.sh"}"#);
    service(&root, "nested", r#"{"deploy_script": "bin/run"}"#);
    fs::create_dir_all(root.join("nested/bin")).unwrap();
    script(&root.join("nested/bin/run"), 0o700);
    let absolute = root.join("absolute/deploy.sh");
    service(
        &root,
        "absolute",
        &json!({ "deploy_script": absolute.to_str().unwrap() }).to_string(),
    );
    let scan = Catalog::new(&root, None).scan().unwrap();
    assert!(scan.problems.is_empty(), "{:?}", scan.problems);
    assert!(scan.warnings.is_empty(), "{:?}", scan.warnings);
    assert_eq!(scan.services.len(), 3);
}

#[test]
fn ansible_playbook_steps_are_derived_from_the_first_play() {
    let project = tempfile::tempdir().unwrap();
    let root = project.path().join("services");
    fs::create_dir_all(project.path().join("ansible")).unwrap();
    fs::write(
        project.path().join("ansible/deploy.yml"),
        "- hosts: all\n  tasks:\n    - name: Install packages\n      apt: {name: nginx}\n    - debug: {msg: unnamed}\n    - name: Restart\n- hosts: other\n  tasks:\n    - name: Ignored\n",
    )
    .unwrap();
    fs::write(
        project.path().join("ansible/roles.yml"),
        "- hosts: all\n  roles: [web]\n",
    )
    .unwrap();
    fs::write(project.path().join("ansible/broken.yml"), "- hosts: [\n").unwrap();
    service(
        &root,
        "tasks",
        r#"{"ansible_playbook": "ansible/deploy.yml", "steps": [{"name": "stale"}]}"#,
    );
    service(&root, "roles", r#"{"ansible_playbook": "ansible/roles.yml"}"#);
    service(&root, "broken", r#"{"ansible_playbook": "ansible/broken.yml"}"#);
    service(&root, "missing", r#"{"ansible_playbook": "ansible/none.yml"}"#);
    service(&root, "escapes", r#"{"ansible_playbook": "../x.yml"}"#);

    let scan = Catalog::new(&root, None).scan().unwrap();
    let data = |name: &str| &scan.services.iter().find(|(n, _)| n == name).unwrap().1;
    assert_eq!(
        data("tasks")["steps"],
        json!([{"name": "Gathering Facts"}, {"name": "Install packages"}, {"name": "Restart"}])
    );
    assert_eq!(data("tasks")["ansible_playbook"], "ansible/deploy.yml");
    assert_eq!(data("roles")["steps"], json!([]));
    assert!(reason(&scan, "broken").contains("is not valid YAML"));
    assert!(reason(&scan, "missing").contains("cannot be read"));
    assert!(reason(&scan, "escapes").contains("outside the project root"));

    // An explicit project root wins over the services directory's parent.
    let elsewhere = tempfile::tempdir().unwrap();
    let scan = Catalog::new(&root, Some(elsewhere.path())).scan().unwrap();
    assert!(reason(&scan, "tasks").contains("cannot be read"));
}

#[test]
fn an_unreadable_services_directory_is_an_error_not_an_empty_scan() {
    let project = tempfile::tempdir().unwrap();
    let catalog = Catalog::new(&project.path().join("nope"), None);
    assert!(catalog.scan().is_err());
    assert!(catalog.names().is_err());
}

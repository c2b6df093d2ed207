//! How the pods of deploy/kubernetes run: locked down, pods with a ReadWriteOnce volume alone, and a
//! services directory that holds usable services, laid out as the kubelet would.

use std::{collections::BTreeSet, os::unix::fs::PermissionsExt};

use serde_json::Value;

use crate::manifests::Manifests;

#[test]
fn pods_are_locked_down() {
    let manifests = Manifests::load();
    for workload in manifests.workloads() {
        let pod = workload.pod();
        let name = workload.name();
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}: runAsNonRoot");
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "{name}: seccomp"
        );
        assert_eq!(pod["automountServiceAccountToken"], false, "{name}: no API token");
        for container in workload.containers() {
            let context = container.context();
            let security = &container.value["securityContext"];
            assert_eq!(
                security["allowPrivilegeEscalation"], false,
                "{context}: privilege escalation"
            );
            assert_eq!(
                security["readOnlyRootFilesystem"], true,
                "{context}: read-only root filesystem"
            );
            assert!(
                security["capabilities"]["drop"]
                    .as_array()
                    .is_some_and(|d| d.contains(&"ALL".into())),
                "{context}: capabilities not dropped"
            );
            let resources = &container.value["resources"];
            for what in ["cpu", "memory"] {
                assert!(!resources["requests"][what].is_null(), "{context}: no {what} request");
            }
            assert!(!resources["limits"]["memory"].is_null(), "{context}: no memory limit");
            let (program, _) = container.program();
            // The gateway answers HTTP; the backends the standard gRPC health check.
            let action = if program.part() == "gateway" { "httpGet" } else { "grpc" };
            for probe in ["livenessProbe", "readinessProbe"] {
                assert!(
                    container.value[probe][action].is_object(),
                    "{context}: no {action} {probe}"
                );
            }
        }
    }
}

#[test]
fn single_owner_parts_run_alone() {
    let manifests = Manifests::load();
    let read_write_once = |claim: &str| {
        manifests.find("PersistentVolumeClaim", claim).is_some_and(|pvc| {
            pvc.value["spec"]["accessModes"]
                .as_array()
                .unwrap()
                .iter()
                .all(|m| m == "ReadWriteOnce" || m == "ReadWriteOncePod")
        })
    };
    for workload in manifests.workloads() {
        let rwo_claim = workload
            .volumes()
            .iter()
            .filter_map(|v| v["persistentVolumeClaim"]["claimName"].as_str())
            .find(|claim| read_write_once(claim));
        if let Some(claim) = rwo_claim {
            // A ReadWriteOnce volume attaches to one pod.
            assert_eq!(
                workload.spec()["replicas"],
                1,
                "{}: one replica ({claim})",
                workload.name()
            );
            assert_eq!(
                workload.spec()["strategy"]["type"],
                "Recreate",
                "{}: never two pods at once ({claim})",
                workload.name()
            );
        }
    }
}

/// A file mode as Kubernetes reads it: YAML 1.1, where `0555` is octal. (The YAML 1.2
/// parser here keeps a leading-zero number as a string.)
fn mode(value: &Value) -> Option<u32> {
    match value {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Value::String(s) => {
            let digits = s.strip_prefix("0o").or_else(|| s.strip_prefix('0'))?;
            u32::from_str_radix(digits, 8).ok()
        }
        _ => None,
    }
}

#[test]
fn services_directory_holds_usable_services() {
    let manifests = Manifests::load();
    let dir = tempfile::tempdir().unwrap();
    let mut layouts = BTreeSet::new();
    let mut roots = BTreeSet::new();
    for container in manifests.containers() {
        let Some(path) = container.env_value(&manifests, "SLIPWAY_SERVICES_DIR") else {
            continue;
        };
        roots.insert((path.clone(), container.env_value(&manifests, "SLIPWAY_PROJECT_ROOT")));
        let (mount, relative) = container.mount_of(&path).unwrap();
        assert_eq!(
            relative,
            "",
            "{}: mount the services directory itself",
            container.context()
        );
        let volume = container.workload.volume(mount["name"].as_str().unwrap()).unwrap();
        layouts.insert(volume["configMap"].to_string());
    }
    assert_eq!(
        layouts.len(),
        1,
        "the registry and the deploy service see different services directories"
    );
    assert_eq!(
        roots.len(),
        1,
        "the registry and the deploy service disagree on the paths: {roots:?}"
    );
    let volume: Value = serde_json::from_str(layouts.first().unwrap()).unwrap();
    let map = manifests
        .find("ConfigMap", volume["name"].as_str().expect("a ConfigMap volume"))
        .unwrap();

    // Lay the volume out as the kubelet does: each item at its path, with its mode.
    let default_mode = mode(&volume["defaultMode"]).unwrap_or(0o644);
    let items = volume["items"]
        .as_array()
        .expect("items place files in service folders");
    let mut mapped = BTreeSet::new();
    for item in items {
        let key = item["key"].as_str().unwrap();
        let file = dir.path().join(item["path"].as_str().unwrap());
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, map.value["data"][key].as_str().unwrap()).unwrap();
        let mode = mode(&item["mode"]).unwrap_or(default_mode);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        mapped.insert(key.to_owned());
    }
    assert_eq!(
        mapped,
        map.keys().into_iter().collect(),
        "every ConfigMap key is placed in a service folder"
    );

    let examples = crate::deploy_dir().join("services");
    for folder in std::fs::read_dir(dir.path()).unwrap() {
        let folder = folder.unwrap().path();
        let service = folder.file_name().unwrap().to_str().unwrap().to_owned();
        let config: Value = serde_json::from_str(&std::fs::read_to_string(folder.join("config.json")).unwrap())
            .unwrap_or_else(|e| panic!("{service}/config.json: {e}"));
        assert!(config.is_object(), "{service}/config.json is not an object");
        let script = folder.join(config["deploy_script"].as_str().unwrap_or("deploy.sh"));
        let metadata = std::fs::metadata(&script).unwrap_or_else(|e| panic!("{}: {e}", script.display()));
        assert_ne!(
            metadata.permissions().mode() & 0o111,
            0,
            "{} is not executable",
            script.display()
        );
        assert!(
            std::fs::read_to_string(&script).unwrap().starts_with("#!"),
            "{} has no #!",
            script.display()
        );
        // A copy of an example service stays the same as the example.
        for file in std::fs::read_dir(&folder).unwrap() {
            let file = file.unwrap();
            let example = examples.join(&service).join(file.file_name());
            if example.exists() {
                assert_eq!(
                    std::fs::read_to_string(file.path()).unwrap(),
                    std::fs::read_to_string(&example).unwrap(),
                    "{} differs from deploy/services",
                    example.display()
                );
            }
        }
    }
}

/// What backs a volume beyond one pod (a claim, a host path, a Secret or ConfigMap); an
/// `emptyDir` belongs to its pod alone.
fn shared_source(volume: &Value) -> Option<String> {
    [
        ("persistentVolumeClaim", "claimName"),
        ("hostPath", "path"),
        ("secret", "secretName"),
        ("configMap", "name"),
        ("nfs", "path"),
    ]
    .iter()
    .find_map(|(kind, field)| volume[kind][field].as_str().map(|v| format!("{kind} {v}")))
}

/// Deploy scripts run in the deploy service's pod. The auth service's signing keys and
/// its database are in another pod, on volumes and Secret keys that pod alone gets.
#[test]
fn auth_state_is_out_of_reach_of_deploy_scripts() {
    let manifests = Manifests::load();
    let containers = manifests.containers();
    let of_part = |part: &str| {
        containers
            .iter()
            .find(|c| c.program().0.part() == part)
            .unwrap_or_else(|| panic!("no container runs the {part} service"))
    };
    let (auth, deploy) = (of_part("auth"), of_part("deploy"));
    assert_ne!(
        auth.workload.name(),
        deploy.workload.name(),
        "the auth and deploy services share a pod"
    );

    // The volumes holding the auth service's data dir and key-encryption key.
    let mut private = BTreeSet::new();
    for setting in ["SLIPWAY_DATA_DIR", "SLIPWAY_KEK_FILE"] {
        let Some(path) = auth.env_value(&manifests, setting) else {
            continue;
        };
        let (mount, _) = auth
            .mount_of(&path)
            .unwrap_or_else(|| panic!("{}: {setting}={path} is on no volume", auth.context()));
        let volume = auth.workload.volume(mount["name"].as_str().unwrap()).unwrap();
        if let Some(source) = shared_source(volume) {
            private.insert(source);
        }
    }
    assert!(
        !private.is_empty(),
        "the auth service's key-encryption key is on no Secret volume"
    );
    for volume in deploy.workload.volumes() {
        if let Some(source) = shared_source(volume) {
            assert!(
                !private.contains(&source),
                "{}: mounts {source}, which holds the auth service's key-encryption key or data",
                deploy.context()
            );
        }
    }

    // sudo is impossible in the pod anyway, so scripts are kept out of the deploy
    // service's own data dir and credential too.
    assert_eq!(
        deploy.env_value(&manifests, "SLIPWAY_LANDLOCK").as_deref(),
        Some("true"),
        "{}: SLIPWAY_LANDLOCK",
        deploy.context()
    );

    // The Secret key with the auth service's database URL.
    let url = auth
        .env(&manifests)
        .into_iter()
        .find(|v| v.name == "SLIPWAY_DATABASE_URL")
        .expect("the auth service's database URL");
    let secret = &url.source["valueFrom"]["secretKeyRef"];
    let (name, key) = (secret["name"].as_str().unwrap(), secret["key"].as_str().unwrap());
    for var in deploy.env(&manifests) {
        let reference = &var.source["valueFrom"]["secretKeyRef"];
        assert!(
            !(reference["name"] == name && reference["key"] == key),
            "{}: {} is the auth service's database URL",
            deploy.context(),
            var.name
        );
        assert!(
            var.source["secretRef"]["name"] != name,
            "{}: envFrom gets every key of {name}, the auth service's database URL too",
            deploy.context()
        );
    }
    for volume in deploy.workload.volumes() {
        assert!(
            volume["secret"]["secretName"] != name,
            "{}: mounts {name}, with the auth service's database URL",
            deploy.context()
        );
    }
}

//! deploy/kubernetes against the real binaries and against itself: flags and settings
//! exist, every reference resolves, pods are locked down, single-owner parts run alone,
//! Secrets are placeholders the services refuse, the gateway answers its probes.

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    os::unix::fs::PermissionsExt,
    time::{Duration, Instant},
};

use serde_json::Value;
use tests::process::Proc;

use crate::{
    containerfile::Containerfile,
    help::{Program, TELEMETRY},
    manifests::{Container, Manifests},
};

/// Manifest files not applied by default (each named, commented out, in kustomization.yaml).
const OPTIONAL: &[&str] = &["ingress.yaml"];

/// Settings naming a directory the service writes.
const WRITABLE: &[&str] = &["SLIPWAY_DATA_DIR", "SLIPWAY_KEYS_DIR"];

fn program(container: &Container<'_>) -> (Program, Vec<String>) {
    Program::from_argv(&container.argv(&Containerfile::load().entrypoint()))
}

#[test]
fn every_document_is_complete_and_applied() {
    let manifests = Manifests::load();
    let mut seen = BTreeSet::new();
    for doc in &manifests.docs {
        for field in ["apiVersion", "kind"] {
            assert!(
                doc.value[field].as_str().is_some_and(|s| !s.is_empty()),
                "{}: a document without {field}",
                doc.file
            );
        }
        assert!(
            !doc.name().is_empty(),
            "{}: a {} without metadata.name",
            doc.file,
            doc.kind()
        );
        assert!(
            seen.insert((doc.kind().to_owned(), doc.name().to_owned())),
            "{}: {} {} is defined twice",
            doc.file,
            doc.kind(),
            doc.name()
        );
    }
    for kind in [
        "Namespace",
        "Secret",
        "ConfigMap",
        "Deployment",
        "Service",
        "PersistentVolumeClaim",
    ] {
        assert!(
            manifests.of_kind(kind).next().is_some(),
            "no {kind} in deploy/kubernetes"
        );
    }

    let resources: Vec<&str> = manifests.kustomization["resources"]
        .as_array()
        .expect("kustomization.yaml lists resources")
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    for resource in &resources {
        assert!(
            manifests.files.iter().any(|f| f == resource),
            "kustomization.yaml lists {resource}, missing"
        );
    }
    let text = std::fs::read_to_string(crate::manifests::dir().join("kustomization.yaml")).unwrap();
    for file in &manifests.files {
        if !resources.contains(&file.as_str()) {
            assert!(
                OPTIONAL.contains(&file.as_str()) && text.contains(&format!("# - {file}")),
                "{file} is neither applied by kustomization.yaml nor an optional part named there"
            );
        }
    }
    let images: Vec<&str> = manifests.kustomization["images"]
        .as_array()
        .map(|a| a.iter().filter_map(|i| i["name"].as_str()).collect())
        .unwrap_or_default();
    for container in manifests.containers() {
        let image = container.value["image"].as_str().unwrap_or("");
        assert!(
            images.contains(&image),
            "{}: image {image} is not the Slipway image kustomization.yaml sets ({images:?})",
            container.context()
        );
    }
}

#[test]
fn containers_use_flags_and_settings_their_binary_has() {
    let manifests = Manifests::load();
    let mut parts = BTreeSet::new();
    let mut checked = 0;
    for container in manifests.containers() {
        let context = container.context();
        let (program, args) = program(&container);
        let help = program.help();
        help.check_args(&program, &args, &context);
        for var in container.env(&manifests) {
            help.check_env(&program, &var.name, &context);
            checked += usize::from(var.name.starts_with("SLIPWAY_"));
        }
        parts.insert(program.part().to_owned());
    }
    assert!(checked > 10, "only {checked} SLIPWAY_* settings found in the manifests");
    let all: BTreeSet<String> = ["auth", "registry", "deploy", "gateway"].map(String::from).into();
    assert_eq!(
        parts, all,
        "every part of Slipway runs exactly as one of the containers"
    );
}

/// `http://host[:port]/…` as (host, port).
fn host_port(url: &str) -> Option<(String, u64)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split('/').next()?;
    let default = if scheme == "https" { 443 } else { 80 };
    Some(match authority.rsplit_once(':') {
        Some((host, port)) => (host.to_owned(), port.parse().ok()?),
        None => (authority.to_owned(), default),
    })
}

#[test]
fn settings_point_at_what_the_manifests_define() {
    let manifests = Manifests::load();
    for container in manifests.containers() {
        let context = container.context();
        for var in container.env(&manifests) {
            let name = var.name.as_str();
            for (field, kind) in [("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")] {
                let reference = &var.source["valueFrom"][field];
                if let Some(object) = reference["name"].as_str() {
                    let key = reference["key"].as_str().unwrap_or("");
                    let doc = manifests
                        .find(kind, object)
                        .unwrap_or_else(|| panic!("{context}: {name} reads {kind} {object}, not defined"));
                    assert!(
                        doc.keys().iter().any(|k| k == key),
                        "{context}: {kind} {object} has no key {key}"
                    );
                }
            }
            let Some(value) = var.value.as_deref() else { continue };
            if name == "SLIPWAY_LISTEN" {
                let addr: SocketAddr = value
                    .parse()
                    .unwrap_or_else(|e| panic!("{context}: {name}={value}: {e}"));
                assert!(
                    addr.ip().is_unspecified(),
                    "{context}: in a pod, listen on every interface, not {addr}"
                );
                assert!(
                    container.declares_port(&Value::from(addr.port())),
                    "{context}: listens on {} but does not declare that port",
                    addr.port()
                );
            }
            if name.ends_with("_FILE") || name.ends_with("_DIR") || name == "SLIPWAY_PROJECT_ROOT" {
                check_path(&container, name, value, &manifests);
            }
            // In-cluster URLs (`http://slipway-auth:50051`) name a Service and one of its ports.
            if name.ends_with("_URL")
                && let Some((host, port)) = host_port(value)
                && (!host.contains('.') || host.contains(".svc"))
            {
                let host = host.split('.').next().unwrap_or("");
                let service = manifests
                    .find("Service", host)
                    .unwrap_or_else(|| panic!("{context}: {name}={value} names no Service of the manifests"));
                let ports = service.value["spec"]["ports"].as_array().unwrap();
                assert!(
                    ports.iter().any(|p| p["port"] == port),
                    "{context}: {name}={value}, but Service {host} has no port {port}"
                );
            }
        }
    }
}

/// A path setting lies on a volume of the container (the root filesystem is read-only),
/// writable when the service writes there, and names a real key of a Secret volume.
fn check_path(container: &Container<'_>, name: &str, path: &str, manifests: &Manifests) {
    let context = container.context();
    assert!(path.starts_with('/'), "{context}: {name}={path} is not absolute");
    let Some((mount, relative)) = container.mount_of(path) else {
        // A directory only read, holding a mount (the project root around the services
        // directory), exists in the pod; anything else would not.
        let holds_mount = container.mounts().iter().any(|m| {
            m["mountPath"]
                .as_str()
                .is_some_and(|p| p.starts_with(&format!("{path}/")))
        });
        assert!(
            holds_mount && !WRITABLE.contains(&name) && !name.ends_with("_FILE"),
            "{context}: {name}={path} is on no volume (the root filesystem is read-only)"
        );
        return;
    };
    let volume_name = mount["name"].as_str().unwrap();
    let volume = container
        .workload
        .volume(volume_name)
        .unwrap_or_else(|| panic!("{context}: mounts undeclared volume {volume_name}"));
    if WRITABLE.contains(&name) {
        assert!(
            mount["readOnly"] != true,
            "{context}: {name}={path} is on a read-only mount"
        );
        assert!(
            volume["secret"].is_null() && volume["configMap"].is_null(),
            "{context}: {name}={path} must be writable, not a Secret or ConfigMap"
        );
    }
    if name.ends_with("_FILE") {
        let (kind, object) = if let Some(secret) = volume["secret"]["secretName"].as_str() {
            ("Secret", secret)
        } else if let Some(map) = volume["configMap"]["name"].as_str() {
            ("ConfigMap", map)
        } else {
            return;
        };
        let source = if kind == "Secret" {
            &volume["secret"]
        } else {
            &volume["configMap"]
        };
        let files: Vec<String> = match source["items"].as_array() {
            Some(items) => items.iter().map(|i| i["path"].as_str().unwrap().to_owned()).collect(),
            None => manifests.find(kind, object).map(|d| d.keys()).unwrap_or_default(),
        };
        assert!(
            files.contains(&relative),
            "{context}: {name}={path}, but {kind} {object} mounted there has no {relative} ({files:?})"
        );
    }
}

#[test]
fn services_probes_and_volumes_resolve() {
    let manifests = Manifests::load();
    let workloads = manifests.workloads();
    for workload in &workloads {
        let name = workload.name();
        let labels = workload.pod_labels();
        let selector = workload.spec()["selector"]["matchLabels"].as_object().unwrap();
        for (key, value) in selector {
            assert_eq!(&labels[key], value, "{name}: its selector does not match its own pods");
        }
        for container in workload.containers() {
            let context = container.context();
            for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
                for action in ["httpGet", "tcpSocket", "grpc"] {
                    let port = &container.value[probe][action]["port"];
                    if !port.is_null() {
                        assert!(
                            container.declares_port(port),
                            "{context}: {probe} on undeclared port {port}"
                        );
                    }
                }
            }
            for mount in container.mounts() {
                let volume = mount["name"].as_str().unwrap();
                assert!(
                    workload.volume(volume).is_some(),
                    "{context}: mounts undeclared volume {volume}"
                );
            }
        }
        for volume in workload.volumes() {
            for (field, name_field, kind) in [
                ("secret", "secretName", "Secret"),
                ("configMap", "name", "ConfigMap"),
                ("persistentVolumeClaim", "claimName", "PersistentVolumeClaim"),
            ] {
                let Some(object) = volume[field][name_field].as_str() else {
                    continue;
                };
                let doc = manifests
                    .find(kind, object)
                    .unwrap_or_else(|| panic!("{name}: volume {} uses {kind} {object}, not defined", volume["name"]));
                for item in volume[field]["items"].as_array().map(Vec::as_slice).unwrap_or_default() {
                    let key = item["key"].as_str().unwrap();
                    assert!(
                        doc.keys().iter().any(|k| k == key),
                        "{name}: {kind} {object} has no key {key}"
                    );
                }
            }
        }
        if let Some(port) =
            workload.doc.value["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"].as_str()
        {
            let port = Value::from(port.parse::<u64>().unwrap());
            assert!(
                workload.containers().iter().any(|c| c.declares_port(&port)),
                "{name}: metrics scraped on undeclared port {port}"
            );
        }
    }

    for service in manifests.of_kind("Service") {
        let selector = service.value["spec"]["selector"]
            .as_object()
            .expect("a Service with a selector");
        let matched: Vec<_> = workloads
            .iter()
            .filter(|w| selector.iter().all(|(k, v)| w.pod_labels()[k] == *v))
            .collect();
        assert!(!matched.is_empty(), "Service {} selects no pods", service.name());
        for port in service.value["spec"]["ports"].as_array().unwrap() {
            let target = if port["targetPort"].is_null() {
                &port["port"]
            } else {
                &port["targetPort"]
            };
            for workload in &matched {
                assert!(
                    workload.containers().iter().any(|c| c.declares_port(target)),
                    "Service {}: target port {target} is not a port of {}",
                    service.name(),
                    workload.name()
                );
            }
        }
    }

    for ingress in manifests.of_kind("Ingress") {
        for rule in ingress.value["spec"]["rules"].as_array().unwrap() {
            for path in rule["http"]["paths"].as_array().unwrap() {
                let backend = &path["backend"]["service"];
                let name = backend["name"].as_str().unwrap();
                let service = manifests
                    .find("Service", name)
                    .unwrap_or_else(|| panic!("Ingress {}: no Service {name}", ingress.name()));
                let ports = service.value["spec"]["ports"].as_array().unwrap();
                let port = &backend["port"];
                assert!(
                    ports
                        .iter()
                        .any(|p| (port["name"].is_string() && p["name"] == port["name"]) || p["port"] == port["number"]),
                    "Ingress {}: Service {name} has no port {port}",
                    ingress.name()
                );
            }
        }
    }
}

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
            let (program, _) = program(&container);
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
    let mut deploy_seen = false;
    for workload in manifests.workloads() {
        let runs_deploy = workload.containers().iter().any(|c| program(c).0.part() == "deploy");
        let rwo_claim = workload
            .volumes()
            .iter()
            .filter_map(|v| v["persistentVolumeClaim"]["claimName"].as_str())
            .find(|claim| read_write_once(claim));
        if runs_deploy || rwo_claim.is_some() {
            // The runner owns its scripts' processes; a ReadWriteOnce volume attaches to one pod.
            let why = if runs_deploy {
                "the deploy service"
            } else {
                "a ReadWriteOnce volume"
            };
            assert_eq!(
                workload.spec()["replicas"],
                1,
                "{}: one replica ({why})",
                workload.name()
            );
            assert_eq!(
                workload.spec()["strategy"]["type"],
                "Recreate",
                "{}: never two pods at once ({why})",
                workload.name()
            );
        }
        deploy_seen |= runs_deploy;
    }
    assert!(deploy_seen, "no Deployment runs the deploy service");
}

#[test]
fn secret_templates_hold_only_placeholders() {
    let manifests = Manifests::load();
    let secrets: Vec<_> = manifests.of_kind("Secret").collect();
    assert!(!secrets.is_empty());
    for secret in secrets {
        assert!(
            secret.value["data"].is_null(),
            "Secret {}: use stringData placeholders",
            secret.name()
        );
        let values = secret.value["stringData"].as_object().expect("stringData");
        for (key, value) in values {
            assert!(
                value.as_str().is_some_and(|v| v.contains("REPLACE")),
                "Secret {}: {key} must be a REPLACE placeholder, never a real secret",
                secret.name()
            );
        }
    }
}

/// Kills the process when the test ends, whatever happens.
struct Running(Proc);

impl Drop for Running {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.0.log_text());
        }
        self.0.kill();
    }
}

fn program_args(program: &Program, args: &[&str]) -> Vec<String> {
    program
        .subcommand
        .iter()
        .cloned()
        .chain(args.iter().map(|a| (*a).to_owned()))
        .collect()
}

#[test]
fn services_trusting_the_credential_refuse_the_placeholder() {
    let manifests = Manifests::load();
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for container in manifests.containers() {
        let Some(path) = container.env_value(&manifests, "SLIPWAY_DEPLOY_CREDENTIAL_FILE") else {
            continue;
        };
        let (mount, key) = container.mount_of(&path).unwrap();
        let volume = container.workload.volume(mount["name"].as_str().unwrap()).unwrap();
        let secret = volume["secret"]["secretName"]
            .as_str()
            .expect("the credential comes from a Secret");
        let placeholder = manifests.value_of("Secret", secret, &key).unwrap();

        let (program, _) = program(&container);
        let part = program.part().to_owned();
        let file = dir.path().join(format!("{part}.key"));
        std::fs::write(&file, &placeholder).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let data = dir.path().join(format!("{part}-data"));
        std::fs::create_dir(&data).unwrap();
        let args = program_args(
            &program,
            &[
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                data.to_str().unwrap(),
                "--deploy-credential-file",
                file.to_str().unwrap(),
            ],
        );
        let mut proc = Running(Proc::spawn(&part, &program.binary, &args, &[], dir.path()));
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = proc.0.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "{part} accepted the placeholder credential and kept running"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let log = proc.0.log_text();
        assert!(
            !status.success(),
            "{part} exited successfully with the placeholder credential:\n{log}"
        );
        assert!(log.contains("credential"), "{part} does not say why it stopped:\n{log}");
        assert!(
            !log.contains(placeholder.trim()),
            "{part} logged the credential:\n{log}"
        );
        checked += 1;
    }
    assert!(
        checked >= 2,
        "the auth and registry services both trust the deploy credential"
    );
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

#[tokio::test(flavor = "multi_thread")]
async fn gateway_answers_the_probes_the_manifests_use() {
    let manifests = Manifests::load();
    let container = manifests
        .containers()
        .into_iter()
        .find(|c| program(c).0.part() == "gateway")
        .expect("a gateway container");
    let (program, _) = program(&container);
    let telemetry: Vec<(&str, String)> = TELEMETRY
        .iter()
        .filter_map(|name| Some((*name, container.env_value(&manifests, name)?)))
        .collect();
    assert!(!telemetry.is_empty(), "the gateway's logs: SLIPWAY_LOG_FORMAT=json");

    let dir = tempfile::tempdir().unwrap();
    let addr_file = dir.path().join("gateway.addr");
    // No backend answers on port 9: the gateway is alive and not ready.
    let args = program_args(
        &program,
        &[
            "--listen",
            "127.0.0.1:0",
            "--addr-file",
            addr_file.to_str().unwrap(),
            "--auth-url",
            "http://127.0.0.1:9",
            "--registry-url",
            "http://127.0.0.1:9",
            "--deploy-url",
            "http://127.0.0.1:9",
            "--backend-timeout-ms",
            "2000",
        ],
    );
    let mut gateway = Running(Proc::spawn("gateway", &program.binary, &args, &telemetry, dir.path()));
    let addr = gateway.0.wait_addr(&addr_file);

    let http = reqwest::Client::new();
    let get = |path: String| {
        let http = http.clone();
        async move {
            http.get(format!("http://{addr}{path}"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let path = |probe: &str| container.value[probe]["httpGet"]["path"].as_str().unwrap().to_owned();
    assert_eq!(get(path("livenessProbe")).await, 200, "liveness");
    assert_eq!(get(path("readinessProbe")).await, 503, "readiness without backends");
    let annotations = &container.workload.doc.value["spec"]["template"]["metadata"]["annotations"];
    if let Some(metrics) = annotations["prometheus.io/path"].as_str() {
        assert_eq!(get(metrics.to_owned()).await, 200, "metrics");
    }

    if telemetry
        .iter()
        .any(|(name, value)| *name == "SLIPWAY_LOG_FORMAT" && value == "json")
    {
        let log = gateway.0.log_text();
        let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(!lines.is_empty(), "the gateway logged nothing");
        for line in lines {
            let parsed: Result<Value, _> = serde_json::from_str(line);
            assert!(parsed.is_ok_and(|v| v.is_object()), "not a JSON log line: {line}");
        }
    }
}

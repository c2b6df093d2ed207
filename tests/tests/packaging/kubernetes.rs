//! deploy/kubernetes against the real binaries and against itself: every document is
//! complete and applied, every flag and setting exists in the binary the container
//! runs, and every reference resolves (Services, ports, probes, volumes, Secret keys,
//! backend URLs, paths on volumes).

use std::{collections::BTreeSet, net::SocketAddr};

use serde_json::Value;

use crate::manifests::{Container, Manifests};

/// Manifest files not applied by default (each named, commented out, in kustomization.yaml).
const OPTIONAL: &[&str] = &["ingress.yaml"];

/// Settings naming a directory the service writes.
const WRITABLE: &[&str] = &["SLIPWAY_DATA_DIR"];

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
    for kind in ["Namespace", "Secret", "ConfigMap", "Deployment", "Service"] {
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
        let (program, args) = container.program();
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

//! The Kubernetes manifests in deploy/kubernetes as data: every YAML document of every
//! file (kustomization.yaml apart), and the pods, containers and references in them.

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;

use crate::{containerfile::Containerfile, deploy_dir, help::Program};

pub fn dir() -> PathBuf {
    deploy_dir().join("kubernetes")
}

/// One YAML document and the file it came from.
pub struct Doc {
    pub file: String,
    pub value: Value,
}

impl Doc {
    pub fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or("")
    }
    pub fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or("")
    }
    pub fn is(&self, kind: &str, name: &str) -> bool {
        self.kind() == kind && self.name() == name
    }
    /// Keys of a Secret or ConfigMap.
    pub fn keys(&self) -> Vec<String> {
        ["data", "stringData", "binaryData"]
            .iter()
            .filter_map(|field| self.value[field].as_object())
            .flat_map(|map| map.keys().cloned())
            .collect()
    }
}

pub struct Manifests {
    pub docs: Vec<Doc>,
    pub kustomization: Value,
    /// Every manifest file name, kustomization.yaml apart.
    pub files: Vec<String>,
}

impl Manifests {
    pub fn load() -> Manifests {
        let dir = dir();
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
            .collect();
        files.sort();
        let kustomization = files
            .iter()
            .position(|f| f == "kustomization.yaml")
            .map(|i| files.remove(i))
            .expect("deploy/kubernetes/kustomization.yaml");
        let kustomization = parse(&kustomization).pop().expect("a kustomization").value;
        let docs = files.iter().flat_map(|file| parse(file)).collect();
        Manifests {
            docs,
            kustomization,
            files,
        }
    }

    pub fn find(&self, kind: &str, name: &str) -> Option<&Doc> {
        self.docs.iter().find(|d| d.is(kind, name))
    }

    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Doc> + 'a {
        self.docs.iter().filter(move |d| d.kind() == kind)
    }

    /// Everything that runs pods: each with its pod template.
    pub fn workloads(&self) -> Vec<Workload<'_>> {
        let workloads: Vec<Workload<'_>> = self
            .docs
            .iter()
            .filter(|d| ["Deployment", "StatefulSet", "DaemonSet"].contains(&d.kind()))
            .map(|doc| Workload { doc })
            .collect();
        assert!(!workloads.is_empty(), "no Deployment in deploy/kubernetes");
        workloads
    }

    pub fn containers(&self) -> Vec<Container<'_>> {
        self.workloads().into_iter().flat_map(|w| w.containers()).collect()
    }

    /// The Secret (or ConfigMap) value `kind`/`name`/`key`, if the manifests hold it.
    pub fn value_of(&self, kind: &str, name: &str, key: &str) -> Option<String> {
        let doc = self.find(kind, name)?;
        doc.value["stringData"][key]
            .as_str()
            .or_else(|| doc.value["data"][key].as_str())
            .map(str::to_owned)
    }
}

fn parse(file: &str) -> Vec<Doc> {
    let path = dir().join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|document| Value::deserialize(document).unwrap_or_else(|e| panic!("{file}: invalid YAML: {e}")))
        .filter(|value| !value.is_null())
        .map(|value| Doc {
            file: file.to_owned(),
            value,
        })
        .collect()
}

#[derive(Clone, Copy)]
pub struct Workload<'a> {
    pub doc: &'a Doc,
}

impl<'a> Workload<'a> {
    pub fn name(&self) -> &'a str {
        self.doc.value["metadata"]["name"].as_str().unwrap_or("")
    }
    pub fn spec(&self) -> &'a Value {
        &self.doc.value["spec"]
    }
    pub fn pod(&self) -> &'a Value {
        &self.doc.value["spec"]["template"]["spec"]
    }
    pub fn pod_labels(&self) -> &'a Value {
        &self.doc.value["spec"]["template"]["metadata"]["labels"]
    }
    pub fn volume(&self, name: &str) -> Option<&'a Value> {
        self.pod()["volumes"].as_array()?.iter().find(|v| v["name"] == name)
    }
    pub fn volumes(&self) -> &'a [Value] {
        self.pod()["volumes"].as_array().map_or(&[], Vec::as_slice)
    }
    pub fn containers(&self) -> Vec<Container<'a>> {
        ["initContainers", "containers"]
            .iter()
            .filter_map(|field| self.pod()[field].as_array())
            .flatten()
            .map(|value| Container { workload: *self, value })
            .collect()
    }
}

#[derive(Clone, Copy)]
pub struct Container<'a> {
    pub workload: Workload<'a>,
    pub value: &'a Value,
}

/// One environment variable of a container: a literal value or a reference.
pub struct EnvVar<'a> {
    pub name: String,
    pub value: Option<String>,
    pub source: &'a Value,
}

impl<'a> Container<'a> {
    pub fn context(&self) -> String {
        format!(
            "{}: container {} of {}",
            self.workload.doc.file,
            self.value["name"].as_str().unwrap_or("?"),
            self.workload.name()
        )
    }

    /// The program the container runs (with the image's entrypoint) and its arguments.
    pub fn program(&self) -> (Program, Vec<String>) {
        Program::from_argv(&self.argv(&Containerfile::load().entrypoint()))
    }

    /// The whole command line: `command` (or the image's entrypoint) then `args`.
    pub fn argv(&self, entrypoint: &[String]) -> Vec<String> {
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
                .unwrap_or_default()
        };
        let mut argv = if self.value["command"].is_array() {
            strings(&self.value["command"])
        } else {
            entrypoint.to_vec()
        };
        argv.extend(strings(&self.value["args"]));
        argv
    }

    pub fn ports(&self) -> Vec<&'a Value> {
        self.value["ports"]
            .as_array()
            .map(|a| a.iter().collect())
            .unwrap_or_default()
    }

    /// Whether `port` (a number or a port name) is one this container declares.
    pub fn declares_port(&self, port: &Value) -> bool {
        self.ports()
            .iter()
            .any(|p| (port.is_string() && p["name"] == *port) || (port.is_u64() && p["containerPort"] == *port))
    }

    /// `env` entries, then every key of the ConfigMaps and Secrets in `envFrom`.
    pub fn env(&self, manifests: &'a Manifests) -> Vec<EnvVar<'a>> {
        let mut vars: Vec<EnvVar<'a>> = self.value["env"]
            .as_array()
            .map(|a| a.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|e| EnvVar {
                name: e["name"].as_str().unwrap_or("").to_owned(),
                value: e["value"].as_str().map(str::to_owned),
                source: e,
            })
            .collect();
        for from in self.value["envFrom"]
            .as_array()
            .map(|a| a.as_slice())
            .unwrap_or_default()
        {
            for (field, kind) in [("configMapRef", "ConfigMap"), ("secretRef", "Secret")] {
                if let Some(name) = from[field]["name"].as_str() {
                    let doc = manifests
                        .find(kind, name)
                        .unwrap_or_else(|| panic!("{}: envFrom names {kind} {name}, not defined", self.context()));
                    for key in doc.keys() {
                        vars.push(EnvVar {
                            value: manifests.value_of(kind, name, &key),
                            name: key,
                            source: from,
                        });
                    }
                }
            }
        }
        vars
    }

    pub fn env_value(&self, manifests: &'a Manifests, name: &str) -> Option<String> {
        self.env(manifests).into_iter().find(|v| v.name == name)?.value
    }

    pub fn mounts(&self) -> Vec<&'a Value> {
        self.value["volumeMounts"]
            .as_array()
            .map(|a| a.iter().collect())
            .unwrap_or_default()
    }

    /// The mount holding `path` (the deepest one), and `path` relative to it.
    pub fn mount_of(&self, path: &str) -> Option<(&'a Value, String)> {
        self.mounts()
            .into_iter()
            .filter_map(|m| {
                let at = m["mountPath"].as_str()?.trim_end_matches('/');
                let rest = path.strip_prefix(at)?;
                (rest.is_empty() || rest.starts_with('/')).then(|| (m, rest.trim_start_matches('/').to_owned()))
            })
            .max_by_key(|(m, _)| m["mountPath"].as_str().map_or(0, str::len))
    }
}

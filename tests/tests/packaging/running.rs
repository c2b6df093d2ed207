//! deploy/kubernetes against running binaries (on loopback): the Secret templates hold
//! placeholders the services refuse, and the gateway answers the probes, metrics path
//! and log format the manifests use.

use std::{
    os::unix::fs::PermissionsExt,
    time::{Duration, Instant},
};

use serde_json::Value;
use tests::process::Proc;

use crate::{
    help::{Program, TELEMETRY},
    manifests::Manifests,
};

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

        let (program, _) = container.program();
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

/// Every auth replica reads the key-encryption key from one Secret, whose placeholder
/// the auth service refuses.
#[test]
fn the_auth_service_refuses_the_placeholder_kek() {
    let manifests = Manifests::load();
    let auth = manifests
        .containers()
        .into_iter()
        .find(|c| c.program().0.part() == "auth")
        .expect("an auth container");
    let path = auth
        .env_value(&manifests, "SLIPWAY_KEK_FILE")
        .expect("SLIPWAY_KEK_FILE");
    let (mount, key) = auth.mount_of(&path).unwrap();
    let volume = auth.workload.volume(mount["name"].as_str().unwrap()).unwrap();
    let secret = volume["secret"]["secretName"]
        .as_str()
        .expect("the key-encryption key comes from a Secret");
    let placeholder = manifests.value_of("Secret", secret, &key).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kek");
    std::fs::write(&file, &placeholder).unwrap();
    let error = auth_service::kek::Kek::load(&file).unwrap_err().to_string();
    assert!(error.contains("not 32 bytes in base64"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_answers_the_probes_the_manifests_use() {
    let manifests = Manifests::load();
    let container = manifests
        .containers()
        .into_iter()
        .find(|c| c.program().0.part() == "gateway")
        .expect("a gateway container");
    let (program, _) = container.program();
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

//! `slipway up` as a newcomer runs it: the whole system from one command, the admin
//! bootstrap, `slipway users create`, a clean stop on SIGTERM, and a second `up` on
//! the same data dir keeping everything.

use std::{
    net::SocketAddr,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use tests::{
    process::{Proc, bin_dir},
    up_fixture::{login, me, proc_log, start_up, start_up_with, wait_for},
};

#[tokio::test(flavor = "multi_thread")]
async fn up_runs_the_whole_system_and_keeps_data_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");

    // First start: no password given, so one is generated and printed once.
    let (mut up, addr) = start_up(&data_dir, dir.path(), "up-1", &[]);
    let log = proc_log(dir.path(), "up-1");
    let password = log
        .lines()
        .find_map(|l| l.split("with password ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no generated password printed:\n{log}"))
        .to_owned();
    let token = login(addr, "admin", &password)
        .await
        .expect("admin login with the printed password");
    assert_eq!(me(addr, &token).await["name"], "admin");
    // No ./services here: the example services, and the startup output says so, and
    // that this is a single-user setup.
    assert!(log.contains("(the example services"), "{log}");
    assert!(log.contains("single-user development setup"), "{log}");
    assert!(log.contains(&format!("console    http://{addr}/ui/")), "{log}");
    // Secrets at rest: the data dir and the databases are the user's alone.
    let mode = |p: &Path| std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions()) & 0o777;
    assert_eq!(mode(&data_dir), 0o700);
    for db in ["auth.db", "registry.db", "deploy.db"] {
        assert_eq!(mode(&data_dir.join(db)), 0o600, "{db}");
    }
    // The services' credentials: a private folder, each file the owner's alone.
    assert_eq!(mode(&data_dir.join("credentials")), 0o700);
    for credential in ["deploy-service.key", "registry-service.key", "gateway.key"] {
        assert_eq!(
            mode(&data_dir.join("credentials").join(credential)),
            0o600,
            "{credential}"
        );
    }

    // SIGTERM stops up and every process it started.
    assert!(
        up.stop(Duration::from_secs(20)),
        "slipway up needed SIGKILL:\n{}",
        up.log_text()
    );
    assert!(up.child.wait().unwrap().success(), "{}", up.log_text());
    assert!(
        reqwest::get(format!("http://{addr}/healthz")).await.is_err(),
        "gateway still answers after stop"
    );
    let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    let data = data_dir.to_string_lossy();
    let leftovers: Vec<_> = String::from_utf8_lossy(&ps.stdout)
        .lines()
        .filter(|l| l.contains("serve") && l.contains(&*data))
        .map(String::from)
        .collect();
    assert!(leftovers.is_empty(), "processes left running: {leftovers:?}");

    // `slipway users create` on the same data dir, password from the environment.
    let status = Command::new(bin_dir().join("slipway"))
        .args(["users", "create", "bob", "--data-dir", &data])
        .env("SLIPWAY_PASSWORD", "bobs-password")
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    // A second create of the same name fails without changing anything.
    let status = Command::new(bin_dir().join("slipway"))
        .args(["users", "create", "bob", "--data-dir", &data])
        .env("SLIPWAY_PASSWORD", "another-password")
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success());

    // Second start on the same data dir: the admin and bob are still there, and the
    // admin password given now does not replace the existing one.
    let envs = [("SLIPWAY_ADMIN_PASSWORD", "ignored-because-admin-exists".to_owned())];
    let (mut up, addr) = start_up(&data_dir, dir.path(), "up-2", &envs);
    assert!(login(addr, "admin", &password).await.is_some(), "{}", up.log_text());
    assert!(login(addr, "admin", "ignored-because-admin-exists").await.is_none());
    let bob = login(addr, "bob", "bobs-password").await.expect("bob logs in");
    assert_eq!(me(addr, &bob).await["name"], "bob");
    assert!(login(addr, "bob", "another-password").await.is_none());
    assert!(!up.log_text().contains(&password), "the password was printed again");
    assert!(up.stop(Duration::from_secs(20)));
}

/// A service folder: `config.json` and an executable `deploy.sh` with `script`.
fn write_service(root: &Path, name: &str, config: &Value, script: &str) {
    use std::os::unix::fs::PermissionsExt;
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let path = dir.join("deploy.sh");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

async fn services(addr: SocketAddr, token: &str) -> Vec<Value> {
    let body: Value = reqwest::Client::new()
        .get(format!("http://{addr}/services/"))
        .bearer_auth(token)
        .send()
        .await
        .expect("GET /services/")
        .json()
        .await
        .expect("json");
    body.as_array().cloned().unwrap_or_else(|| panic!("not a list: {body}"))
}

/// Mints a service token for `service` with a user token and starts a deployment.
async fn start_deployment(addr: SocketAddr, user_token: &str, service: &str) {
    let client = reqwest::Client::new();
    let minted: Value = client
        .post(format!("http://{addr}/service-token"))
        .bearer_auth(user_token)
        .json(&serde_json::json!({"service": service, "origin": "ci", "expiration_in_days": 1}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let service_token = minted["service_token"].as_str().unwrap_or_else(|| panic!("{minted}"));
    let started = client
        .post(format!("http://{addr}/deployments/"))
        .bearer_auth(service_token)
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 200);
}

/// Every `SLIPWAY_*` variable `up` documents, and nothing else: each must take effect
/// (before, `SLIPWAY_ADMIN_USER` reached the auth service without its password and it
/// refused to start).
#[tokio::test(flavor = "multi_thread")]
async fn up_takes_each_documented_variable() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let services_dir = dir.path().join("site").join("services");
    let project_root = dir.path().join("root");
    // In a folder of its own: beside the data dir, Landlock lets scripts create nothing.
    std::fs::create_dir(dir.path().join("out")).unwrap();
    let marker = dir.path().join("out").join("cwd-of-script");
    // The playbook lies in the project root only, not in the services directory's
    // parent: the service syncs only if the registry got the project root.
    std::fs::create_dir_all(project_root.join("ansible")).unwrap();
    std::fs::write(
        project_root.join("ansible/deploy.yml"),
        "- hosts: all\n  tasks:\n    - name: Install\n      debug: {msg: x}\n",
    )
    .unwrap();
    write_service(
        &services_dir,
        "play",
        &serde_json::json!({"ansible_playbook": "ansible/deploy.yml"}),
        &format!("#!/bin/sh\npwd > '{}'\n", marker.display()),
    );
    let envs = [
        ("SLIPWAY_DATA_DIR", data_dir.to_string_lossy().into_owned()),
        ("SLIPWAY_SERVICES_DIR", services_dir.to_string_lossy().into_owned()),
        ("SLIPWAY_PROJECT_ROOT", project_root.to_string_lossy().into_owned()),
        ("SLIPWAY_ADMIN_USER", "chief".to_owned()),
        ("SLIPWAY_ADMIN_PASSWORD", "chiefs-password".to_owned()),
    ];
    let (mut up, addr) = start_up_with(&data_dir, dir.path(), "up-env", &[], &envs, None);
    let log = up.log_text();
    assert!(log.contains("(--services-dir)"), "{log}");

    let token = login(addr, "chief", "chiefs-password")
        .await
        .unwrap_or_else(|| panic!("SLIPWAY_ADMIN_USER/PASSWORD not used:\n{}", up.log_text()));
    assert!(login(addr, "admin", "chiefs-password").await.is_none());
    let listed = services(addr, &token).await;
    let play = listed.iter().find(|s| s["name"] == "play").unwrap_or_else(|| {
        panic!(
            "the service was not synced from the project root: {listed:?}\n{}",
            up.log_text()
        )
    });
    assert_eq!(
        play["data"]["steps"],
        serde_json::json!([{"name": "Gathering Facts"}, {"name": "Install"}])
    );

    // The deploy service got the project root too: the script runs there.
    start_deployment(addr, &token, "play").await;
    // `pwd > file` creates the file before it writes: wait for the whole line.
    let cwd = wait_for("the deploy script", &mut up, || {
        std::fs::read_to_string(&marker)
            .ok()
            .filter(|text| text.ends_with('\n'))
    });
    assert_eq!(Path::new(cwd.trim()), project_root.canonicalize().unwrap());
    assert!(up.stop(Duration::from_secs(20)), "{}", up.log_text());
}

/// Without `--services-dir`, `./services` in the working directory wins over the
/// examples compiled into the binary, and the startup output says which it took.
#[tokio::test(flavor = "multi_thread")]
async fn up_defaults_to_services_in_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    write_service(
        &work.join("services"),
        "mine",
        &serde_json::json!({}),
        "#!/bin/sh\nexit 0\n",
    );
    let envs = [("SLIPWAY_ADMIN_PASSWORD", "admins-password".to_owned())];
    // The data dir is the default too: ./slipway-data in the working directory.
    let data_dir = work.join("slipway-data");
    let (mut up, addr) = start_up_with(&data_dir, dir.path(), "up-cwd", &[], &envs, Some(&work));
    let log = up.log_text();
    assert!(log.contains("(./services in the working directory)"), "{log}");
    let token = login(addr, "admin", "admins-password").await.expect("admin logs in");
    let names: Vec<Value> = services(addr, &token).await.iter().map(|s| s["name"].clone()).collect();
    assert_eq!(names, vec![Value::from("mine")], "{}", up.log_text());
    assert!(up.stop(Duration::from_secs(20)), "{}", up.log_text());
}

/// Asks the kernel for its Landlock ABI version, as the deploy service does.
#[allow(unsafe_code)] // one system call with no memory involved
fn kernel_has_landlock() -> bool {
    // SAFETY: landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION).
    unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            1u32,
        ) >= 1
    }
}

/// Under `up` every service shares the data dir and runs as the same user. Where the
/// kernel has Landlock, the deploy service keeps scripts out of it: no credential, no
/// database, no other run's config file, while the script still reads its own config
/// file and everything outside. Where it has not, scripts run unrestricted and the
/// deploy service says so.
#[tokio::test(flavor = "multi_thread")]
async fn up_keeps_deploy_scripts_out_of_the_data_dir_where_the_kernel_has_landlock() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let services_dir = dir.path().join("site").join("services");
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let (d, o) = (data.display(), out.display());
    let script = format!(
        "#!/bin/sh\n\
         try() {{ if \"$@\" >/dev/null 2>&1; then echo yes; else echo no; fi; }}\n\
         try cat '{d}/credentials/deploy-service.key' > '{o}/credential'\n\
         try cat '{d}/auth.db' > '{o}/auth_db'\n\
         try ls '{d}/deploy-runs' > '{o}/runs'\n\
         try grep -q deployment_id \"$2\" > '{o}/own_config'\n\
         try cat \"$0\" > '{o}/elsewhere'\n\
         echo done > '{o}/done'\n"
    );
    write_service(&services_dir, "probe", &serde_json::json!({}), &script);
    let args = [
        "--data-dir",
        &d.to_string(),
        "--services-dir",
        &services_dir.to_string_lossy(),
    ]
    .map(String::from);
    let envs = [("SLIPWAY_ADMIN_PASSWORD", "admins-password".to_owned())];
    let (mut up, addr) = start_up_with(&data, dir.path(), "up-landlock", &args, &envs, None);
    let token = login(addr, "admin", "admins-password").await.expect("admin logs in");
    start_deployment(addr, &token, "probe").await;
    wait_for("the probe script", &mut up, || out.join("done").exists().then_some(()));

    let could = |what: &str| {
        std::fs::read_to_string(out.join(what))
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    let log = up.log_text();
    assert_eq!(could("own_config"), "yes", "its own config file\n{log}");
    assert_eq!(could("elsewhere"), "yes", "its own script, outside the data dir\n{log}");
    if kernel_has_landlock() {
        assert_eq!(could("credential"), "no", "the deploy service's credential");
        assert_eq!(could("auth_db"), "no", "the auth service's database");
        assert_eq!(could("runs"), "no", "other runs' config files");
    } else {
        eprintln!("NOTICE: this kernel has no Landlock; checking the unrestricted fallback");
        assert_eq!(could("credential"), "yes");
        assert!(log.contains("no Landlock"), "{log}");
    }
    assert!(up.stop(Duration::from_secs(20)), "{}", up.log_text());
}

/// A `slipway` binary installed elsewhere, with the example services in a `services`
/// folder beside it, and no `./services` where it runs: it takes the ones beside it.
#[tokio::test(flavor = "multi_thread")]
async fn up_defaults_to_services_next_to_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let install = dir.path().join("opt");
    std::fs::create_dir(&install).unwrap();
    let binary = install.join("slipway");
    if std::fs::hard_link(bin_dir().join("slipway"), &binary).is_err() {
        std::fs::copy(bin_dir().join("slipway"), &binary).unwrap();
    }
    write_service(
        &install.join("services"),
        "beside",
        &serde_json::json!({}),
        "#!/bin/sh\nexit 0\n",
    );
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let envs = [("SLIPWAY_ADMIN_PASSWORD", "admins-password".to_owned())];
    let data_dir = work.join("slipway-data");
    let binary = binary.to_string_lossy().into_owned();
    // An absolute path: `Proc` runs it instead of the one in the build directory.
    let args = ["up", "--http", "127.0.0.1:0"].map(String::from);
    let mut up = Proc::spawn_in("up-beside", &binary, &args, &envs, dir.path(), Some(&work));
    let addr: SocketAddr = wait_for("the gateway address", &mut up, || {
        std::fs::read_to_string(data_dir.join("run").join("gateway.addr"))
            .ok()
            .and_then(|t| t.trim().parse().ok())
    });
    wait_for("slipway is up", &mut up, || {
        proc_log(dir.path(), "up-beside")
            .contains("slipway is up")
            .then_some(())
    });
    let log = up.log_text();
    assert!(
        log.contains("(the example services next to the slipway binary)"),
        "{log}"
    );
    let token = login(addr, "admin", "admins-password").await.expect("admin logs in");
    let names: Vec<Value> = services(addr, &token).await.iter().map(|s| s["name"].clone()).collect();
    assert_eq!(names, vec![Value::from("beside")], "{}", up.log_text());
    assert!(up.stop(Duration::from_secs(20)), "{}", up.log_text());
}

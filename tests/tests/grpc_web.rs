//! grpc-web from a real browser: headless Chromium loads a page (tests/web) from a
//! loopback origin of its own, so every call to the gateway is cross-origin and goes
//! through CORS preflights; the page logs in, lists services, watches the services'
//! events over a server stream while a sync adds one, tries calls the gateway must
//! refuse, starts a deployment and follows its events until it finished, and posts
//! what it saw back to this test, which checks the real values.
//! Also the CORS answers themselves. On SQLite and PostgreSQL.
//!
//! Chromium is Debian's `chromium` (`.ci/run` installs it). Without it the browser
//! test is skipped with a notice, except in CI (`CI=true`), where it fails.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use axum::{
    Json, Router,
    extract::Path as UrlPath,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use proto::deploy::v1 as pb;
use serde_json::{Value, json};
use tests::{Backend, Process, Stack, on_every_backend, stack::ADMIN, stack::ADMIN_PASSWORD};
use tokio::sync::mpsc;

on_every_backend!(browser_logs_in_lists_and_watches_over_grpc_web, cors_for_browsers);

fn write_service(root: &Path, name: &str) {
    let dir = root.join(name);
    fs::create_dir_all(&dir).unwrap();
    let config = format!(r#"{{"description": "{name}", "steps": [{{"name": "build"}}]}}"#);
    fs::write(dir.join("config.json"), config).unwrap();
    let script = dir.join("deploy.sh");
    fs::write(
        &script,
        "#!/bin/sh\necho '{\"name\": \"build\", \"state\": \"success\", \"message\": \"built\"}'\n",
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
}

fn two_services(root: &Path) {
    write_service(root, "alpha");
    write_service(root, "beta");
}

/// Chromium's path: `$CHROMIUM`, else `chromium` on the PATH.
fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return Some(path.into());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// Serves tests/web, the scenario's settings at `/config`, and takes the page's
/// report at `/report`. Returns the page's origin and where reports arrive.
async fn serve_page(config: Value) -> (String, mpsc::Receiver<Value>) {
    let (reports, received) = mpsc::channel(4);
    let app = Router::new()
        .route("/config", get(move || async move { Json(config) }))
        .route(
            "/report",
            post(move |Json(report): Json<Value>| async move {
                let _ = reports.send(report).await;
                StatusCode::NO_CONTENT
            }),
        )
        .route("/{file}", get(static_file));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (origin, received)
}

async fn static_file(UrlPath(file): UrlPath<String>) -> Response {
    let kind = match file.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    match tokio::fs::read(dir.join(file.replace(['/', '\\'], ""))).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, kind)], bytes).into_response(),
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn browser_logs_in_lists_and_watches_over_grpc_web(backend: Backend) {
    let Some(chromium) = chromium() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "chromium is required in CI (.ci/run installs Debian's chromium)"
        );
        eprintln!("SKIPPED: chromium not found; install Debian's chromium to run the browser test");
        return;
    };
    let stack = Stack::start_with(backend, two_services).await;
    let admin = stack.admin_token().await;
    // Added to the folder after the start-up sync: the page's own sync adds it.
    write_service(&stack.services_dir(), "gamma");

    let (origin, mut reports) = serve_page(json!({
        "gateway": format!("http://{}", stack.gateway),
        "username": ADMIN,
        "password": ADMIN_PASSWORD,
    }))
    .await;
    let profile = tempfile::tempdir().unwrap();
    let log_path = profile.path().join("chromium.log");
    let log = fs::File::create(&log_path).unwrap();
    let mut browser = tokio::process::Command::new(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("{origin}/index.html"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromium.display()));
    let report = tokio::time::timeout(Duration::from_secs(90), reports.recv()).await;
    let _ = browser.kill().await;
    let report = match report {
        Ok(Some(report)) => report,
        _ => panic!(
            "no report from the page in 90 s\n----- chromium -----\n{}\n{}",
            fs::read_to_string(&log_path).unwrap_or_default(),
            stack.logs()
        ),
    };
    assert!(report.get("error").is_none(), "the page failed: {report:#}");

    // The token the browser got is a working user token of the admin.
    let token = report["token"].as_str().unwrap();
    assert_eq!(report["tokenType"], "bearer");
    let me = stack
        .http
        .get(stack.url("/users/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    assert_eq!(me.json::<Value>().await.unwrap()["name"], ADMIN);
    assert_eq!(report["wrongPassword"]["code"], 16, "{report:#}");
    assert_eq!(report["wrongPassword"]["message"], "Incorrect username or password");

    // The services it listed are those of the folder at start, with their real ids.
    let now: Value = stack
        .http
        .get(stack.url("/services/"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id_of = |name: &str| {
        now.as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("{name} not in {now}"))["id"]
            .clone()
    };
    assert_eq!(
        report["services"],
        json!([{"id": id_of("alpha"), "name": "alpha"}, {"id": id_of("beta"), "name": "beta"}])
    );
    assert_eq!(report["anonymous"]["code"], 16, "UNAUTHENTICATED: {report:#}");
    assert_eq!(report["internal"]["code"], 7, "PERMISSION_DENIED: {report:#}");

    // The server stream delivered the service its sync added.
    assert_eq!(report["added"], json!(["gamma"]));
    assert_eq!(
        report["event"],
        json!({"service": {"id": id_of("gamma"), "name": "gamma"}, "deleted": false})
    );

    // The deployment's events, streamed to the browser until it finished, are those
    // of the deployment it started, in order, and end with its success.
    let started = &report["started"];
    assert_eq!(started["service"], "alpha", "{report:#}");
    let id = started["id"].as_i64().unwrap();
    let events = report["deployEvents"].as_array().unwrap();
    let mut last_sequence = 0;
    for event in events {
        let sequence = event["sequence"].as_i64().unwrap();
        assert!(sequence > last_sequence, "in order: {events:#?}");
        last_sequence = sequence;
        let of = event["deployment"]["id"]
            .as_i64()
            .or(event["step"]["deploymentId"].as_i64());
        assert_eq!(of, Some(id), "only the started deployment's events: {event}");
    }
    assert!(
        events
            .iter()
            .any(|e| e["step"]["name"] == "build" && e["step"]["state"] == "success"),
        "the reported step: {events:#?}"
    );
    let last = &events.last().unwrap()["deployment"];
    assert_eq!(
        (last["finished"].as_bool(), last["status"].as_i64()),
        (Some(true), Some(3)),
        "{last}"
    );
    // The same as a native gRPC client reads through the gateway.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", stack.gateway))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut request = tonic::Request::new(pb::GetDeploymentRequest { id });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {admin}").parse().unwrap());
    let deployment = pb::deploy_service_client::DeployServiceClient::new(channel)
        .get_deployment(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deployment.status, pb::DeploymentStatus::Succeeded as i32);
    let steps: Vec<_> = deployment
        .steps
        .iter()
        .map(|s| (s.name.as_str(), s.state.as_str()))
        .collect();
    assert_eq!(steps, [("build", "success")]);
}

async fn preflight(stack: &Stack, path: &str, origin: &str) -> reqwest::Response {
    stack
        .http
        .request(reqwest::Method::OPTIONS, stack.url(path))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type,x-grpc-web",
        )
        .send()
        .await
        .unwrap()
}

fn header_of<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

async fn cors_for_browsers(backend: Backend) {
    let listed = "https://deploy.example.com";
    let stack = Stack::builder(backend)
        .services(two_services)
        .env(
            Process::Gateway,
            "SLIPWAY_CORS_ORIGINS",
            format!("{listed},https://other.example.com"),
        )
        .start()
        .await;
    let rpc = "/slipway.registry.v1.RegistryService/ListServices";
    for origin in ["http://127.0.0.1:5555", "http://localhost:5173", listed] {
        let response = preflight(&stack, rpc, origin).await;
        assert_eq!(response.status(), 200, "{origin}");
        assert_eq!(header_of(&response, "access-control-allow-origin"), Some(origin));
        assert_eq!(header_of(&response, "access-control-allow-credentials"), Some("true"));
        assert_eq!(header_of(&response, "access-control-max-age"), Some("600"));
        let allowed = header_of(&response, "access-control-allow-headers").unwrap_or_default();
        assert!(
            allowed.contains("x-grpc-web") && allowed.contains("authorization"),
            "{allowed}"
        );
    }
    let response = preflight(&stack, rpc, "https://evil.example.com").await;
    assert_eq!(header_of(&response, "access-control-allow-origin"), None);
    // fastDeploy's frontend gets the same answers on the HTTP routes.
    let response = preflight(&stack, "/token", "http://localhost:5173").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        header_of(&response, "access-control-allow-origin"),
        Some("http://localhost:5173")
    );

    // A grpc-web call over HTTP/1.1: a refusal is a trailers-only answer whose status a
    // browser can read (exposed headers).
    let call = |path: &str| {
        stack
            .http
            .post(stack.url(path))
            .header("origin", "http://127.0.0.1:5555")
            .header("content-type", "application/grpc-web+proto")
            .header("x-grpc-web", "1")
            .body(vec![0u8, 0, 0, 0, 0])
            .send()
    };
    let response = call(rpc).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header_of(&response, "grpc-status"), Some("16"));
    assert_eq!(
        header_of(&response, "access-control-allow-origin"),
        Some("http://127.0.0.1:5555")
    );
    let exposed = header_of(&response, "access-control-expose-headers").unwrap_or_default();
    assert!(
        exposed.contains("grpc-status") && exposed.contains("grpc-message"),
        "{exposed}"
    );
    let response = call("/slipway.registry.v1.RegistryService/Nope").await.unwrap();
    assert_eq!(header_of(&response, "grpc-status"), Some("12"), "UNIMPLEMENTED");
    // Login is open: the answer carries a message frame and OK trailers in the body.
    let response = stack
        .http
        .post(stack.url("/slipway.auth.v1.AuthService/Login"))
        .header("content-type", "application/grpc-web+proto")
        .body(login_frame(ADMIN, ADMIN_PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = response.bytes().await.unwrap();
    assert_eq!(body[0], 0, "a message frame first");
    let length = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
    let trailer = &body[5 + length..];
    assert_eq!(trailer[0], 0x80, "then the trailers frame");
    let trailer_text = String::from_utf8_lossy(&trailer[5..]);
    assert!(trailer_text.contains("grpc-status:0"), "{trailer_text}");
}

/// A grpc-web frame holding LoginRequest{username = 1, password = 2}, encoded by hand.
fn login_frame(username: &str, password: &str) -> Vec<u8> {
    let mut message = Vec::new();
    for (field, value) in [(1u8, username), (2, password)] {
        message.push(field << 3 | 2);
        message.push(u8::try_from(value.len()).unwrap());
        message.extend_from_slice(value.as_bytes());
    }
    let mut frame = vec![0];
    frame.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(&message);
    frame
}

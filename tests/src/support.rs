//! Helpers shared by the deployment tests (HTTP and WebSocket): service folders with
//! real deploy scripts, tokens of every kind, HTTP calls and polling.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::{Stack, wait_until};
use common::token::TokenType;
use reqwest::Method;
use serde_json::{Value, json};

/// Writes a service folder: `config.json` and an executable `deploy.sh`.
pub fn write_service(root: &Path, name: &str, config: Value, script: &str) {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let path = dir.join("deploy.sh");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A script that reports its steps as JSON lines, with a log line between them, and
/// exits with `exit_code`.
pub fn reporting_script(lines: &[Value], exit_code: i32) -> String {
    let mut script = String::from("#!/bin/sh\necho \"starting deployment\"\n");
    for line in lines {
        script.push_str(&format!("echo '{line}'\nsleep 0.1\n"));
    }
    script.push_str(&format!("exit {exit_code}\n"));
    script
}

/// A script that copies its secure config to `<spool>/<service>.json` (so the test
/// holds its deployment token) and waits until `<spool>/<service>.go` exists, then
/// reports one step.
pub fn gated_script(spool: &Path, service: &str) -> String {
    let spool = spool.display();
    format!(
        r#"#!/bin/sh
config=""
while [ $# -gt 0 ]; do
  if [ "$1" = "--config" ]; then config="$2"; fi
  shift
done
cp "$config" "{spool}/{service}.json.tmp" && mv "{spool}/{service}.json.tmp" "{spool}/{service}.json"
i=0
while [ ! -f "{spool}/{service}.go" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
echo '{{"name": "build", "state": "success", "message": "built"}}'
"#
    )
}

/// Waits for the config a gated script copied, and returns it.
pub async fn gated_config(stack: &Stack, spool: &Path, service: &str) -> Value {
    let path = spool.join(format!("{service}.json"));
    let text = wait_until(Duration::from_secs(30), async || {
        std::fs::read_to_string(&path).map_err(|_| format!("{service}'s script never ran\n{}", stack.logs()))
    })
    .await;
    serde_json::from_str(&text).unwrap()
}

pub fn release(spool: &Path, service: &str) {
    std::fs::write(spool.join(format!("{service}.go")), "").unwrap();
}

pub fn spool(stack_dir: &Path) -> PathBuf {
    let spool = stack_dir.join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    spool
}

/// Sends a request; returns the status, the `WWW-Authenticate` header and the body
/// (JSON, or the text as a JSON string).
pub async fn call(
    stack: &Stack,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Option<String>, Value) {
    let mut request = stack.http.request(method, stack.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, challenge, body)
}

/// [`call`] without the challenge header: the status and the body.
pub async fn send(stack: &Stack, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let (status, _, body) = call(stack, method, path, token, body).await;
    (status, body)
}

pub async fn get(stack: &Stack, path: &str, token: &str) -> (u16, Value) {
    let (status, _, body) = call(stack, Method::GET, path, Some(token), None).await;
    (status, body)
}

/// A real service token for `service`, minted through `POST /service-token`.
pub async fn service_token(stack: &Stack, user_token: &str, service: &str) -> String {
    let body = json!({"service": service, "origin": "ci", "expiration_in_days": 1});
    let (status, _, body) = call(stack, Method::POST, "/service-token", Some(user_token), Some(body)).await;
    assert_eq!(status, 200, "minting a service token for {service}: {body}");
    body["service_token"].as_str().unwrap().to_owned()
}

/// An authentic token of `token_type` signed with the auth service's key, valid for
/// `ttl_secs` from now (negative: already expired).
pub fn signed(stack: &Stack, token_type: TokenType, ttl_secs: i64) -> String {
    let mut claims = crate::user_claims("admin");
    claims.token_type = token_type;
    claims.exp = claims.iat + ttl_secs;
    if ttl_secs < 0 {
        claims.iat -= 3600;
        claims.nbf -= 3600;
    }
    match token_type {
        TokenType::Service => {
            claims.service = Some("alpha".into());
            claims.origin = Some("ci".into());
        }
        TokenType::Deployment => claims.deployment = Some(1),
        _ => {}
    }
    stack.sign_with_real_key(&claims)
}

/// A token's claims, read without verification.
fn payload(token: &str) -> Value {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let payload = URL_SAFE_NO_PAD.decode(token.split('.').nth(1).unwrap()).unwrap();
    serde_json::from_slice(&payload).unwrap()
}

/// Creates a user through `POST /v1/users` with the admin's token; must succeed.
pub async fn create_user(stack: &Stack, admin: &str, name: &str, password: &str) {
    let response = stack
        .http
        .post(stack.url("/v1/users"))
        .bearer_auth(admin)
        .json(&json!({"name": name, "password": password}))
        .send()
        .await
        .expect("POST /v1/users");
    assert_eq!(response.status(), 200, "{}", stack.logs());
}

pub fn jti(token: &str) -> String {
    payload(token)["jti"].as_str().unwrap().to_owned()
}

/// Revokes a token by id and waits until it is refused: at `probe` (which a backend
/// may refuse first, as its own revocation feed has it) and by the gateway itself.
pub async fn revoke(stack: &Stack, admin: &str, token: &str, probe: &str) {
    let (status, _, body) = call(
        stack,
        Method::DELETE,
        &format!("/v1/tokens/{}", jti(token)),
        Some(admin),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(5);
    let refused = async |path: &str, method: Method, why: &str| {
        let within = deadline.saturating_duration_since(Instant::now());
        wait_until(within, async || {
            match call(stack, method.clone(), path, Some(token), None).await.0 {
                401 => Ok(()),
                _ => Err(why.to_owned()),
            }
        })
        .await
    };
    refused(probe, Method::GET, "revoked token still accepted").await;
    // A /v1 route the token's type may not call: the gateway answers 403 to a valid
    // token and 401 to a revoked one, without asking any backend.
    let other_type = if payload(token)["type"] == "deployment" {
        "/v1/keys/rotate"
    } else {
        "/v1/steps"
    };
    refused(other_type, Method::POST, "the gateway never saw the revocation").await;
}

/// Starts a deployment with a service token; returns the StartedDeployment.
pub async fn start(stack: &Stack, service_token: &str, body: Option<Value>) -> Value {
    let (status, _, started) = call(stack, Method::POST, "/deployments/", Some(service_token), body).await;
    assert_eq!(status, 200, "start: {started}\n{}", stack.logs());
    started
}

/// Polls `GET /deployments/{id}` with the service token until the deployment is
/// finished, as fastDeploy's scripts/test_deployment.py does.
pub async fn wait_finished(stack: &Stack, service_token: &str, id: i64) -> Value {
    wait_until(Duration::from_secs(60), async || {
        let (status, deployment) = get(stack, &format!("/deployments/{id}"), service_token).await;
        assert_eq!(status, 200, "{deployment}");
        if deployment["finished"].is_null() {
            Err(format!("deployment {id} not finished: {deployment}"))
        } else {
            Ok(deployment)
        }
    })
    .await
}

/// Sorted keys of a JSON object.
pub fn keys(value: &Value) -> Vec<String> {
    let mut keys: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    keys
}

/// Whether a timestamp is UTC ISO 8601 with microseconds and `Z`.
pub fn is_utc_micros(value: &Value) -> bool {
    value.as_str().is_some_and(|s| {
        s.ends_with('Z')
            && s.len() == "2026-11-23T07:59:25.370399Z".len()
            && chrono::DateTime::parse_from_rfc3339(s).is_ok()
    })
}

/// A token of every kind a caller can hold, over two gated services `alpha` and
/// `beta` with one deployment each (`a` of alpha, `b` of beta) held running.
pub struct TokenKinds {
    pub admin: String,
    pub alpha: String,
    pub beta: String,
    pub a: i64,
    pub b: i64,
    pub dep_a: String,
    pub dep_b: String,
    pub config: String,
    pub expired: String,
    /// A service token of alpha, revoked (the gateway itself refuses it).
    pub revoked: String,
}

impl TokenKinds {
    /// Names and tokens in the order of the authorization matrices' columns.
    pub fn named(&self) -> [(&'static str, &str); 8] {
        [
            ("user", &self.admin),
            ("service", &self.alpha),
            ("service of another", &self.beta),
            ("deployment", &self.dep_a),
            ("deployment of another", &self.dep_b),
            ("config", &self.config),
            ("expired", &self.expired),
            ("revoked", &self.revoked),
        ]
    }
}

/// Mints every kind of token on a stack whose services directory has gated `alpha`
/// and `beta` (see [`gated_script`]), starting one deployment of each.
pub async fn token_kinds(stack: &Stack) -> TokenKinds {
    let spool = spool(stack.dir.path());
    let admin = stack.admin_token().await;
    let alpha = service_token(stack, &admin, "alpha").await;
    let beta = service_token(stack, &admin, "beta").await;
    let a = start(stack, &alpha, None).await["id"].as_i64().unwrap();
    let b = start(stack, &beta, None).await["id"].as_i64().unwrap();
    let access_token = |config: Value| config["access_token"].as_str().unwrap().to_owned();
    let dep_a = access_token(gated_config(stack, &spool, "alpha").await);
    let dep_b = access_token(gated_config(stack, &spool, "beta").await);
    let revoked = service_token(stack, &admin, "alpha").await;
    revoke(stack, &admin, &revoked, &format!("/deployments/{a}")).await;
    TokenKinds {
        config: signed(stack, TokenType::Config, 600),
        expired: signed(stack, TokenType::User, -120),
        admin,
        alpha,
        beta,
        a,
        b,
        dep_a,
        dep_b,
        revoked,
    }
}

/// (name, state, message) of each step of a deployment or a step list.
pub fn steps_of(steps: &Value) -> Vec<(String, String, String)> {
    steps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let f = |k: &str| s[k].as_str().unwrap_or_default().to_owned();
            (f("name"), f("state"), f("message"))
        })
        .collect()
}

/// Runs the `slipway` command against the stack's gateway with `token`:
/// (exit code, stdout, stderr).
pub fn slipway_cli(stack: &Stack, token: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let output = std::process::Command::new(crate::process::bin_dir().join("slipway"))
        .args(args)
        .env("SLIPWAY_URL", stack.url(""))
        .env("SLIPWAY_TOKEN", token)
        .output()
        .expect("running slipway");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The steps of [`steps_config`].
pub const STEPS: &[&str] = &["build", "migrate"];

/// A service config with the [`STEPS`] and a description.
pub fn steps_config() -> Value {
    json!({"description": "test service", "steps": STEPS.iter().map(|s| json!({"name": s})).collect::<Vec<_>>()})
}

/// A [`reporting_script`] whose steps all succeed, exiting 0.
pub fn passing_script() -> String {
    reporting_script(
        &[
            json!({"name": "build", "state": "success", "message": "built"}),
            json!({"name": "migrate", "state": "success", "message": "migrated"}),
        ],
        0,
    )
}

/// A [`reporting_script`] whose `migrate` step fails, exiting 1.
pub fn failing_script() -> String {
    reporting_script(
        &[
            json!({"name": "build", "state": "success", "message": "built"}),
            json!({"name": "migrate", "state": "failure", "message": "boom"}),
        ],
        1,
    )
}

/// Services `alpha` and `beta`, each with the [`steps_config`] and a [`gated_script`].
pub fn gated_services(root: &Path) {
    let spool = spool(root.parent().unwrap());
    for name in ["alpha", "beta"] {
        write_service(root, name, steps_config(), &gated_script(&spool, name));
    }
}

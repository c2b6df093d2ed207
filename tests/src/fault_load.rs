//! The steady load of the fault tests: logins, reads, deployment starts and revoked
//! tokens, each a loop of requests through the gateway with a client timeout, every
//! answer recorded; and the probes that tell when everything answers again.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use reqwest::Method;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::{
    fault_record::{Answer, Recorder},
    stack::{ADMIN, ADMIN_PASSWORD},
};

/// The gateway's deadline for backend calls in these tests.
pub const BACKEND_TIMEOUT: Duration = Duration::from_secs(2);
/// Past this, a request counts as a hang: the backend timeout and a margin.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the load goes and with which tokens.
#[derive(Clone)]
pub struct Target {
    pub base: String,
    pub http: reqwest::Client,
    pub admin: String,
    /// A service token per service, in the order of `SERVICES`.
    pub services: Vec<(String, String)>,
}

impl Target {
    pub fn new(gateway: std::net::SocketAddr, admin: String, services: Vec<(String, String)>) -> Target {
        let http = reqwest::Client::builder()
            .timeout(CLIENT_TIMEOUT)
            .connect_timeout(Duration::from_secs(1))
            // A new connection per request: none is left pointing at a killed gateway.
            .pool_max_idle_per_host(0)
            .build()
            .expect("http client");
        Target {
            base: format!("http://{gateway}"),
            http,
            admin,
            services,
        }
    }

    /// One request; its answer and body (JSON, or the text as a string).
    pub async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> (Answer, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                match response.text().await {
                    Ok(text) => {
                        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
                        (Answer::of_status(status), json!({"status": status, "body": body}))
                    }
                    Err(error) => (
                        Answer::of_error(&error),
                        json!({"status": status, "error": error.to_string()}),
                    ),
                }
            }
            Err(error) => (Answer::of_error(&error), json!({"error": error.to_string()})),
        }
    }

    pub async fn login(&self) -> (Answer, Value) {
        let form = [("username", ADMIN), ("password", ADMIN_PASSWORD)];
        match self.http.post(format!("{}/token", self.base)).form(&form).send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let body = response.json().await.unwrap_or(Value::Null);
                (Answer::of_status(status), json!({"status": status, "body": body}))
            }
            Err(error) => (Answer::of_error(&error), json!({"error": error.to_string()})),
        }
    }
}

/// The load's shared state: revoked tokens to try, deployments whose start was
/// answered 200.
#[derive(Default)]
pub struct Shared {
    pub revoked: Mutex<Vec<String>>,
    pub started: Mutex<Vec<(i64, Instant)>>,
}

/// The running load; [`Load::stop`] ends every loop.
pub struct Load {
    stop: CancellationToken,
    tasks: JoinSet<()>,
    pub shared: Arc<Shared>,
}

impl Load {
    /// Starts every loop: logins, four reads, deployment starts every `start_every`,
    /// and the revoked tokens.
    pub fn start(target: &Target, recorder: &Arc<Recorder>, start_every: Duration) -> Load {
        let stop = CancellationToken::new();
        let shared = Arc::new(Shared::default());
        let mut tasks = JoinSet::new();
        let reads: [(&'static str, &'static str); 4] = [
            ("users/me", "/users/me"),
            ("services", "/services/"),
            ("v1/services", "/v1/services"),
            ("v1/deployments", "/v1/deployments?page_size=5"),
        ];
        for (kind, path) in reads {
            let (target, recorder, stop) = (target.clone(), recorder.clone(), stop.clone());
            tasks.spawn(each(stop, Duration::from_millis(100), async move || {
                let started = Instant::now();
                let (answer, body) = target.call(Method::GET, path, Some(&target.admin), None).await;
                recorder.record(started, kind, answer, body.to_string());
            }));
        }
        let (t, recorder_, stop_) = (target.clone(), recorder.clone(), stop.clone());
        tasks.spawn(each(stop_, Duration::from_millis(200), async move || {
            let started = Instant::now();
            let (answer, body) = t.login().await;
            recorder_.record(started, "login", answer, body.to_string());
        }));
        let (t, recorder_, stop_, shared_) = (target.clone(), recorder.clone(), stop.clone(), shared.clone());
        let mut next = 0;
        tasks.spawn(each(stop_, start_every, async move || {
            let (_, token) = &t.services[next % t.services.len()];
            next += 1;
            let started = Instant::now();
            let (answer, body) = t.call(Method::POST, "/deployments/", Some(token), None).await;
            if answer == Answer::Ok {
                let id = body["body"]["id"].as_i64().expect("a started deployment's id");
                shared_.started.lock().unwrap().push((id, Instant::now()));
            }
            recorder_.record(started, "start", answer, body.to_string());
        }));
        let (t, recorder_, stop_, shared_) = (target.clone(), recorder.clone(), stop.clone(), shared.clone());
        tasks.spawn(each(stop_, Duration::from_millis(100), async move || {
            let tokens = shared_.revoked.lock().unwrap().clone();
            for token in tokens {
                for path in ["/users/me", "/v1/services", "/v1/deployments?page_size=1"] {
                    let started = Instant::now();
                    let (answer, body) = t.call(Method::GET, path, Some(&token), None).await;
                    recorder_.record(started, "revoked", answer, format!("{path}: {body}"));
                }
            }
        }));
        Load { stop, tasks, shared }
    }

    /// Ends every loop (each finishes its request first).
    pub async fn stop(mut self) -> Arc<Shared> {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
        self.shared
    }
}

/// Runs `body` every `every` until `stop`.
async fn each(stop: CancellationToken, every: Duration, mut body: impl AsyncFnMut()) {
    while !stop.is_cancelled() {
        body().await;
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// Logs in and revokes that token, which the gateway must refuse as soon as the
/// revocation is answered; the load then tries it until the end. Returns the token.
pub async fn revoke_fresh(target: &Target, shared: &Shared) -> String {
    // A login may be answered 503 (every hashing slot busy on a loaded machine): try
    // again, as a client told to retry would.
    let mut login = target.login().await;
    let retry_until = Instant::now() + Duration::from_secs(30);
    while login.0 == Answer::Unavailable && Instant::now() < retry_until {
        tokio::time::sleep(Duration::from_millis(250)).await;
        login = target.login().await;
    }
    let (answer, body) = login;
    assert_eq!(answer, Answer::Ok, "login before a fault: {body}");
    let token = body["body"]["access_token"].as_str().expect("access_token").to_owned();
    let jti = crate::grpc::claims_of(&token)["jti"].as_str().expect("jti").to_owned();
    let (answer, body) = target
        .call(Method::DELETE, &format!("/v1/tokens/{jti}"), Some(&target.admin), None)
        .await;
    assert_eq!(answer, Answer::Ok, "revoking a token: {body}");
    // Refused at once, without waiting for any feed: the gateway itself refuses it (a
    // route a user token may not call: 403 when valid, 401 when revoked).
    let (answer, body) = target.call(Method::POST, "/v1/steps", Some(&token), None).await;
    assert_eq!(body["status"], 401, "a token revoked a moment ago: {answer:?} {body}");
    shared.revoked.lock().unwrap().push(token.clone());
    token
}

/// Probes every path the load uses until all answer 2xx (and `extra` holds); returns
/// how long that took. Panics past `within`.
pub async fn wait_answering(target: &Target, within: Duration, extra: impl Fn() -> bool) -> Duration {
    let began = Instant::now();
    crate::wait_until(within, async || {
        let (login, body) = target.login().await;
        if login != Answer::Ok {
            return Err(format!("login: {body}"));
        }
        for path in ["/users/me", "/services/", "/v1/services", "/v1/deployments?page_size=1"] {
            let (answer, body) = target.call(Method::GET, path, Some(&target.admin), None).await;
            if answer != Answer::Ok {
                return Err(format!("{path}: {body}"));
            }
        }
        let (_, token) = &target.services[0];
        let (answer, body) = target
            .call(Method::GET, "/v1/deployments?page_size=1", Some(token), None)
            .await;
        if answer != Answer::Ok {
            return Err(format!("a service token's read: {body}"));
        }
        if !extra() {
            return Err("a watcher has not reconnected".into());
        }
        Ok(())
    })
    .await;
    began.elapsed()
}

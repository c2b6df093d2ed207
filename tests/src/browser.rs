//! A headless Chromium driven over the DevTools protocol (CDP), for the console's
//! browser tests: no driver process and no crate beyond the WebSocket client the
//! harness already has. Chromium is Debian's `chromium` (`$CHROMIUM` overrides);
//! [`Browser::launch`] answers `None` without one, except in CI (`CI=true`), where
//! that fails. Clicks and typing are real input events (`Input.*`), at the element's
//! place on the page, as a person's would be.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, tungstenite::Message};

use crate::wait::wait_until;

/// How long a page may take to show what a test waits for.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Chromium's path: `$CHROMIUM`, else `chromium` (or `chromium-browser`) on the PATH.
pub fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return Some(path.into());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

pub struct Browser {
    child: tokio::process::Child,
    profile: tempfile::TempDir,
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    session: String,
    next_id: u64,
}

impl Browser {
    /// A headless Chromium with one blank tab of `width` × `height` CSS pixels; `None`
    /// (with a notice) when Chromium is not installed outside CI.
    pub async fn launch(width: u32, height: u32) -> Option<Browser> {
        let Some(chromium) = chromium() else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "chromium is required in CI (.ci/run installs Debian's chromium)"
            );
            eprintln!("SKIPPED: chromium not found; install Debian's chromium to run the console's browser tests");
            return None;
        };
        let profile = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(profile.path().join("chromium.log")).unwrap();
        let child = tokio::process::Command::new(&chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--remote-debugging-port=0",
                "--hide-scrollbars",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("--window-size={width},{height}"))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromium.display()));
        // Chromium writes its port and the browser's path once it listens.
        let port_file = profile.path().join("DevToolsActivePort");
        let url = wait_until(PATIENCE, async || {
            let text = std::fs::read_to_string(&port_file).map_err(|e| format!("no DevToolsActivePort yet: {e}"))?;
            let mut lines = text.lines();
            match (lines.next(), lines.next()) {
                (Some(port), Some(path)) => Ok(format!("ws://127.0.0.1:{port}{path}")),
                _ => Err(format!("DevToolsActivePort incomplete: {text:?}")),
            }
        })
        .await;
        let (socket, _) = tokio_tungstenite::connect_async(url.as_str()).await.unwrap();
        let mut browser = Browser {
            child,
            profile,
            socket,
            session: String::new(),
            next_id: 0,
        };
        let target = browser.call("Target.createTarget", json!({"url": "about:blank"})).await;
        let attached = browser
            .call(
                "Target.attachToTarget",
                json!({"targetId": target["targetId"], "flatten": true}),
            )
            .await;
        browser.session = attached["sessionId"].as_str().unwrap().to_owned();
        browser.resize(width, height).await;
        Some(browser)
    }

    /// Sends one CDP command (to the tab once attached) and returns its result; events
    /// in between are dropped.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut command = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            command["sessionId"] = json!(self.session);
        }
        self.socket.send(Message::text(command.to_string())).await.unwrap();
        loop {
            let message = tokio::time::timeout(PATIENCE, self.socket.next())
                .await
                .unwrap_or_else(|_| panic!("no answer to {method} in {PATIENCE:?}"))
                .unwrap_or_else(|| panic!("the browser closed during {method}"))
                .unwrap();
            let Message::Text(text) = message else { continue };
            let answer: Value = serde_json::from_str(&text).unwrap();
            if answer["id"] == json!(id) {
                assert!(answer.get("error").is_none(), "{method}: {answer}");
                return answer["result"].clone();
            }
        }
    }

    /// Opens another tab of the same browser (one profile: one cookie jar, one pool
    /// of connections per host) of `width` × `height`, and sends the next commands to
    /// it. Returns the tab commands went to until now, for [`Browser::switch_to`].
    pub async fn new_tab(&mut self, width: u32, height: u32) -> String {
        let before = std::mem::take(&mut self.session);
        let target = self.call("Target.createTarget", json!({"url": "about:blank"})).await;
        let attached = self
            .call(
                "Target.attachToTarget",
                json!({"targetId": target["targetId"], "flatten": true}),
            )
            .await;
        self.session = attached["sessionId"].as_str().unwrap().to_owned();
        self.resize(width, height).await;
        before
    }

    /// Sends the next commands to the tab `tab` (from [`Browser::new_tab`]), brought
    /// to the front as a click on it would; returns the tab they went to until now.
    pub async fn switch_to(&mut self, tab: String) -> String {
        let before = std::mem::replace(&mut self.session, tab);
        self.call("Page.bringToFront", json!({})).await;
        before
    }

    /// Opens the console at `base` (the gateway's URL) and logs in as `user`.
    pub async fn log_in(&mut self, base: &str, user: &str, password: &str) {
        self.goto(base).await;
        self.wait_for("the login page", "document.querySelector('#username')")
            .await;
        self.type_into("#username", user).await;
        self.type_into("#password", password).await;
        self.press("Enter").await;
        self.wait_for("logged in", "document.querySelector('#user')?.innerText")
            .await;
    }

    /// Sets the viewport (CSS pixels), as a window of that size would.
    pub async fn resize(&mut self, width: u32, height: u32) {
        let mobile = width < 600;
        let params = json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile});
        self.call("Emulation.setDeviceMetricsOverride", params).await;
    }

    /// Opens `url` in the tab and waits until its document has loaded.
    pub async fn goto(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url})).await;
        self.wait_for("the page loaded", "document.readyState === 'complete'")
            .await;
    }

    /// Evaluates `expression` in the page (promises awaited) and returns its value.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let params = json!({"expression": expression, "returnByValue": true, "awaitPromise": true});
        let result = self.call("Runtime.evaluate", params).await;
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("{expression}: {exception}");
        }
        result["result"]["value"].clone()
    }

    /// Polls `condition` (a JavaScript expression) until it is truthy; returns it.
    pub async fn wait_for(&mut self, what: &str, condition: &str) -> Value {
        let expression = format!("(() => {{ try {{ return {condition}; }} catch (e) {{ return null; }} }})()");
        wait_until(PATIENCE, async || {
            let value = self.eval(&expression).await;
            let truthy = !matches!(&value, Value::Null | Value::Bool(false)) && value != json!("") && value != json!(0);
            if truthy {
                Ok(value)
            } else {
                Err(format!("{what}: still {value}"))
            }
        })
        .await
    }

    /// The text of the first element matching `selector` ("" when there is none).
    pub async fn text(&mut self, selector: &str) -> String {
        let expression = format!("document.querySelector({selector:?})?.innerText ?? ''");
        self.eval(&expression).await.as_str().unwrap_or_default().to_owned()
    }

    /// Clicks the middle of the element matching `selector` with the mouse, once it is
    /// there (scrolled into view first).
    pub async fn click(&mut self, selector: &str) {
        let find = format!(
            "(() => {{ const e = document.querySelector({selector:?}); if (!e || e.disabled) return null; \
             e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect(); \
             return r.width > 0 ? [r.x + r.width / 2, r.y + r.height / 2] : null; }})()"
        );
        let at = self.wait_for(&format!("{selector} to click"), &find).await;
        let (x, y) = (at[0].as_f64().unwrap(), at[1].as_f64().unwrap());
        for kind in ["mousePressed", "mouseReleased"] {
            let params = json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1});
            self.call("Input.dispatchMouseEvent", params).await;
        }
    }

    /// Clicks into the field matching `selector` and types `text` into it.
    pub async fn type_into(&mut self, selector: &str, text: &str) {
        self.click(selector).await;
        self.call("Input.insertText", json!({"text": text})).await;
    }

    /// Presses a key such as `Enter` or `Tab` on the focused element.
    pub async fn press(&mut self, key: &str) {
        let code = match key {
            "Enter" => 13,
            "Tab" => 9,
            _ => 0,
        };
        for kind in ["keyDown", "keyUp"] {
            let mut params = json!({"type": kind, "key": key, "code": key, "windowsVirtualKeyCode": code});
            if key == "Enter" && kind == "keyDown" {
                params["text"] = json!("\r");
            }
            self.call("Input.dispatchKeyEvent", params).await;
        }
    }

    /// Saves a PNG of the viewport at `path`, prints where, and returns it.
    pub async fn screenshot(&mut self, path: &Path) -> PathBuf {
        use base64::Engine as _;
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"})).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
        println!("screenshot: {}", path.display());
        path.to_owned()
    }

    /// Chromium's own log, for a failing test's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.profile.path().join("chromium.log")).unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Where a test's screenshots go: `$CONSOLE_SCREENSHOTS`, else `target/console-screenshots`
/// beside the test binaries.
pub fn screenshot_dir(test: &str) -> PathBuf {
    let base = std::env::var_os("CONSOLE_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let exe = std::env::current_exe().unwrap();
            // target/<profile>/deps/<test binary>
            exe.ancestors().nth(3).unwrap().join("console-screenshots")
        });
    base.join(test)
}

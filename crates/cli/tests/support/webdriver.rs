//! A real browser for the console test: Debian's `chromium`, headless,
//! driven through `chromedriver` by the W3C WebDriver protocol (JSON over
//! HTTP on loopback, sent with the tests' own HTTP helper). Both are
//! required: the test command installs them; without them the test fails
//! and says so. The driver is stopped by PID when this is dropped.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::http::{free_port, Http};

/// The key WebDriver names an element by.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    http: Http,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub fn start() -> Self {
        for program in ["chromium", "chromedriver"] {
            assert!(
                super::which(program).is_some(),
                "{program} is required (apt-get install chromium chromium-driver; scripts/install-test-deps.sh does)"
            );
        }
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let http = Http::on_port(port);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&http.addr).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = tempfile::tempdir().expect("a browser profile");
        let mut args =
            vec!["--headless=new", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"];
        if rustix::process::geteuid().is_root() {
            args.push("--no-sandbox"); // chromium refuses to run as root with its sandbox
        }
        let user_data = format!("--user-data-dir={}", profile.path().display());
        args.push(&user_data);
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": "/usr/bin/chromium", "args": args }
        } } });
        let mut browser = Self { driver, http, session: String::new(), _profile: profile };
        let created = browser.command("POST", "/session", &capabilities);
        browser.session = created["sessionId"].as_str().expect("a session id").to_owned();
        browser
    }

    fn command(&self, method: &str, path: &str, body: &Value) -> Value {
        let answer = self.http.request(method, path, &["Content-Type: application/json"], &body.to_string());
        let value = answer.json();
        assert_eq!(answer.status, 200, "WebDriver {method} {path}: {value}");
        value.get("value").cloned().unwrap_or(value)
    }

    fn session_command(&self, method: &str, path: &str, body: &Value) -> Value {
        self.command(method, &format!("/session/{}{path}", self.session), body)
    }

    pub fn open(&self, url: &str) {
        self.session_command("POST", "/url", &json!({ "url": url }));
    }

    /// Runs `script` (a function body; `return` a value) in the page.
    pub fn run(&self, script: &str) -> Value {
        self.session_command("POST", "/execute/sync", &json!({ "script": script, "args": [] }))
    }

    /// The text of the first element `selector` finds, or "" if none.
    pub fn text(&self, selector: &str) -> String {
        let script =
            format!("const e = document.querySelector({}); return e ? e.textContent : '';", json!(selector));
        self.run(&script).as_str().unwrap_or_default().to_owned()
    }

    /// Waits (at most `limit`) until the text of `selector` satisfies `check`.
    pub fn wait_text(&self, selector: &str, limit: Duration, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let text = self.text(selector);
            if check(&text) {
                return text;
            }
            assert!(Instant::now() < deadline, "{selector} never satisfied the check; it reads {text:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn element(&self, selector: &str) -> String {
        let found =
            self.session_command("POST", "/element", &json!({ "using": "css selector", "value": selector }));
        found[ELEMENT].as_str().unwrap_or_else(|| panic!("no element {selector}: {found}")).to_owned()
    }

    /// Clicks the element `selector` finds, as a user would.
    pub fn click(&self, selector: &str) {
        let element = self.element(selector);
        self.session_command("POST", &format!("/element/{element}/click"), &json!({}));
    }

    /// Types `text` into the element `selector` finds.
    pub fn type_into(&self, selector: &str, text: &str) {
        let element = self.element(selector);
        self.session_command("POST", &format!("/element/{element}/value"), &json!({ "text": text }));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let path = format!("/session/{}", self.session);
            let _ = self.http.request("DELETE", &path, &[], "");
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        // A browser whose driver died first is left running: stop those of
        // this test's profile (it started them), by PID.
        for pid in processes_naming(&self._profile.path().display().to_string()) {
            super::signal_pid(pid, rustix::process::Signal::KILL);
        }
    }
}

/// The processes whose command line names `text`.
fn processes_naming(text: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|line| String::from_utf8_lossy(&line).contains(text))
        })
        .collect()
}

//! Every example, run as its users would: the real daemon binary, the
//! example binaries, their output.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

/// The `switchboard` binary: built by `cargo test --workspace` into the same
/// directory as the example binaries.
fn daemon_binary() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_BIN_EXE_recycle")).parent().unwrap().to_owned();
    let binary = dir.join("switchboard");
    assert!(
        binary.exists(),
        "{} is missing: build it with `cargo build -p switchboard-cli`",
        binary.display()
    );
    binary
}

struct Daemon {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Daemon {
    fn start() -> Self {
        Self::start_with(&[])
    }

    fn start_with(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let addr = format!("unix:{}", dir.path().join("bus.sock").display());
        let mut child = Command::new(daemon_binary())
            .args(["up", "--listen", &addr, "--data-dir"])
            .arg(dir.path().join("data"))
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        assert!(lines.any(|l| l.unwrap().contains("ready")), "daemon did not start");
        Self { child, addr, _dir: dir }
    }

    /// Runs an example to completion, at most 30 s (then it is killed and
    /// the test fails with what it printed).
    fn run(&self, binary: &str, args: &[&str]) -> Output {
        let mut child = Command::new(binary)
            .args(args)
            .env("SWITCHBOARD_ADDR", &self.addr)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let output = child.wait_with_output().unwrap();
                panic!(
                    "{binary} {args:?} did not finish within 30 s\nstdout:\n{}\nstderr:\n{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "{binary} {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        output
    }

    fn spawn(&self, binary: &str, args: &[&str]) -> Child {
        let mut child = Command::new(binary)
            .args(args)
            .env("SWITCHBOARD_ADDR", &self.addr)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait for the role to say it serves.
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        assert!(lines.next().is_some_and(|l| l.unwrap().contains("serving")));
        std::thread::spawn(move || for _ in lines {});
        child
    }
}

impl Drop for Daemon {
    /// SIGTERM, so a supervising daemon stops its services; SIGKILL after 5 s.
    fn drop(&mut self) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while self.child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn recycle_demo_recycles_every_worker() {
    let daemon = Daemon::start();
    let text = stdout(&daemon.run(env!("CARGO_BIN_EXE_recycle"), &[]));
    assert!(text.contains("3 of 3 workers recycled"), "{text}");
    for name in ["w1", "w2", "w3"] {
        assert!(text.contains(&format!("worker {name} recycled: generation 2")), "{text}");
    }
}

#[test]
fn recycle_across_processes() {
    let daemon = Daemon::start();
    let mut workers: Vec<Child> =
        ["a", "b"].iter().map(|n| daemon.spawn(env!("CARGO_BIN_EXE_recycle"), &["worker", n])).collect();
    let text = stdout(&daemon.run(env!("CARGO_BIN_EXE_recycle"), &["controller"]));
    for worker in &mut workers {
        let _ = worker.kill();
        let _ = worker.wait();
    }
    assert!(text.contains("2 of 2 workers recycled"), "{text}");
}

#[test]
fn resources_demo_publishes_and_answers() {
    let daemon = Daemon::start();
    let text = stdout(&daemon.run(env!("CARGO_BIN_EXE_resources"), &[]));
    assert_eq!(text.matches("sys.resources: memory").count(), 3, "{text}");
    assert!(text.contains("resources.current: memory"), "{text}");
}

#[test]
fn orders_demo_runs_the_event_chain() {
    let daemon = Daemon::start();
    let text = stdout(&daemon.run(env!("CARGO_BIN_EXE_orders"), &[]));
    let expected = [
        "order 1: reserved 2 apple (8 left)",
        "order 2: reserved 2 pear (1 left)",
        "order 3: rejected: only 1 pear left",
        "order 4: reserved 1 apple (7 left)",
        "pears left: 1",
    ];
    for line in expected {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
}

#[test]
fn an_unknown_role_is_a_usage_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_orders")).arg("dance").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("usage: orders"));
}

#[test]
fn up_demo_supervises_the_examples_and_the_shop_runs_on_request() {
    let daemon = Daemon::start_with(&["--demo"]);
    let cli = |args: &[&str]| daemon.run(daemon_binary().to_str().unwrap(), args);
    // Every auto-start service comes up, in dependency order.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let status: serde_json::Value = serde_json::from_str(&stdout(&cli(&["status", "--json"]))).unwrap();
        let states: Vec<(String, String)> = status
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["service"].as_str().unwrap().to_owned(), s["state"].as_str().unwrap().to_owned()))
            .collect();
        let running = states.iter().filter(|(name, state)| name != "shop" && state == "Running").count();
        let listening = stdout(&cli(&["ls", "--json"]));
        if running == 5 && listening.contains("orders.created") && listening.contains("inventory.>") {
            assert!(states.contains(&("shop".into(), "Stopped".into())), "{states:?}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "demo not up: {states:?}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(stdout(&cli(&["call", "demo.echo", "{\"hi\":1}"])).trim(), "{\"hi\":1}");
    // The shop is manual: starting it places the orders the notifier reports.
    cli(&["start", "shop"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let logs = stdout(&cli(&["logs", "notifier"]));
        if logs.contains("order 3: rejected: only 1 pear left") && logs.contains("order 4: reserved 1 apple")
        {
            break;
        }
        if std::time::Instant::now() > deadline {
            let others: Vec<String> =
                ["fulfilment", "shop"].iter().map(|s| stdout(&cli(&["logs", s]))).collect();
            panic!("no outcomes in the notifier log:\n{logs}\nfulfilment and shop:\n{}", others.join("\n"));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

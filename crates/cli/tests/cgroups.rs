//! cgroup limits of supervised services. These machines have a hybrid
//! cgroup v1 layout and no systemd: the daemon cannot apply `memory_max`,
//! and the service's log must say why instead of pretending. Where the
//! daemon does own a delegated cgroup v2 subtree, the limit must be in force.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod support;

use std::time::{Duration, Instant};

use support::Daemon;

fn cgroup2_mounted() -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|line| line.split_once(" - ").is_some_and(|(_, after)| after.starts_with("cgroup2 ")))
}

#[test]
fn memory_max_is_applied_or_the_log_says_why_not() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("services.toml");
    let root = if rustix::process::geteuid().is_root() { "run_as_root = true\n" } else { "" };
    std::fs::write(
        &config,
        format!("[services.capped]\ncommand = \"sleep\"\nargs = [\"300\"]\nmemory_max = \"64M\"\n{root}"),
    )
    .unwrap();
    let daemon = Daemon::start_with(&["--config", config.to_str().unwrap()]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let said = loop {
        let logs = daemon.cli(&["logs", "capped"]).output().unwrap();
        let text = String::from_utf8_lossy(&logs.stdout).into_owned();
        if text.contains("memory_max") || Instant::now() > deadline {
            break text;
        }
        let status = daemon.cli(&["status", "capped", "--json"]).output().unwrap();
        let pid: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
        if let Some(pid) = pid[0]["instances"][0]["pid"].as_u64() {
            let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
            if cgroup.contains("switchboard-capped-1") {
                break format!("applied: {cgroup}");
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if cgroup2_mounted() && said.starts_with("applied") {
        return; // a delegated cgroup v2 machine: the instance is in its limited group
    }
    assert!(said.contains("memory_max and cpu_max are not applied: "), "{said}");
    // Why, in the words of the machine's layout.
    let v1_memory = std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines().any(|line| {
        line.split_once(" - ").is_some_and(|(_, a)| a.starts_with("cgroup ") && a.contains("memory"))
    });
    match (cgroup2_mounted(), v1_memory) {
        (false, _) => assert!(said.contains("mounts no cgroup v2 hierarchy"), "{said}"),
        (true, true) => assert!(said.contains("hybrid cgroup layout: memory"), "{said}"),
        (true, false) => assert!(said.contains("not delegated") || said.contains("cannot "), "{said}"),
    }
}

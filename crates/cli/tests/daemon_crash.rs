//! A daemon killed with `kill -9`: its services die with it (parent-death
//! signal), the next daemon starts them again, and `status` and the logs say
//! they were started again after the crash. A clean stop says nothing.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod support;

use std::time::{Duration, Instant};

use support::Daemon;
use switchboard_proto::supervision::ServiceStatus;

fn status(daemon: &Daemon) -> ServiceStatus {
    let out = daemon.cli(&["status", "sleeper", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice::<Vec<ServiceStatus>>(&out.stdout).unwrap().pop().unwrap()
}

fn running_pid(daemon: &Daemon) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = status(daemon);
        if let (true, Some(pid)) = (status.state == "Running", status.instances[0].pid) {
            return pid;
        }
        assert!(Instant::now() < deadline, "sleeper never ran: {status:#?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Gone, or a zombie nobody has reaped yet: either way, not running.
fn dead(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_or(true, |stat| stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')))
}

#[test]
fn services_die_with_a_killed_daemon_and_the_next_one_starts_them_again_saying_why() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("services.toml");
    let root = if rustix::process::geteuid().is_root() { "run_as_root = true\n" } else { "" };
    std::fs::write(&config, format!("[services.sleeper]\ncommand = \"sleep\"\nargs = [\"300\"]\n{root}"))
        .unwrap();
    let mut daemon = Daemon::start_with(&["--config", config.to_str().unwrap()]);
    let first = running_pid(&daemon);
    assert!(status(&daemon).note.is_empty(), "a first start is not a restart");

    daemon.signal(rustix::process::Signal::KILL);
    daemon.wait_exit(Duration::from_secs(10)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dead(first) {
        assert!(Instant::now() < deadline, "the service outlived its killed daemon");
        std::thread::sleep(Duration::from_millis(20));
    }

    let killed = daemon.daemon_pid;
    daemon.restart();
    let second = running_pid(&daemon);
    assert_ne!(first, second);
    let note = status(&daemon).note;
    assert!(note.contains(&format!("previous daemon (pid {killed}) was killed or crashed")), "{note:?}");
    let shown = daemon.cli(&["status", "sleeper"]).output().unwrap();
    assert!(String::from_utf8_lossy(&shown.stdout).contains("note: started again after the previous daemon"));
    let logs = daemon.cli(&["logs", "sleeper"]).output().unwrap();
    assert!(String::from_utf8_lossy(&logs.stdout).contains("ended without stopping this service"));

    // A clean stop leaves nothing to report.
    daemon.signal(rustix::process::Signal::TERM);
    daemon.wait_exit(Duration::from_secs(20)).unwrap();
    daemon.restart();
    running_pid(&daemon);
    assert!(status(&daemon).note.is_empty(), "a clean stop is not a crash");
}

//! Services' logs to the journal and syslog, and severities: a test binds
//! datagram sockets as the journal (its native protocol) and as /dev/log
//! (RFC 3164) — these machines run no journald — and points the daemon at
//! them through `[logs]`.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod support;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use support::Daemon;

/// Every datagram that arrives within `limit`, until `done` says enough.
fn collect(socket: &UnixDatagram, limit: Duration, done: impl Fn(&[Vec<u8>]) -> bool) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    while !done(&got) && Instant::now() < deadline {
        if let Ok(len) = socket.recv(&mut buf) {
            got.push(buf[..len].to_vec());
        }
    }
    got
}

fn text(datagrams: &[Vec<u8>]) -> Vec<String> {
    datagrams.iter().map(|d| String::from_utf8_lossy(d).into_owned()).collect()
}

#[test]
fn journal_lines_syslog_forwarding_and_levels() {
    let dir = tempfile::tempdir().unwrap();
    let (journal_path, syslog_path) = (dir.path().join("journal.sock"), dir.path().join("syslog.sock"));
    let (journal, syslog) =
        (UnixDatagram::bind(&journal_path).unwrap(), UnixDatagram::bind(&syslog_path).unwrap());
    let root = if rustix::process::geteuid().is_root() { "run_as_root = true\n" } else { "" };
    let config = dir.path().join("services.toml");
    std::fs::write(
        &config,
        format!(
            "[logs]\njournal_socket = {journal_path:?}\nsyslog_socket = {syslog_path:?}\nforward = \"warning\"\nforward_to = \"syslog\"\n\n\
             [services.talker]\ncommand = \"sh\"\nargs = [\"-c\", \"echo hello; echo '<4>disk slow' >&2; exec sleep 300\"]\nlog = \"journal\"\n{root}\n\
             [services.crasher]\ncommand = \"sh\"\nargs = [\"-c\", \"exit 3\"]\nrestart = \"never\"\n{root}"
        ),
    )
    .unwrap();
    let daemon = Daemon::start_with(&["--config", config.to_str().unwrap()]);

    let entries = text(&collect(&journal, Duration::from_secs(20), |got| {
        text(got)
            .iter()
            .filter(|t| t.contains("MESSAGE=hello\n") || t.contains("MESSAGE=disk slow\n"))
            .count()
            == 2
    }));
    let hello =
        entries.iter().find(|e| e.contains("MESSAGE=hello\n")).unwrap_or_else(|| panic!("{entries:?}"));
    assert!(hello.contains("PRIORITY=6\n") && hello.contains("SYSLOG_IDENTIFIER=talker\n"), "{hello}");
    assert!(
        hello.contains("SWITCHBOARD_STREAM=stdout\n") && hello.contains("SWITCHBOARD_INSTANCE=1\n"),
        "{hello}"
    );
    let slow = entries.iter().find(|e| e.contains("MESSAGE=disk slow\n")).unwrap();
    assert!(slow.contains("PRIORITY=4\n"), "the <4> prefix is the severity, and is stripped: {slow}");
    assert!(!entries.iter().any(|e| e.contains("SYSLOG_IDENTIFIER=crasher")), "crasher logs to files only");

    let forwarded = text(&collect(&syslog, Duration::from_secs(20), |got| {
        let got = text(got);
        got.iter().any(|t| t == "<28>talker: disk slow")
            && got.iter().any(|t| t.starts_with("<28>crasher: exited: exit 3"))
    }));
    assert!(forwarded.iter().any(|t| t == "<28>talker: disk slow"), "{forwarded:?}");
    assert!(forwarded.iter().any(|t| t.starts_with("<28>crasher: exited: exit 3")), "{forwarded:?}");
    assert!(!forwarded.iter().any(|t| t.contains("hello")), "info is below the forward level: {forwarded:?}");

    let warnings = daemon.cli(&["logs", "talker", "--level", "warn", "--json"]).output().unwrap();
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&warnings.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(
        !lines.is_empty() && lines.iter().all(|l| l["level"] == "warning" || l["level"] == "err"),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l["line"] == "disk slow"), "{lines:?}");
    let all = daemon.cli(&["logs", "talker"]).output().unwrap();
    assert!(String::from_utf8_lossy(&all.stdout).contains("stderr [warning]: disk slow"));
    let bad = daemon.cli(&["logs", "talker", "--level", "loud"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2), "an unknown level is bad usage");
}

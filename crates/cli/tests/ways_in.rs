//! Ways around the policy that must stay closed (issue 12, defects 10–15),
//! each against the real daemon.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod support;

use std::time::{Duration, Instant};

use support::Daemon;
use switchboard::{Bus, CallError, CallOptions};
use switchboard_proto::supervision::{ControlRequest, ServiceStatus, CODE_STOP};

fn bus_aware() -> String {
    let example = std::path::Path::new(support::BIN).parent().unwrap().join("examples/bus_aware");
    assert!(example.exists(), "build the example first: cargo build -p switchboard-cli --examples");
    example.display().to_string()
}

fn status(daemon: &Daemon, service: &str) -> ServiceStatus {
    let out = daemon.cli(&["status", service, "--json"]).output().unwrap();
    let mut all: Vec<ServiceStatus> = serde_json::from_slice(&out.stdout).unwrap();
    all.pop().unwrap()
}

/// Calls `target` until calls to its service go over a direct channel.
async fn until_direct(bus: &Bus, target: &str, service: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while bus.direct_instance(service).is_none() {
        let _ = bus.call_with(target, &b""[..], CallOptions::timeout(Duration::from_secs(2))).await;
        assert!(Instant::now() < deadline, "no direct channel to {service}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Defect 10: on the daemon's path `__` methods are refused to everyone but
/// the daemon; a direct channel dispatched any method, so a caller could
/// stop a supervised service by calling its `__control` directly. Failed
/// before the fix (the service stopped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_channel_refuses_reserved_methods() {
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("services.toml");
    let root = if rustix::process::geteuid().is_root() { "run_as_root = true" } else { "" };
    std::fs::write(
        &config,
        format!("[services.cache]\ncommand = {:?}\nready = \"bus\"\n{root}\n", bus_aware()),
    )
    .unwrap();
    let daemon = Daemon::start_with(&["--config", config.to_str().unwrap()]);
    let bus = daemon.bus().await;
    until_direct(&bus, "cache.get", "cache").await;
    let pid = status(&daemon, "cache").instances[0].pid;
    let stop = ControlRequest { service: "cache".into(), code: CODE_STOP, payload: Vec::new() };
    let payload = switchboard_proto::sys::encode(&stop);
    match bus.call("cache.__control", payload).await {
        Err(CallError::NoSuchMethod(message)) => assert!(message.contains("reserved"), "{message}"),
        other => panic!("__control over a direct channel: {other:?}"),
    }
    assert!(bus.direct_instance("cache").is_some(), "the call went over the channel");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = status(&daemon, "cache");
    assert_eq!(after.state, "Running", "{after:?}");
    assert_eq!(after.instances[0].pid, pid, "the same process still serves");
}

/// Defect 12: the descriptor the daemon duplicated while a write to a
/// stalled client blocked was not close-on-exec, so a service started
/// meanwhile inherited a live connection of another client. A service
/// now starts with its standard streams only. Failed before the fix (it
/// held the stalled subscriber's socket).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_started_while_a_client_is_stalled_inherits_only_its_standard_streams() {
    use std::io::Write;
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("services.toml");
    let root = if rustix::process::geteuid().is_root() { "run_as_root = true" } else { "" };
    std::fs::write(
        &config,
        format!("[services.lister]\ncommand = \"sleep\"\nargs = [\"30\"]\nstart = \"manual\"\n{root}\n"),
    )
    .unwrap();
    let daemon = Daemon::start_with(&["--config", config.to_str().unwrap()]);
    // A subscriber that never reads, and enough publications to fill its
    // socket: the daemon's writer for it is now waiting for writability.
    let mut stalled = std::os::unix::net::UnixStream::connect(&daemon.socket).unwrap();
    let mut frames = bytes::BytesMut::new();
    switchboard_proto::Frame::Hello(switchboard_proto::Hello {
        version: switchboard_proto::PROTOCOL_VERSION,
        features: 0,
        client_name: "stalled".into(),
        credential: String::new(),
    })
    .encode(&mut frames);
    let pattern = switchboard_proto::TopicPattern::parse("fill").unwrap();
    switchboard_proto::Frame::Subscribe { req: 1, sid: 1, pattern }.encode(&mut frames);
    stalled.write_all(&frames).unwrap();
    let bus = daemon.bus().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..200 {
        bus.publish("fill", vec![0u8; 16 * 1024]).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let out = daemon.cli(&["start", "lister"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let pid = status(&daemon, "lister").instances[0].pid.expect("running");
    let mut fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    fds.sort();
    assert_eq!(fds, vec!["0", "1", "2"], "the service inherited more than its standard streams");
    drop(stalled);
}

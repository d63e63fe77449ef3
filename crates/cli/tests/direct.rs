//! Direct channels: after the first call, calls to a single-instance service
//! go straight to its process — and come back through the daemon whenever
//! the daemon would answer differently (paused, denied, balanced, gone).
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::{Daemon, Guard};
use switchboard::{Bus, CallError, CallOptions, InstanceId, Reject};
use switchboard_proto::{Frame, Hello, PROTOCOL_VERSION};
use switchboard_transport::{FrameReader, Outbox, Stream};

/// Calls `service.echo` until the calls reach it over a direct channel.
async fn until_direct(bus: &Bus, service: &str) -> InstanceId {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let _ = bus
            .call_with(format!("{service}.echo").as_str(), "x", CallOptions::timeout(Duration::from_secs(2)))
            .await;
        if let Some(instance) = bus.direct_instance(service) {
            return instance;
        }
        assert!(
            Instant::now() < deadline,
            "no direct channel to {service} after 10 s: {:?}",
            bus.call(
                "$sys.daemon.direct",
                switchboard::encode(&serde_json::json!({"service": service})).unwrap()
            )
            .await
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn delivered(bus: &Bus, service: &str) -> Vec<u64> {
    let services = bus.services().await.unwrap();
    let found = services.iter().find(|s| s.service == service).expect("service registered");
    found.instances.iter().map(|i| i.delivered).collect()
}

async fn direct_channels(bus: &Bus, service: &str) -> Vec<u32> {
    let services = bus.services().await.unwrap();
    let found = services.iter().find(|s| s.service == service).expect("service registered");
    found.instances.iter().map(|i| i.direct_channels).collect()
}

/// Runs a CLI command against the daemon without blocking the runtime.
async fn cli(daemon: &Daemon, args: &[&str]) -> std::process::Output {
    let mut command = daemon.cli(args);
    tokio::task::spawn_blocking(move || command.output().expect("run the CLI")).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_go_direct_after_the_first_and_pass_no_frame_through_the_daemon() {
    let daemon = Daemon::start();
    let _echo = Guard(daemon.responder(&["direct.echo", "--echo", "-q"]));
    let bus = daemon.bus().await;
    until_direct(&bus, "direct").await;
    let before = delivered(&bus, "direct").await;
    for i in 0..200 {
        let payload = format!("call {i}");
        assert_eq!(bus.call("direct.echo", payload.clone()).await.unwrap(), payload.as_bytes());
    }
    assert_eq!(delivered(&bus, "direct").await, before, "the daemon routed none of the 200 calls");
    assert_eq!(direct_channels(&bus, "direct").await, vec![1], "`switchboard ls` shows the channel");
    // An unknown method gets the same typed error as through the daemon.
    let err = bus.call("direct.nosuch", "x").await.unwrap_err();
    assert!(matches!(err, CallError::NoSuchMethod(_)), "{err:?}");
    // A payload over the frame limit goes as a blob by itself (issue 17).
    let huge = vec![3u8; 9 * 1024 * 1024];
    assert_eq!(bus.call("direct.echo", huge.clone()).await.unwrap(), huge);
    // Turned off, calls go through the daemon again.
    bus.set_direct_calls(false);
    assert_eq!(bus.direct_instance("direct"), None);
    bus.call("direct.echo", "routed").await.unwrap();
    // The caller released its grant: the daemon's count says so.
    let deadline = Instant::now() + Duration::from_secs(5);
    while direct_channels(&bus, "direct").await != vec![0] {
        assert!(Instant::now() < deadline, "the daemon still counts a released channel");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(delivered(&bus, "direct").await.iter().sum::<u64>(), before.iter().sum::<u64>() + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callee_sees_the_same_verified_caller_either_way() {
    let daemon = Daemon::start();
    let server = daemon.bus().await;
    let _who = server
        .serve("who")
        .unwrap()
        .method("echo", |r| async move {
            let c = r.caller;
            Ok::<_, Reject>(format!("{} {} {} {}", c.principal, c.uid, c.pid, c.session).into())
        })
        .start()
        .await
        .unwrap();
    let bus = daemon.bus().await;
    bus.set_direct_calls(false);
    let routed = bus.call("who.echo", "").await.unwrap();
    bus.set_direct_calls(true);
    until_direct(&bus, "who").await;
    let direct = bus.call("who.echo", "").await.unwrap();
    assert_eq!(direct, routed);
    let me = bus.whoami().await.unwrap();
    let expected = format!("{} {} {} {}", me.principal, me.uid, std::process::id(), bus.session().unwrap());
    assert_eq!(String::from_utf8_lossy(&direct), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_call_times_out_at_its_deadline_not_before() {
    let daemon = Daemon::start();
    let server = daemon.bus().await;
    let _slow = server
        .serve("slow")
        .unwrap()
        .method("echo", |r| async move { Ok::<_, Reject>(r.payload) })
        .method("nap", |_| async move {
            tokio::time::sleep(Duration::from_millis(800)).await;
            Ok::<_, Reject>("late".into())
        })
        .start()
        .await
        .unwrap();
    let bus = daemon.bus().await;
    until_direct(&bus, "slow").await;
    let started = Instant::now();
    let err =
        bus.call_with("slow.nap", "", CallOptions::timeout(Duration::from_millis(150))).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(err, CallError::Timeout(Duration::from_millis(150)));
    assert!(took >= Duration::from_millis(150) && took < Duration::from_millis(700), "{took:?}");
    // The late reply is dropped; the channel keeps serving.
    assert_eq!(bus.call("slow.echo", "still").await.unwrap(), "still".as_bytes());
    assert!(bus.direct_instance("slow").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_brings_back_balancing_by_the_daemon() {
    let daemon = Daemon::start();
    let _first = Guard(daemon.responder(&["direct.echo", "--echo", "-q"]));
    let bus = daemon.bus().await;
    until_direct(&bus, "direct").await;
    let _second = Guard(daemon.responder(&["direct.echo", "--echo", "-q"]));
    assert!(support::eventually(Duration::from_secs(5), || bus.direct_instance("direct").is_none()).await);
    let before = delivered(&bus, "direct").await;
    for _ in 0..100 {
        bus.call("direct.echo", "x").await.unwrap();
    }
    let after = delivered(&bus, "direct").await;
    let gained: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    assert_eq!(gained.iter().sum::<u64>(), 100, "every call went through the daemon: {gained:?}");
    assert!(gained.iter().all(|g| *g >= 30), "balanced across both: {gained:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_is_accepted_only_from_the_process_it_was_granted_to() {
    let daemon = Daemon::start();
    let _echo = Guard(daemon.responder(&["direct.echo", "--echo", "-q"]));
    let bus = daemon.bus().await;
    let ask = |bus: Bus| async move {
        let request = switchboard::encode(&serde_json::json!({"service": "direct"})).unwrap();
        let grant = bus.call("$sys.daemon.direct", request).await.expect("granted");
        let grant: serde_json::Value = switchboard::decode(&grant).unwrap();
        (grant["address"].as_str().unwrap().to_owned(), grant["ticket"].as_str().unwrap().to_owned())
    };
    // Another process presents this process's ticket: refused.
    let (address, ticket) = ask(bus.clone()).await;
    let thief = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "present_the_ticket_in_the_environment", "--ignored", "--nocapture"])
        .env("DIRECT_ADDRESS", &address)
        .env("DIRECT_TICKET", &ticket)
        .output()
        .unwrap();
    let answer = String::from_utf8_lossy(&thief.stdout);
    assert!(answer.contains("permission_denied") && answer.contains("not to this process"), "{answer}");
    // A made-up ticket: refused; the right one, from the right process: welcome, once.
    assert!(present(&address, "0123456789abcdef").await.contains("unknown or used ticket"));
    let (address, ticket) = ask(bus.clone()).await;
    assert_eq!(present(&address, &ticket).await, "welcome");
    assert!(present(&address, &ticket).await.contains("unknown or used ticket"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_caller_may_release_its_grant() {
    let daemon = Daemon::start();
    let _echo = Guard(daemon.responder(&["direct.echo", "--echo", "-q"]));
    let bus = daemon.bus().await;
    until_direct(&bus, "direct").await;
    // Another connection sends `Revoke` for every grant id it could guess.
    let stream = Stream::connect(&switchboard::Endpoint::Unix(daemon.socket.clone())).await.unwrap();
    let (outbox, mut reader) = hello(stream, String::new());
    assert!(matches!(reader.next().await.unwrap(), Some(Frame::Welcome(_))));
    for grant in 0..32 {
        let message = "not mine".to_owned();
        outbox
            .push(&Frame::Revoke { grant, code: switchboard_proto::ErrorCode::ShuttingDown, message })
            .unwrap();
    }
    // A round trip on that connection: the daemon has handled them all.
    let whoami = Frame::Call(switchboard_proto::Call {
        id: 1,
        timeout_ms: 5000,
        instance: 0,
        service: switchboard_proto::ServiceName::parse("$sys.daemon").unwrap(),
        method: switchboard_proto::MethodName::parse("whoami").unwrap(),
        headers: Default::default(),
        payload: Default::default(),
    });
    outbox.push(&whoami).unwrap();
    assert!(matches!(reader.next().await.unwrap(), Some(Frame::Reply { id: 1, .. })));
    assert_eq!(direct_channels(&bus, "direct").await, vec![1]);
    assert!(bus.direct_instance("direct").is_some());
    let before = delivered(&bus, "direct").await;
    bus.call("direct.echo", "still direct").await.unwrap();
    assert_eq!(delivered(&bus, "direct").await, before);
}

/// The thief of the test above, run as a separate process.
#[tokio::test]
#[ignore = "run by a_ticket_is_accepted_only_from_the_process_it_was_granted_to, in its own process"]
async fn present_the_ticket_in_the_environment() {
    if let (Ok(address), Ok(ticket)) = (std::env::var("DIRECT_ADDRESS"), std::env::var("DIRECT_TICKET")) {
        println!("answer: {}", present(&address, &ticket).await);
    }
}

/// Connects to a direct channel with `ticket`; returns the instance's answer.
async fn present(address: &str, ticket: &str) -> String {
    let stream = Stream::connect_abstract(address).await.expect("connect");
    let (_outbox, mut reader) = hello(stream, format!("ticket:{ticket}"));
    match reader.next().await.unwrap() {
        Some(Frame::Goodbye { code, message }) => format!("{}: {message}", code.name()),
        Some(Frame::Welcome(_)) => "welcome".into(),
        other => format!("not refused: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_reload_revokes_a_channel_that_now_reaches_a_denied_method() {
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("switchboard.toml");
    std::fs::write(&config, "# no policy yet\n").unwrap();
    let daemon = Daemon::start_with(&["--config", config.to_str().unwrap()]);
    let server = daemon.bus().await;
    let _pol = server
        .serve("pol")
        .unwrap()
        .method("echo", |r| async move { Ok::<_, Reject>(r.payload) })
        .method("secret", |_| async move { Ok::<_, Reject>("42".into()) })
        .start()
        .await
        .unwrap();
    let bus = daemon.bus().await;
    until_direct(&bus, "pol").await;
    assert_eq!(bus.call("pol.secret", "").await.unwrap(), "42".as_bytes());
    std::fs::write(&config, "[[policy]]\nprincipal = \"*\"\ndeny = [\"call pol.secret\"]\n").unwrap();
    daemon.signal(rustix::process::Signal::HUP);
    assert!(support::eventually(Duration::from_secs(5), || bus.direct_instance("pol").is_none()).await);
    let err = bus.call("pol.secret", "").await.unwrap_err();
    assert!(matches!(err, CallError::PermissionDenied(_)), "{err:?}");
    // The allowed method still works, through the daemon: no new grant is
    // given while a method of the service is denied.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for _ in 0..3 {
        assert_eq!(bus.call("pol.echo", "ok").await.unwrap(), "ok".as_bytes());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(bus.direct_instance("pol"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_service_is_answered_by_the_daemon_and_continue_restores_the_channel() {
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("services.toml");
    write_supervised(&config, "direct.echo");
    let daemon = Daemon::start_with(&["--config", config.to_str().unwrap()]);
    let bus = daemon.bus().await;
    until_direct(&bus, "direct").await;
    let out = cli(&daemon, &["pause", "direct"]).await;
    assert!(out.status.success(), "{out:?}");
    assert!(support::eventually(Duration::from_secs(5), || bus.direct_instance("direct").is_none()).await);
    let err =
        bus.call_with("direct.echo", "x", CallOptions::timeout(Duration::from_secs(5))).await.unwrap_err();
    assert!(matches!(err, CallError::ServicePaused(_)), "{err:?}");
    let out = cli(&daemon, &["continue", "direct"]).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(bus.call("direct.echo", "back").await.unwrap(), "back".as_bytes());
    until_direct(&bus, "direct").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_fails_calls_at_once_not_at_their_deadline() {
    let daemon = Daemon::start();
    let echo = daemon.responder(&["direct.echo", "--echo", "-q"]);
    let pid = echo.id();
    let _echo = Guard(echo);
    let bus = daemon.bus().await;
    until_direct(&bus, "direct").await;
    support::signal_pid(pid, rustix::process::Signal::KILL);
    let err =
        bus.call_with("direct.echo", "x", CallOptions::timeout(Duration::from_secs(30))).await.unwrap_err();
    assert!(matches!(err, CallError::NoSuchService(_) | CallError::InstanceGone(_)), "{err:?}");
    assert_eq!(bus.direct_instance("direct"), None);
}

/// A supervisor config running `switchboard respond TARGET --echo`.
fn write_supervised(path: &Path, target: &str) {
    let root = if rustix::process::geteuid().is_root() { "run_as_root = true" } else { "" };
    let text = format!(
        "[services.direct]\ncommand = {:?}\nargs = [\"respond\", {target:?}, \"--echo\", \"-q\"]\n{root}\n",
        support::BIN
    );
    std::fs::write(path, text).unwrap();
}

/// Speaks raw frames on `stream`: sends `Hello` with `credential`; returns
/// where to push frames and where to read them.
fn hello(stream: Stream, credential: String) -> (std::sync::Arc<Outbox>, FrameReader) {
    let (read, write) = stream.into_split().unwrap();
    let outbox = std::sync::Arc::new(Outbox::new(1 << 20));
    let writer = outbox.clone();
    tokio::spawn(async move { switchboard_transport::run_writer(&writer, write).await });
    let hello = Hello { version: PROTOCOL_VERSION, features: 0, client_name: "raw".into(), credential };
    outbox.push(&Frame::Hello(hello)).unwrap();
    (outbox, FrameReader::new(read, 1 << 20))
}

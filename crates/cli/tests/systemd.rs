//! `switchboard up` under a service manager, with real processes: the notify
//! protocol heard on a `NOTIFY_SOCKET` this test binds (as systemd would),
//! and socket activation through systemd's own `systemd-socket-activate`.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod support;

use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{signal_pid, wait_exit, BIN};
use switchboard::Bus;

/// Stops a child this test started (by PID) when dropped.
struct Started(Child);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The next notify datagram, or panics after `limit`.
fn next_notice(socket: &UnixDatagram, limit: Duration) -> String {
    socket.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 4096];
    let len = socket.recv(&mut buf).expect("a notify message in time");
    String::from_utf8_lossy(&buf[..len]).into_owned()
}

/// The next notify datagram that is not a watchdog ping.
fn next_notice_except_pings(socket: &UnixDatagram) -> String {
    loop {
        let notice = next_notice(socket, Duration::from_secs(10));
        if notice != "WATCHDOG=1" {
            return notice;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_comes_after_listening_and_queue_recovery_then_watchdog_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("bus.sock");
    let addr = format!("unix:{}", socket.display());
    let data = dir.path().join("data");
    let up = |notify: Option<&std::path::Path>| {
        let mut command = Command::new(BIN);
        command
            .args(["up", "--listen", &addr, "--data-dir"])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command.env_remove("NOTIFY_SOCKET").env_remove("WATCHDOG_USEC");
        if let Some(path) = notify {
            command.env("NOTIFY_SOCKET", path).env("WATCHDOG_USEC", "200000");
        }
        Started(command.spawn().unwrap())
    };
    // A first daemon stores a message and stops.
    let mut first = up(None);
    let bus = connect_when_up(&addr).await;
    bus.queue("jobs").unwrap().put("kept across restarts").await.unwrap();
    drop(bus);
    signal_pid(first.0.id(), rustix::process::Signal::TERM);
    assert!(wait_exit(&mut first.0, Duration::from_secs(10)).is_some());

    let notify_path = dir.path().join("notify.sock");
    let listener = UnixDatagram::bind(&notify_path).unwrap();
    let mut second = up(Some(&notify_path));
    let ready = next_notice(&listener, Duration::from_secs(20));
    assert!(ready.starts_with("READY=1\nSTATUS=listening on unix:"), "{ready:?}");
    // At READY=1 the socket already takes connections and the queue is recovered.
    let bus = Bus::connect(&addr).await.expect("connect at READY=1");
    let mut consumer = bus.queue("jobs").unwrap().consume(1).await.unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(5), consumer.next()).await.unwrap().unwrap();
    assert_eq!(&delivery.payload[..], b"kept across restarts");
    delivery.ack().await.unwrap();
    // WATCHDOG_USEC=200ms: pings at least every 100 ms.
    let started = Instant::now();
    let pings: Vec<String> = (0..3).map(|_| next_notice(&listener, Duration::from_secs(2))).collect();
    assert!(pings.iter().all(|p| p == "WATCHDOG=1"), "{pings:?}");
    assert!(started.elapsed() < Duration::from_secs(1), "three pings took {:?}", started.elapsed());
    drop((consumer, bus));
    // After a reexec the new process image is the same service to the
    // manager: it says READY=1 again on the same socket, and pings on.
    let reexec = Command::new(BIN).args(["reexec", "--addr", &addr]).output().unwrap();
    assert!(reexec.status.success(), "{}", String::from_utf8_lossy(&reexec.stderr));
    let ready_again = next_notice_except_pings(&listener);
    assert!(ready_again.starts_with("READY=1\nSTATUS=listening on unix:"), "{ready_again:?}");
    assert_eq!(next_notice(&listener, Duration::from_secs(2)), "WATCHDOG=1");
    signal_pid(second.0.id(), rustix::process::Signal::TERM);
    let stopping = next_notice_except_pings(&listener);
    assert!(stopping.starts_with("STOPPING=1"), "{stopping:?}");
    assert!(wait_exit(&mut second.0, Duration::from_secs(10)).is_some_and(|s| s.success()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_activated_daemon_serves_the_inherited_socket_and_binds_no_other() {
    let Some(activate) = support::which("systemd-socket-activate") else {
        panic!(
            "systemd-socket-activate is missing: scripts/install-test-deps.sh installs it (package systemd)"
        );
    };
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("activated.sock");
    let runtime = dir.path().join("runtime");
    std::fs::create_dir(&runtime).unwrap();
    let mut manager = Started(
        Command::new(activate)
            .arg("-l")
            .arg(&socket)
            .args([BIN, "up", "--data-dir"])
            .arg(dir.path().join("data"))
            // The default socket would be here: it must not be made.
            .env("XDG_RUNTIME_DIR", &runtime)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "systemd-socket-activate made no socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The first connection starts the daemon, which takes over the socket.
    let bus =
        tokio::time::timeout(Duration::from_secs(20), Bus::connect(&format!("unix:{}", socket.display())))
            .await
            .expect("the activated daemon answers in time")
            .expect("handshake on the inherited socket");
    let whoami = bus.whoami().await.unwrap();
    assert!(whoami.principal.starts_with("user:"), "{whoami:?}");
    let info = bus.daemon_info().await.unwrap();
    assert!(
        !runtime.join("switchboard").join("bus.sock").exists(),
        "no default socket beside the inherited one"
    );
    drop(bus);
    // Re-executed, it serves the same inherited socket, still the manager's.
    let addr = format!("unix:{}", socket.display());
    let reexec = Command::new(BIN).args(["reexec", "--json", "--addr", &addr]).output().unwrap();
    assert!(reexec.status.success(), "{}", String::from_utf8_lossy(&reexec.stderr));
    let bus = Bus::connect(&addr).await.unwrap();
    assert_eq!(bus.daemon_info().await.unwrap().generation, 1);
    assert!(!runtime.join("switchboard").join("bus.sock").exists(), "nothing bound after the reexec either");
    drop(bus);
    signal_pid(info.pid, rustix::process::Signal::TERM);
    assert!(wait_exit(&mut manager.0, Duration::from_secs(10)).is_some());
    assert!(socket.exists(), "the manager's socket file is the manager's: the daemon leaves it");
}

async fn connect_when_up(addr: &str) -> Bus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match Bus::connect(addr).await {
            Ok(bus) => return bus,
            Err(err) if Instant::now() > deadline => panic!("daemon never came up: {err}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

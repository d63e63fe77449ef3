//! `switchboard up`: one daemon per socket, stale sockets, clean shutdown,
//! clients that reconnect and register again.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod support;

use std::time::Duration;

use rustix::process::Signal;
use support::{Daemon, BIN};
use switchboard::{CallError, CallOptions};

#[test]
fn a_second_daemon_on_the_same_socket_names_the_first() {
    let daemon = Daemon::start();
    let output = std::process::Command::new(BIN).args(["up", "--listen", &daemon.addr]).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&daemon.socket.display().to_string()), "{stderr}");
    assert!(stderr.contains(&format!("pid {}", daemon.pid())), "{stderr}");
    // The first one is untouched.
    assert!(daemon.socket.exists());
}

#[test]
fn sigterm_exits_zero_and_removes_the_socket() {
    let mut daemon = Daemon::start();
    daemon.signal(Signal::TERM);
    let status = daemon.wait_exit(Duration::from_secs(5)).expect("exits within 5 s");
    assert!(status.success(), "{status:?}");
    assert!(!daemon.socket.exists(), "socket left behind");
    assert!(!daemon.socket.with_extension("sock.lock").exists(), "lock file left behind");
}

#[test]
fn sigint_works_too() {
    let mut daemon = Daemon::start();
    daemon.signal(Signal::INT);
    assert!(daemon.wait_exit(Duration::from_secs(5)).expect("exits").success());
}

#[test]
fn a_stale_socket_from_a_crash_is_replaced() {
    let mut daemon = Daemon::start();
    daemon.signal(Signal::KILL);
    daemon.wait_exit(Duration::from_secs(5)).expect("killed");
    assert!(daemon.socket.exists(), "kill -9 leaves the socket behind");
    daemon.restart();
    assert!(daemon.log().contains("replacing a stale socket"), "{}", daemon.log());
    let out = daemon.cli(&["ls"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn plain_tcp_off_loopback_is_refused_at_startup() {
    let output =
        std::process::Command::new(BIN).args(["up", "--listen", "tcp://0.0.0.0:0"]).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("only loopback"), "{stderr}");
}

#[test]
fn plain_tcp_needs_saying_so() {
    let output =
        std::process::Command::new(BIN).args(["up", "--listen", "tcp://127.0.0.1:0"]).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("allow it explicitly"), "{stderr}");
}

#[tokio::test]
async fn tcp_loopback_endpoint_serves_token_holders_the_policy_allows() {
    // Find a free port by binding then releasing it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("security.toml");
    std::fs::write(
        &config,
        "[security]\nallow_plain_tcp = true\ntokens = { edge = \"0123456789abcdef0123\" }\n\
         [[policy]]\nprincipal = \"token:edge\"\nallow = [\"call demo.*\"]\n",
    )
    .unwrap();
    let tcp_addr = format!("tcp://127.0.0.1:{port}");
    let daemon = Daemon::start_with(&["--listen", &tcp_addr, "--config", config.to_str().unwrap()]);
    let unix = daemon.bus().await;
    let _svc =
        unix.serve("demo").unwrap().method("echo", |r| async move { Ok(r.payload) }).start().await.unwrap();
    let tcp = switchboard::Bus::connect_with_token(&tcp_addr, "0123456789abcdef0123").await.unwrap();
    assert_eq!(tcp.whoami().await.unwrap().principal, "token:edge");
    assert_eq!(&tcp.call("demo.echo", "over tcp").await.unwrap()[..], b"over tcp");
    // Without a token a TCP client is anonymous, which the policy does not name.
    let anonymous = switchboard::Bus::connect(&tcp_addr).await.unwrap();
    let err = anonymous.call("demo.echo", "x").await.unwrap_err();
    assert!(
        matches!(&err, switchboard::CallError::PermissionDenied(m) if m.contains("anonymous may not call demo.echo")),
        "{err}"
    );
    // A wrong token is refused at the handshake.
    let refused = switchboard::Bus::connect_with_token(&tcp_addr, "not-the-token-at-all").await;
    assert!(refused.is_err_and(|e| e.to_string().contains("unknown token")));
}

#[tokio::test]
async fn clients_reconnect_and_register_again_after_a_daemon_restart() {
    let mut daemon = Daemon::start();
    let server = daemon.bus().await;
    let _svc =
        server.serve("demo").unwrap().method("echo", |r| async move { Ok(r.payload) }).start().await.unwrap();
    let client = daemon.bus().await;
    assert_eq!(&client.call("demo.echo", "before").await.unwrap()[..], b"before");

    daemon.signal(Signal::KILL);
    daemon.wait_exit(Duration::from_secs(5)).expect("killed");
    daemon.restart();

    // Both sides come back by themselves; the service is registered again.
    let mut reply = Err(CallError::ConnectionLost);
    for _ in 0..100 {
        reply = client.call_with("demo.echo", "after", CallOptions::timeout(Duration::from_secs(5))).await;
        if reply.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(&reply.unwrap()[..], b"after");
}

#[tokio::test]
async fn watch_reports_instances_up_and_down() {
    let daemon = Daemon::start();
    let watcher = daemon.bus().await;
    let mut events = watcher.watch(16).await.unwrap();
    let server = daemon.bus().await;
    let svc = server
        .serve("inventory.eu")
        .unwrap()
        .method("reserve", |r| async move { Ok(r.payload) })
        .start()
        .await
        .unwrap();
    let instance = svc.instance();
    let up = tokio::time::timeout(Duration::from_secs(5), events.recv()).await.unwrap().unwrap();
    assert_eq!((up.event.as_str(), up.service.as_str(), up.instance), ("up", "inventory.eu", instance));
    assert_eq!(up.methods, vec!["reserve"]);
    drop(svc);
    server.close();
    let down = tokio::time::timeout(Duration::from_secs(5), events.recv()).await.unwrap().unwrap();
    assert_eq!((down.event.as_str(), down.instance), ("down", instance));
}

#[tokio::test]
async fn discovery_lists_services_instances_and_methods() {
    let daemon = Daemon::start();
    let bus = daemon.bus().await;
    let _a = bus
        .serve("billing")
        .unwrap()
        .method("charge", |r| async move { Ok(r.payload) })
        .method("refund", |r| async move { Ok(r.payload) })
        .start()
        .await
        .unwrap();
    let _b = bus
        .serve("billing")
        .unwrap()
        .method("charge", |r| async move { Ok(r.payload) })
        .method("refund", |r| async move { Ok(r.payload) })
        .start()
        .await
        .unwrap();
    let services = bus.services().await.unwrap();
    assert_eq!(services.len(), 1);
    assert_eq!(services[0].service, "billing");
    assert_eq!(services[0].instances.len(), 2);
    assert_eq!(services[0].instances[0].methods, vec!["charge", "refund"]);
    assert_eq!(services[0].instances[0].pid, Some(std::process::id()));
    let info = bus.daemon_info().await.unwrap();
    assert_eq!((info.pid, info.services, info.instances), (daemon.pid(), 1, 2));
}

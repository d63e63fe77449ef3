//! Bad bytes on the socket end only the offending connection; the daemon
//! logs why and keeps serving everyone else.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod support;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use support::Daemon;
use switchboard_proto::{Frame, Hello, PROTOCOL_VERSION};

fn hello_bytes() -> Vec<u8> {
    let mut buf = bytes::BytesMut::new();
    Frame::Hello(Hello {
        version: PROTOCOL_VERSION,
        features: 0,
        client_name: "hostile".into(),
        credential: String::new(),
    })
    .encode(&mut buf);
    buf.to_vec()
}

/// Sends `bytes` and returns whether the daemon closed the connection.
fn daemon_closes_after(daemon: &Daemon, bytes: &[u8]) -> bool {
    let mut stream = UnixStream::connect(&daemon.socket).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    stream.write_all(bytes).unwrap();
    let mut sink = Vec::new();
    // read_to_end returns once the daemon closes its side.
    stream.read_to_end(&mut sink).is_ok()
}

async fn still_serves(daemon: &Daemon, bus: &switchboard::Bus) {
    assert_eq!(&bus.call("demo.echo", "ok").await.unwrap()[..], b"ok");
    // And a brand-new client can connect too.
    let fresh = daemon.bus().await;
    assert_eq!(&fresh.call("demo.echo", "new").await.unwrap()[..], b"new");
}

#[tokio::test]
async fn garbage_truncated_and_huge_frames_close_only_that_connection() {
    let daemon = Daemon::start();
    let bus = daemon.bus().await;
    let _svc =
        bus.serve("demo").unwrap().method("echo", |r| async move { Ok(r.payload) }).start().await.unwrap();

    // 1. Garbage before any handshake.
    assert!(daemon_closes_after(&daemon, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    still_serves(&daemon, &bus).await;

    // 2. Garbage after a valid handshake: an unknown frame kind.
    let mut bytes = hello_bytes();
    bytes.extend_from_slice(&[5, 0, 0, 0, 0xEE, 1, 2, 3, 4]);
    assert!(daemon_closes_after(&daemon, &bytes));
    still_serves(&daemon, &bus).await;

    // 3. A frame announcing 4 GiB.
    let mut bytes = hello_bytes();
    bytes.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(daemon_closes_after(&daemon, &bytes));
    still_serves(&daemon, &bus).await;

    // 4. A truncated frame: a Call cut short, then the client hangs up.
    {
        let mut stream = UnixStream::connect(&daemon.socket).unwrap();
        let mut bytes = hello_bytes();
        bytes.extend_from_slice(&[40, 0, 0, 0, 6, 1, 0]);
        stream.write_all(&bytes).unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut sink = Vec::new();
        stream.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
        assert!(stream.read_to_end(&mut sink).is_ok());
    }
    // 5. A truncated field inside a whole frame.
    let mut bytes = hello_bytes();
    bytes.extend_from_slice(&[3, 0, 0, 0, 6, 1, 0]);
    assert!(daemon_closes_after(&daemon, &bytes));
    still_serves(&daemon, &bus).await;

    assert!(
        support::eventually(Duration::from_secs(5), || {
            let log = daemon.log();
            log.contains("handshake refused")
                && log.contains("unknown frame kind 238")
                && log.contains("exceeds the maximum")
                && log.contains("in the middle of a frame")
                && log.contains("truncated in field `id`")
        })
        .await,
        "daemon log lacks a reason:\n{}",
        daemon.log()
    );
}

#[tokio::test]
async fn wrong_protocol_version_is_refused_with_a_reason() {
    let daemon = Daemon::start();
    let mut buf = bytes::BytesMut::new();
    Frame::Hello(Hello { version: 99, features: 0, client_name: "future".into(), credential: String::new() })
        .encode(&mut buf);
    let mut stream = UnixStream::connect(&daemon.socket).unwrap();
    stream.write_all(&buf).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).unwrap();
    let mut reply = bytes::BytesMut::from(&reply[..]);
    let frame = switchboard_proto::decode(&mut reply, 1 << 20).unwrap().unwrap();
    assert!(
        matches!(&frame, Frame::Goodbye { code: switchboard_proto::ErrorCode::UnsupportedVersion, message } if message.contains("99")),
        "{frame:?}"
    );
}

#[tokio::test]
async fn a_client_that_never_says_hello_is_dropped() {
    let daemon = Daemon::start();
    let mut stream = UnixStream::connect(&daemon.socket).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let started = std::time::Instant::now();
    let mut sink = Vec::new();
    assert!(stream.read_to_end(&mut sink).is_ok());
    assert!(started.elapsed() < Duration::from_secs(10));
}

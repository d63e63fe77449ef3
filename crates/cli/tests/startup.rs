//! Apps are up before clients are let in (issue 19). The daemon used to
//! start accepting before the supervisor had put a hold on the services
//! it was about to start, so a call made the moment the socket appeared
//! could get `no_such_service` for a configured service. Raw frames, from
//! the instant the socket exists, so nothing on the client side waits.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod support;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use switchboard_proto::{Call, ErrorCode, Frame, Headers, Hello, MethodName, ServiceName, PROTOCOL_VERSION};

/// Connects the moment the socket accepts a connection (spinning, no sleep).
fn connect_as_soon_as_possible(socket: &std::path::Path) -> UnixStream {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(stream) = UnixStream::connect(socket) {
            return stream;
        }
        assert!(Instant::now() < deadline, "the daemon never created {}", socket.display());
        std::thread::yield_now();
    }
}

/// Frames until the connection has answered the call (or closed).
fn answer(stream: &mut UnixStream) -> Vec<Frame> {
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let (mut buf, mut frames, mut chunk) = (BytesMut::new(), Vec::new(), [0u8; 4096]);
    while !frames
        .iter()
        .any(|f| matches!(f, Frame::Error { .. } | Frame::Reply { .. } | Frame::Goodbye { .. }))
    {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        while let Ok(Some(frame)) = switchboard_proto::decode(&mut buf, 1 << 24) {
            frames.push(frame);
        }
    }
    frames
}

/// Failed before the fix (the previous build got `no_such_service` in the
/// first round): 50 daemons, each called the instant its socket exists.
#[test]
fn a_call_made_the_instant_the_socket_exists_finds_the_starting_service_held() {
    let work = tempfile::tempdir().unwrap();
    // It stays starting while the call waits.
    let config = support::never_ready_service(work.path());
    let mut hello_and_call = BytesMut::new();
    let hello = Hello {
        version: PROTOCOL_VERSION,
        features: 0,
        client_name: "early".into(),
        credential: String::new(),
    };
    Frame::Hello(hello).encode(&mut hello_and_call);
    Frame::Call(Call {
        id: 1,
        timeout_ms: 100,
        instance: 0,
        service: ServiceName::parse("slow").unwrap(),
        method: MethodName::parse("get").unwrap(),
        headers: Headers::default(),
        payload: bytes::Bytes::new(),
    })
    .encode(&mut hello_and_call);
    for round in 0..50 {
        let dir = work.path().join(format!("round-{round}"));
        std::fs::create_dir(&dir).unwrap();
        let socket = dir.join("bus.sock");
        let daemon = Command::new(support::BIN)
            .arg("up")
            .arg("--listen")
            .arg(format!("unix:{}", socket.display()))
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let daemon = support::Guard(daemon);
        let mut stream = connect_as_soon_as_possible(&socket);
        stream.write_all(&hello_and_call).unwrap();
        let frames = answer(&mut stream);
        assert!(matches!(frames.first(), Some(Frame::Welcome(_))), "round {round}: {frames:?}");
        let code =
            frames.iter().find_map(|f| if let Frame::Error { code, .. } = f { Some(*code) } else { None });
        assert_eq!(code, Some(ErrorCode::Timeout), "round {round}: the call was not held: {frames:?}");
        // Stop it as `up` is stopped (its supervised `sleep` goes too).
        support::signal_pid(daemon.0.id(), rustix::process::Signal::TERM);
        let mut daemon = daemon;
        assert!(
            support::wait_exit(&mut daemon.0, Duration::from_secs(10)).is_some(),
            "round {round}: no exit"
        );
    }
}

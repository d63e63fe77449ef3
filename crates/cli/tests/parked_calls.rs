//! Calls parked while their service starts (issue 12, defect 8): they pass
//! the same admission as every call, count as in flight, and the parked set
//! is bounded. Raw frames, so no client-side limit hides what the daemon does.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod support;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use support::Daemon;
use switchboard_proto::{Call, ErrorCode, Frame, Headers, Hello, MethodName, ServiceName, PROTOCOL_VERSION};

fn call(id: u32, timeout_ms: u32, payload: usize) -> Frame {
    Frame::Call(Call {
        id,
        timeout_ms,
        instance: 0,
        service: ServiceName::parse("slow").unwrap(),
        method: MethodName::parse("get").unwrap(),
        headers: Headers::default(),
        payload: bytes::Bytes::from(vec![0u8; payload]),
    })
}

/// Reads frames until `count` have come or `limit` passes.
fn read_frames(stream: &mut UnixStream, count: usize, limit: Duration) -> Vec<Frame> {
    let deadline = Instant::now() + limit;
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut chunk = [0u8; 4096];
    while frames.len() < count && Instant::now() < deadline {
        stream
            .set_read_timeout(Some(
                deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1)),
            ))
            .unwrap();
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

fn error_codes(frames: &[Frame]) -> Vec<ErrorCode> {
    frames.iter().filter_map(|f| if let Frame::Error { code, .. } = f { Some(*code) } else { None }).collect()
}

/// Before the fix a connection limited to 8 calls in flight could park any
/// number of calls to a starting service, and calls over the maximum frame
/// size parked too: all 42 waited, none was refused. Failed before the fix.
#[test]
fn calls_to_a_starting_service_are_admitted_before_they_park() {
    let work = tempfile::tempdir().unwrap();
    // It stays starting for the whole test.
    let config = support::never_ready_service(work.path());
    let daemon = Daemon::start_with(&[
        "--config",
        config.to_str().unwrap(),
        "--max-inflight",
        "8",
        "--max-frame",
        "65536",
    ]);
    // The service is starting (the daemon let no client in before its hold
    // was in place: tests/startup.rs).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = daemon.cli(&["status", "slow", "--json"]).output().unwrap();
        if String::from_utf8_lossy(&out.stdout).contains("\"StartPending\"") {
            break;
        }
        assert!(Instant::now() < deadline, "slow never reported StartPending: {out:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut stream = UnixStream::connect(&daemon.socket).unwrap();
    let mut out = BytesMut::new();
    Frame::Hello(Hello {
        version: PROTOCOL_VERSION,
        features: 0,
        client_name: "parker".into(),
        credential: String::new(),
    })
    .encode(&mut out);
    stream.write_all(&out).unwrap();
    let welcome = read_frames(&mut stream, 1, Duration::from_secs(5));
    assert!(matches!(welcome.first(), Some(Frame::Welcome(_))), "{welcome:?}");

    let started = Instant::now();
    let mut out = BytesMut::new();
    // One over the frame size the daemon enforces (the frame itself fits
    // the socket's maximum only because the request adds more around it).
    call(41, 3000, 65_500).encode(&mut out);
    for id in 1..=40 {
        call(id, 3000, 0).encode(&mut out);
    }
    stream.write_all(&out).unwrap();
    let refused = read_frames(&mut stream, 33, Duration::from_secs(2));
    let codes = error_codes(&refused);
    println!("refused within {:?}: {codes:?}", started.elapsed());
    assert_eq!(codes.iter().filter(|c| **c == ErrorCode::Overloaded).count(), 32, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == ErrorCode::PayloadTooLarge).count(), 1, "{codes:?}");
    // The 8 admitted wait until their deadline.
    let waited = read_frames(&mut stream, 8, Duration::from_secs(5));
    assert_eq!(error_codes(&waited), vec![ErrorCode::Timeout; 8]);
    assert!(started.elapsed() >= Duration::from_millis(2900));
    // Then they no longer count: the connection may call again.
    let mut out = BytesMut::new();
    call(50, 100, 0).encode(&mut out);
    stream.write_all(&out).unwrap();
    let again = read_frames(&mut stream, 1, Duration::from_secs(3));
    assert_eq!(error_codes(&again), vec![ErrorCode::Timeout]);
}

//! Memory any client could grow (issue 12, defects 6–8): what the daemon
//! holds for a connection is bounded in bytes, whatever that connection does.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod support;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use support::Daemon;
use switchboard_proto::{Call, Frame, Headers, Hello, MethodName, ServiceName, PROTOCOL_VERSION};

/// The daemon's resident memory, from /proc.
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn hello(name: &str) -> Vec<u8> {
    let mut buf = BytesMut::new();
    Frame::Hello(Hello {
        version: PROTOCOL_VERSION,
        features: 0,
        client_name: name.into(),
        credential: String::new(),
    })
    .encode(&mut buf);
    buf.to_vec()
}

fn whoami_flood(frames: u32) -> Vec<u8> {
    let mut buf = BytesMut::new();
    for id in 1..=frames {
        Frame::Call(Call {
            id,
            timeout_ms: 30_000,
            instance: 0,
            service: ServiceName::parse("$sys.daemon").unwrap(),
            method: MethodName::parse("whoami").unwrap(),
            headers: Headers::default(),
            payload: bytes::Bytes::new(),
        })
        .encode(&mut buf);
    }
    buf.to_vec()
}

/// Defect 6: a client that sends `whoami` calls and never reads grew the
/// daemon from 7 MiB to 1.7 GiB in 20 seconds (every reply was queued).
/// Now the daemon stops reading a connection whose replies pile up, and
/// disconnects it after the slow-consumer grace, logging why; everyone
/// else is served meanwhile. Failed before the fix: RSS 16 → 221 MiB in 20 s
/// (debug build) and the flooder was never disconnected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_its_replies_cannot_grow_the_daemon() {
    let daemon = Daemon::start_with(&["--slow-consumer", "2s"]);
    let bus = daemon.bus().await;
    let before = rss_bytes(daemon.pid());
    let flood = whoami_flood(4096);
    let socket = daemon.socket.clone();
    let flooder = std::thread::spawn(move || {
        let mut stream = UnixStream::connect(socket).unwrap();
        stream.write_all(&hello("never-reads")).unwrap();
        stream.set_write_timeout(Some(Duration::from_millis(200))).unwrap();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            match stream.write(&flood) {
                Ok(_) => {}
                Err(e)
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => return Some(started.elapsed()), // the daemon closed it
            }
        }
        None
    });
    let mut peak = before;
    let mut served = 0;
    while !flooder.is_finished() {
        peak = peak.max(rss_bytes(daemon.pid()));
        bus.whoami().await.expect("a reading client is served during the flood");
        served += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let disconnected = flooder.join().unwrap();
    println!(
        "RSS before {} MiB, peak {} MiB; {served} calls served meanwhile; disconnected after {disconnected:?}",
        before >> 20,
        peak >> 20
    );
    assert!(disconnected.is_some_and(|d| d < Duration::from_secs(15)), "the flooder was never disconnected");
    // Bound: the congestion mark (4 MiB) plus one read buffer of requests
    // (256 KiB) and the allocator's slack, over what it started with.
    assert!(peak < before + (64 << 20), "RSS grew from {} to {} MiB", before >> 20, peak >> 20);
    assert!(daemon.log().contains("it read nothing of the"), "the reason is logged:\n{}", daemon.log());
    assert!(served > 10);
}

/// Defect 7: a subscription's backlog was bounded in messages (8,192 of
/// up to the maximum frame each), so one subscriber that never reads could
/// make the daemon hold gigabytes. Now a connection's backlogs are bounded
/// in bytes (8 MiB) and its outbox by the congestion mark: 2,000 messages of
/// 64 KiB (125 MiB) published to a subscriber that never reads leave the
/// daemon within 64 MiB of where it started. Failed before the fix (16 →
/// 150 MiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_never_reads_holds_a_bounded_backlog() {
    let daemon = Daemon::start();
    let bus = daemon.bus().await;
    let mut stalled = UnixStream::connect(&daemon.socket).unwrap();
    let mut frames = BytesMut::from(&hello("stalled-subscriber")[..]);
    let pattern = switchboard_proto::TopicPattern::parse("big.>").unwrap();
    Frame::Subscribe { req: 1, sid: 1, pattern }.encode(&mut frames);
    stalled.write_all(&frames).unwrap();
    // A reading subscriber on the same topic sees when the publications are through.
    let mut reader = bus.subscribe("big.>").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_bytes(daemon.pid());
    let mut peak = before;
    let payload = vec![5u8; 64 * 1024];
    for n in 0..2000 {
        bus.publish("big.data", payload.clone()).await.unwrap();
        if n % 100 == 0 {
            peak = peak.max(rss_bytes(daemon.pid()));
        }
    }
    let mut received = 0;
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_secs(2), reader.next()).await {
        received += 1;
    }
    peak = peak.max(rss_bytes(daemon.pid()));
    println!(
        "RSS before {} MiB, peak {} MiB; the reading subscriber got {received}",
        before >> 20,
        peak >> 20
    );
    assert!(peak < before + (64 << 20), "RSS grew from {} to {} MiB", before >> 20, peak >> 20);
    assert!(received > 0);
    drop(stalled);
}

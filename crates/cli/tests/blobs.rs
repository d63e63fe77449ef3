//! Blobs end to end: real daemon, real peer processes, real descriptors.
//! A 64 MiB request and reply, one memory file shared by four subscriber
//! processes, a sender killed after sending, the blob limit, a hostile
//! descriptor, a client that takes no blobs, and no descriptor leaked after
//! many blob messages.

mod support;

use std::os::fd::AsFd;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rustix::process::Signal;
use support::{example_peer, next_line, signal_pid, wait_exit, Daemon, Guard, PeerLines};
use switchboard::{Blob, Bus, CallError};
use switchboard_proto::{Call, ErrorCode, Frame, Hello, FEATURE_BLOBS, PROTOCOL_VERSION};
use switchboard_transport::{FrameReader, Stream, WriteHalf};

/// Same digest as the peer's.
fn digest(bytes: &[u8]) -> u64 {
    bytes.chunks(8).fold(0xcbf2_9ce4_8422_2325u64, |acc, chunk| {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        (acc ^ u64::from_le_bytes(word)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn patterned(bus: &Bus, len: usize) -> Blob {
    let mut blob = bus.blob(len).expect("blob");
    for (i, chunk) in blob.chunks_mut(4096).enumerate() {
        chunk.fill((i % 251) as u8);
    }
    blob.seal().expect("seal")
}

fn memory_file(blob: &Blob) -> String {
    let stat = rustix::fs::fstat(blob.fd().as_fd()).expect("fstat");
    format!("{} {}", stat.st_dev, stat.st_ino)
}

fn peer(daemon: &Daemon, args: &[&str]) -> (Guard, PeerLines) {
    example_peer(daemon, "blob_peer", args)
}

#[tokio::test]
async fn a_64_mib_request_and_a_64_mib_reply_cross_as_blobs() {
    let daemon = Daemon::start();
    let (_server, mut out) = peer(&daemon, &["serve", "big"]);
    assert_eq!(next_line(&mut out), "serving");
    let bus = daemon.bus().await;
    let request = patterned(&bus, 64 << 20);
    let expected = format!("{} {} true", 64 << 20, digest(&request));
    let answer = bus.call("big.digest", request).await.expect("a 64 MiB request");
    assert_eq!(std::str::from_utf8(&answer).expect("text"), expected);

    // A plain 64 MiB payload becomes a blob by itself.
    let plain = Bytes::from(vec![7u8; 64 << 20]);
    let answer = bus.call("big.digest", plain.clone()).await.expect("a plain 64 MiB request");
    assert_eq!(std::str::from_utf8(&answer).expect("text"), format!("{} {} true", 64 << 20, digest(&plain)));

    let reply = bus.call("big.make", Bytes::from((64 << 20).to_string())).await.expect("a 64 MiB reply");
    assert_eq!(reply.len(), 64 << 20);
    assert!(Blob::of(&reply).is_some(), "the reply is a mapping of the service's memory file");
    assert_eq!(digest(&reply), digest(&patterned(&bus, 64 << 20)));
}

#[tokio::test]
async fn a_16_mib_publication_reaches_four_subscriber_processes_as_one_memory_file() {
    let daemon = Daemon::start();
    let mut subscribers: Vec<_> = (0..4).map(|_| peer(&daemon, &["subscribe", "frames.camera"])).collect();
    for (_, out) in &mut subscribers {
        assert_eq!(next_line(out), "subscribed");
    }
    let bus = daemon.bus().await;
    let blob = patterned(&bus, 16 << 20);
    let expected = format!("{} {} {}", 16 << 20, digest(&blob), memory_file(&blob));
    bus.publish("frames.camera", blob).await.expect("publish");
    bus.flush().await.expect("sent"); // before this thread blocks reading the peers
    for (_, out) in &mut subscribers {
        assert_eq!(next_line(out), expected, "same bytes, same memory file (st_dev, st_ino)");
    }
}

#[tokio::test]
async fn what_a_receiver_holds_outlives_its_sender_killed_after_sending() {
    let daemon = Daemon::start();
    let bus = daemon.bus().await;
    let mut subscription = bus.subscribe("frames.last").await.expect("subscribe");
    let (mut sender, mut out) = peer(&daemon, &["publish", "frames.last", "8388608"]);
    let sent = next_line(&mut out);
    let switchboard::Item::Message(message) = subscription.next().await.expect("a message") else {
        panic!("lagged")
    };
    signal_pid(sender.0.id(), Signal::KILL);
    assert!(wait_exit(&mut sender.0, Duration::from_secs(5)).is_some(), "the sender is gone");
    assert!(Blob::of(&message.payload).is_some());
    assert_eq!(
        sent,
        format!("sent {}", digest(&message.payload)),
        "the bytes are intact after the sender died"
    );
}

#[tokio::test]
async fn a_principal_over_its_blob_limit_gets_payload_too_large() {
    let (daemon, _dir) = Daemon::start_with_config("[security]\nmax_blob = \"1MiB\"\n", &[]);
    let (_server, mut out) = peer(&daemon, &["serve", "big"]);
    assert_eq!(next_line(&mut out), "serving");
    let bus = daemon.bus().await;
    let err = bus.call("big.digest", patterned(&bus, 2 << 20)).await.expect_err("over the limit");
    let CallError::PayloadTooLarge(message) = &err else { panic!("{err:?}") };
    assert!(message.contains("blob limit of 1048576 bytes"), "{message}");
    let answer = bus.call("big.digest", patterned(&bus, 1 << 20)).await.expect("at the limit");
    assert!(answer.ends_with(b" true"));
}

/// A raw connection to the daemon that says whether it takes blobs: its
/// writing half, its reader, and the features the daemon answered.
async fn raw_client(daemon: &Daemon, features: u32) -> (WriteHalf, FrameReader, u32) {
    let endpoint = daemon.addr.parse().expect("endpoint");
    let (read, write) = Stream::connect(&endpoint).await.expect("connect").into_split().expect("split");
    let hello =
        Hello { version: PROTOCOL_VERSION, features, client_name: "raw".into(), credential: String::new() };
    send(&write, &Frame::Hello(hello)).await;
    let mut reader = FrameReader::new(read, 64 << 20);
    let Some(Frame::Welcome(welcome)) = reader.next().await.expect("welcome") else { panic!("no welcome") };
    if welcome.features & FEATURE_BLOBS != 0 {
        reader.accept_blobs();
    }
    (write, reader, welcome.features)
}

async fn send(write: &WriteHalf, frame: &Frame) {
    let mut bytes = BytesMut::new();
    frame.encode(&mut bytes);
    let written = write.write_vectored(&[std::io::IoSlice::new(&bytes)]).await.expect("write");
    assert_eq!(written, bytes.len());
}

fn call_frame(method: &str, payload: Bytes) -> Frame {
    Frame::Call(Call {
        id: 1,
        timeout_ms: 10_000,
        instance: 0,
        service: "big".parse().expect("name"),
        method: method.parse().expect("name"),
        headers: Default::default(),
        payload,
    })
}

#[tokio::test]
async fn a_client_that_takes_no_blobs_gets_bytes_or_payload_too_large() {
    let daemon = Daemon::start();
    let (_server, mut out) = peer(&daemon, &["serve", "big"]);
    assert_eq!(next_line(&mut out), "serving");
    let (write, mut reader, features) = raw_client(&daemon, 0).await;
    assert_eq!(features, 0);
    send(&write, &call_frame("make", Bytes::from("100000"))).await;
    let Some(Frame::Reply { payload, .. }) = reader.next().await.expect("reply") else { panic!("no reply") };
    assert_eq!(payload.len(), 100_000, "a blob that fits a frame arrives as bytes");
    send(&write, &call_frame("make", Bytes::from("20000000"))).await;
    let Some(Frame::Error { code, message, .. }) = reader.next().await.expect("error") else {
        panic!("no error")
    };
    assert_eq!(code, ErrorCode::PayloadTooLarge);
    assert!(message.contains("takes no blobs"), "{message}");
}

#[tokio::test]
async fn an_unsealed_memory_file_ends_only_its_own_connection_naming_why() {
    let daemon = Daemon::start();
    let (write, mut reader, features) = raw_client(&daemon, FEATURE_BLOBS).await;
    assert_eq!(features, FEATURE_BLOBS, "a client on the Unix socket is offered blobs");
    // A blob frame whose descriptor is a memory file anyone could still change.
    let unsealed = rustix::fs::memfd_create("unsealed", rustix::fs::MemfdFlags::CLOEXEC).expect("memfd");
    rustix::fs::ftruncate(&unsealed, 65536).expect("size");
    let mut head = BytesMut::new();
    call_frame("digest", Bytes::new()).encode_blob_head(&mut head, 65536);
    write.send_with_fd(&[std::io::IoSlice::new(&head)], unsealed.as_fd()).await.expect("send");
    let Some(Frame::Goodbye { code, message }) = reader.next().await.expect("goodbye") else {
        panic!("no goodbye")
    };
    assert_eq!(code, ErrorCode::BadRequest);
    assert!(message.contains("not sealed against write"), "{message}");
    // Everyone else is served on.
    let bus = daemon.bus().await;
    bus.call("$sys.daemon.whoami", Bytes::new()).await.expect("the daemon still serves");
}

/// Also the test that found a lost wake-up: a read that ended where
/// descriptors began forgot that more bytes were waiting, and a publisher of
/// many blobs stalled after a few hundred.
#[tokio::test]
async fn no_descriptor_leaks_after_many_blob_messages() {
    let count: usize =
        std::env::var("SWITCHBOARD_BLOB_MESSAGES").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let daemon = Daemon::start();
    let (mut drain, mut out) = peer(&daemon, &["drain", "blobs.many"]);
    let subscribed = next_line(&mut out);
    let fds_at_start: usize = subscribed.trim_start_matches("subscribed ").parse().expect("a count");
    let daemon_fds = || std::fs::read_dir(format!("/proc/{}/fd", daemon.pid())).expect("daemon fds").count();
    let ours = || std::fs::read_dir("/proc/self/fd").expect("our fds").count();
    let bus = daemon.bus().await;
    let (daemon_before, ours_before) = (daemon_fds(), ours());
    let blob = Bytes::from(patterned(&bus, 64 * 1024));
    for i in 0..count {
        let published = tokio::time::timeout(Duration::from_secs(5), bus.publish("blobs.many", blob.clone()));
        assert!(published.await.is_ok(), "publication {i} did not leave within 5 s");
    }
    // The end mark may itself be dropped by a subscriber that lags: it is
    // sent until the subscriber reports.
    let (report_tx, report_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || report_tx.send(next_line(&mut out)));
    let mut report = None;
    for _ in 0..100 {
        bus.publish("blobs.many", Bytes::from_static(b"end")).await.expect("publish");
        bus.flush().await.expect("sent");
        if let Ok(line) = report_rx.recv_timeout(Duration::from_millis(200)) {
            report = Some(line);
            break;
        }
    }
    let report = report.expect("the subscriber reported within 20 s");
    let words: Vec<&str> = report.split(' ').collect();
    let (received, lagged, fds_at_end): (u64, u64, usize) =
        (words[1].parse().expect("n"), words[3].parse().expect("n"), words[5].parse().expect("n"));
    assert_eq!(received + lagged, count as u64, "every message received or counted as missed: {report}");
    assert!(received > 0, "{report}");
    assert_eq!(fds_at_end, fds_at_start, "the subscriber holds no more descriptors than before");
    // No growth (a descriptor the daemon had open for a moment, such as a
    // wait for writability, may have closed since).
    let daemon_after = daemon_fds();
    assert!(
        daemon_after <= daemon_before,
        "the daemon holds {daemon_after} descriptors, {daemon_before} before"
    );
    drop(blob);
    // (Not equal: the test harness may close one of its own meanwhile.)
    assert!(ours() <= ours_before, "nor does the publisher");
    assert!(wait_exit(&mut drain.0, Duration::from_secs(5)).is_some());
}

#[tokio::test]
async fn a_subscriber_that_never_reads_holds_a_bounded_number_of_blobs_in_the_daemon() {
    let daemon = Daemon::start();
    let daemon_fds = || std::fs::read_dir(format!("/proc/{}/fd", daemon.pid())).expect("daemon fds").count();
    let (write, mut reader, _) = raw_client(&daemon, FEATURE_BLOBS).await;
    let pattern = "blobs.unread".parse().expect("pattern");
    send(&write, &Frame::Subscribe { req: 1, sid: 1, pattern }).await;
    let Some(Frame::Reply { id: 1, .. }) = reader.next().await.expect("subscribed") else {
        panic!("no reply")
    };
    // From here on it reads nothing.
    let bus = daemon.bus().await;
    let before = daemon_fds();
    let blob = Bytes::from(patterned(&bus, 256 * 1024));
    for _ in 0..2_000 {
        bus.publish("blobs.unread", blob.clone()).await.expect("publish");
    }
    bus.flush().await.expect("the daemon still answers its publisher");
    let held = daemon_fds() - before;
    assert!(held <= 64, "the daemon holds {held} descriptors for a subscriber that reads nothing");
    drop(reader);
    drop(write);
    let released = support::eventually(Duration::from_secs(5), || daemon_fds() <= before).await;
    assert!(released, "its blobs are let go when it leaves: {} descriptors", daemon_fds());
}

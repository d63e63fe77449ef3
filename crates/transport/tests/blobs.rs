//! Blobs over a real socket pair: what crosses is the memory file itself,
//! and every descriptor a peer can send that is not a proper blob is
//! refused by name, without leaking a descriptor.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use rustix::fs::{MemfdFlags, SealFlags};
use switchboard_proto::{Frame, DEFAULT_MAX_FRAME};
use switchboard_transport::blob::{held, Blob, BlobError, BlobMut};
use switchboard_transport::{run_writer, FrameReader, Outbox, ReadError, Stream, WriteHalf};

/// The tests count this process's descriptors: they run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// Runs `test` on its own runtime, alone.
fn run(test: impl std::future::Future<Output = ()>) {
    let _serial = serial();
    runtime().block_on(test);
}

fn filled_blob(len: usize, seed: u8) -> Blob {
    let mut blob = BlobMut::new(len).expect("blob");
    for (i, byte) in blob.iter_mut().enumerate() {
        *byte = (i as u8).wrapping_mul(31).wrapping_add(seed);
    }
    blob.seal().expect("seal")
}

fn identity(fd: impl AsFd) -> (u64, u64) {
    let stat = rustix::fs::fstat(fd).expect("fstat");
    (stat.st_dev, stat.st_ino)
}

/// The writing end and the reading end of a fresh socket pair.
fn raw_pair(blobs: bool) -> (WriteHalf, FrameReader) {
    let (a, b) = Stream::pair().expect("pair");
    let (_, write) = a.into_split().expect("split");
    let (read, _) = b.into_split().expect("split");
    let mut reader = FrameReader::new(read, DEFAULT_MAX_FRAME);
    if blobs {
        reader.accept_blobs();
    }
    (write, reader)
}

/// An outbox writing to a reader.
fn pair(blobs: bool) -> (Arc<Outbox>, FrameReader) {
    let (write, reader) = raw_pair(blobs);
    let outbox = Arc::new(Outbox::new(1 << 20));
    if blobs {
        outbox.accept_blobs();
    }
    let o = outbox.clone();
    tokio::spawn(async move { run_writer(&o, write).await });
    (outbox, reader)
}

#[test]
fn a_blob_crosses_as_its_memory_file_and_arrives_without_a_copy() {
    run(async {
        let (outbox, mut reader) = pair(true);
        let blob = filled_blob(3 << 20, 7);
        let sent_as = identity(blob.fd());
        let expected = blob.to_vec();
        outbox.push(&Frame::Reply { id: 1, payload: Bytes::from(blob) }).expect("push");
        outbox.push(&Frame::Reply { id: 2, payload: Bytes::from_static(b"small after") }).expect("push");
        let Some(Frame::Reply { id: 1, payload }) = reader.next().await.expect("read") else {
            panic!("reply 1")
        };
        assert_eq!(payload.len(), expected.len());
        assert!(payload[..] == expected[..], "the bytes differ");
        let received = Blob::of(&payload).expect("the payload is the received blob's mapping");
        assert_eq!(identity(received.fd()), sent_as, "the same memory file, not a copy");
        let Some(Frame::Reply { id: 2, payload }) = reader.next().await.expect("read") else {
            panic!("reply 2")
        };
        assert_eq!(&payload[..], b"small after");
    });
}

#[test]
fn to_a_peer_that_takes_no_blobs_a_blob_goes_as_bytes() {
    run(async {
        let (outbox, mut reader) = pair(false);
        let blob = filled_blob(100_000, 3);
        let expected = blob.to_vec();
        outbox.push(&Frame::Reply { id: 9, payload: Bytes::from(blob) }).expect("push");
        let Some(Frame::Reply { payload, .. }) = reader.next().await.expect("read") else { panic!("reply") };
        assert!(payload[..] == expected[..]);
        assert!(Blob::of(&payload).is_none(), "plain bytes on this side");
    });
}

/// What a hostile or broken peer can put beside a blob frame.
#[derive(Debug, Clone, Copy)]
enum Sent {
    /// A memfd sealed as a blob is, of the size announced (accepted).
    Proper,
    Unsealed,
    /// Sealed against writes but not against growing.
    HalfSealed,
    /// Sealed, but larger than announced.
    WrongSize,
    /// A pipe: not a memory file at all.
    Pipe,
    /// A socket.
    Socket,
    /// No descriptor at all.
    Nothing,
}

fn memfd(len: u64, seals: SealFlags) -> OwnedFd {
    let fd =
        rustix::fs::memfd_create("hostile", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).expect("memfd");
    rustix::fs::ftruncate(&fd, len).expect("size");
    if !seals.is_empty() {
        rustix::fs::fcntl_add_seals(&fd, seals).expect("seal");
    }
    fd
}

const ALL_SEALS: SealFlags =
    SealFlags::WRITE.union(SealFlags::GROW).union(SealFlags::SHRINK).union(SealFlags::SEAL);

/// Sends one blob frame announcing `announced` bytes with `sent` beside it.
async fn send_hostile(raw: &WriteHalf, sent: Sent, announced: u64) {
    let mut head = BytesMut::new();
    Frame::Reply { id: 5, payload: Bytes::new() }.encode_blob_head(&mut head, announced);
    let slices = [std::io::IoSlice::new(&head)];
    let fd: Option<OwnedFd> = match sent {
        Sent::Proper => Some(memfd(announced, ALL_SEALS)),
        Sent::Unsealed => Some(memfd(announced, SealFlags::empty())),
        Sent::HalfSealed => Some(memfd(announced, SealFlags::WRITE | SealFlags::SHRINK)),
        Sent::WrongSize => Some(memfd(announced + 4096, ALL_SEALS)),
        Sent::Pipe => Some(rustix::pipe::pipe().expect("pipe").0),
        Sent::Socket => Some(std::os::unix::net::UnixStream::pair().expect("pair").0.into()),
        Sent::Nothing => None,
    };
    match fd {
        Some(fd) => raw.send_with_fd(&slices, fd.as_fd()).await.expect("send"),
        None => raw.write_vectored(&slices).await.expect("send"),
    };
}

/// Open descriptors of the kinds these tests pass around: memory files,
/// pipes and sockets. (Not every descriptor: the test harness and proptest
/// open files of their own, outside the tests' serial lock, which made a
/// plain count flaky.)
fn open_fds() -> usize {
    let passed = |target: &std::path::Path| {
        let target = target.to_string_lossy();
        ["/memfd:", "pipe:", "socket:"].iter().any(|kind| target.starts_with(kind))
    };
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| passed(target))
        .count()
}

async fn outcome(sent: Sent, announced: u64) -> Result<usize, ReadError> {
    let (raw, mut reader) = raw_pair(true);
    send_hostile(&raw, sent, announced).await;
    match reader.next().await? {
        Some(Frame::Reply { payload, .. }) => Ok(payload.len()),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn every_kind_of_improper_descriptor_is_refused_by_name() {
    run(async {
        let before = open_fds();
        assert_eq!(outcome(Sent::Proper, 8192).await.expect("a proper blob"), 8192);
        let refused = |sent| async move { outcome(sent, 8192).await.expect_err("refused").to_string() };
        assert!(refused(Sent::Unsealed).await.contains("not sealed against write, grow, shrink"));
        assert!(refused(Sent::HalfSealed).await.contains("not sealed against grow"));
        assert!(refused(Sent::WrongSize)
            .await
            .contains("announced as 8192 bytes but its memory file has 12288"));
        assert!(refused(Sent::Pipe).await.contains("not a memory file"));
        assert!(refused(Sent::Socket).await.contains("not a memory file"));
        assert!(refused(Sent::Nothing).await.contains("no descriptor came with it"));
        let err = outcome(Sent::Proper, 0).await.expect_err("empty");
        assert!(matches!(err, ReadError::Blob { source: BlobError::Empty, .. }), "{err}");
        // No growth (the harness may close one of its own meanwhile).
        assert!(open_fds() <= before, "every descriptor received was closed");
        assert_eq!(held().0, 0, "no blob is still mapped");
    });
}

#[test]
fn a_reader_that_does_not_take_blobs_refuses_a_blob_frame() {
    run(async {
        let (raw, mut reader) = raw_pair(false);
        send_hostile(&raw, Sent::Proper, 8192).await;
        let err = reader.next().await.expect_err("unknown kind");
        assert!(err.to_string().contains("unknown frame kind 137"), "{err}");
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Any sequence of proper and improper blob frames: each either arrives
    /// whole or ends the connection with a typed error, and nothing leaks.
    #[test]
    fn descriptor_passing_never_panics_or_leaks(
        steps in proptest::collection::vec((0u8..7, 1u64..20_000), 1..8)
    ) {
        let _serial = serial();
        // The first runtime opens tokio's process-wide signal socket pair,
        // kept for the life of the process: not a leak of ours.
        drop(runtime());
        let before = open_fds();
        let runtime = runtime();
        runtime.block_on(async {
            let (raw, mut reader) = raw_pair(true);
            for (kind, announced) in &steps {
                let sent = [Sent::Proper, Sent::Unsealed, Sent::HalfSealed, Sent::WrongSize, Sent::Pipe,
                    Sent::Socket, Sent::Nothing][usize::from(*kind)];
                send_hostile(&raw, sent, *announced).await;
            }
            drop(raw);
            for (kind, announced) in &steps {
                match reader.next().await {
                    Ok(Some(Frame::Reply { payload, .. })) => {
                        assert_eq!(*kind, 0, "only a proper blob is accepted");
                        assert_eq!(payload.len() as u64, *announced);
                    }
                    Ok(other) => panic!("unexpected {other:?}"),
                    Err(_) => {
                        assert_ne!(*kind, 0, "a proper blob was refused");
                        break;
                    }
                }
            }
        });
        drop(runtime);
        prop_assert!(open_fds() <= before, "descriptors leaked");
    }
}

//! Shared regions without sockets: a region made by [`RegionFile`] and
//! mapped through its grants, as the daemon and its clients do. The lock
//! survives a holder that ends without letting go; a reader never keeps a
//! torn copy while a writer rewrites the region; a descriptor that is not a
//! region is refused by name.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustix::fs::{MemfdFlags, SealFlags};
use switchboard_transport::{Region, RegionError, RegionFile, REGION_HEADER};

fn mapped(file: &RegionFile, writable: bool) -> Region {
    let grant = file.grant(writable).expect("grant");
    let fd = grant.fd().try_clone_to_owned().expect("dup");
    Region::open(fd, grant.file_len()).expect("open")
}

#[test]
fn a_writer_grant_writes_and_a_reader_grant_only_reads() {
    let file = RegionFile::create(10_000).expect("create");
    let writer = mapped(&file, true);
    let reader = mapped(&file, false);
    assert!(writer.is_writable() && !reader.is_writable());
    assert_eq!((writer.len(), reader.len(), file.sequence()), (10_000, 10_000, 0));
    {
        let mut guard = writer.lock().expect("lock");
        assert!(!guard.previous_owner_died());
        assert_eq!(reader.sequence(), 1, "odd while held");
        guard[..5].copy_from_slice(b"hello");
    }
    let (sequence, bytes) = (reader.sequence(), {
        let mut copy = vec![0; 5];
        reader.read_into(&mut copy).expect("read");
        copy
    });
    assert_eq!((sequence, file.sequence(), &bytes[..]), (2, 2, &b"hello"[..]));
    assert!(matches!(reader.lock(), Err(RegionError::ReadOnly)));
    assert!(writer.try_lock().expect("try").is_some());
}

#[test]
fn a_holder_that_ends_without_letting_go_hands_the_lock_on_with_word_of_it() {
    let file = RegionFile::create(4096).expect("create");
    let region = Arc::new(mapped(&file, true));
    let holder = region.clone();
    std::thread::spawn(move || {
        let mut guard = holder.lock().expect("lock");
        guard[0] = 1;
        // The thread ends holding the lock, as a killed process would.
        std::mem::forget(guard);
    })
    .join()
    .expect("holder thread");
    let guard = region.lock_for(Duration::from_secs(5)).expect("lock").expect("handed on");
    assert!(guard.previous_owner_died());
    assert_eq!(guard[0], 1);
    drop(guard);
    let guard = region.lock().expect("lock");
    assert!(!guard.previous_owner_died(), "consistent again");
}

#[test]
fn a_reader_never_keeps_a_torn_copy() {
    let file = RegionFile::create(64 * 1024).expect("create");
    let writer = mapped(&file, true);
    let reader = mapped(&file, false);
    let done = Arc::new(AtomicBool::new(false));
    std::thread::scope(|scope| {
        let stop = done.clone();
        scope.spawn(move || {
            for round in 0..20_000u32 {
                let mut guard = writer.lock().expect("lock");
                guard.fill(round as u8);
            }
            stop.store(true, Ordering::Relaxed);
        });
        let mut copy = vec![0; reader.len()];
        let mut copies = 0;
        while !done.load(Ordering::Relaxed) || copies == 0 {
            let sequence = reader.read_into(&mut copy).expect("read");
            assert_eq!(sequence % 2, 0);
            let first = copy[0];
            assert!(copy.iter().all(|b| *b == first), "a torn copy at sequence {sequence}");
            copies += 1;
        }
    });
    assert_eq!(file.sequence(), 40_000);
}

#[test]
fn a_descriptor_that_is_not_a_region_is_refused_by_name() {
    let memfd = |seals: SealFlags, len: u64| -> OwnedFd {
        let fd = rustix::fs::memfd_create("test", MemfdFlags::ALLOW_SEALING).expect("memfd");
        rustix::fs::ftruncate(&fd, len).expect("size");
        rustix::fs::fcntl_add_seals(&fd, seals).expect("seal");
        fd
    };
    let fixed = SealFlags::GROW | SealFlags::SHRINK;
    let len = (REGION_HEADER + 4096) as u64;
    let file: OwnedFd = std::fs::File::open("/proc/self/exe").expect("a file").into();
    let cases = [
        (file, len, "not a memory file"),
        (memfd(SealFlags::empty(), len), len, "not sealed against resizing"),
        (memfd(fixed, len), len + 1, "announced as"),
        (memfd(fixed, len), len, "does not hold a region header"),
        (memfd(fixed, 100), 100, "does not hold a region header"),
    ];
    for (fd, announced, expected) in cases {
        let err = Region::open(fd, announced).err().expect("refused");
        assert!(err.to_string().contains(expected), "{err} should say {expected:?}");
    }
}

//! Named shared regions: memory the daemon owns and hands out by
//! descriptor, mapped by many processes at once. Writers change it under a
//! cross-process lock that survives its holder's death (a robust,
//! process-shared mutex: the next locker is told the owner died); readers
//! take consistent copies by the region's sequence number (a seqlock: odd
//! while a writer holds the lock, one higher each time it lets go).
//!
//! This module owns the region's memory file and its header (magic, size,
//! sequence, lock), the checks on a region descriptor that arrives, and the
//! grant that carries one through an outbox. It never decides who may map a
//! region (the daemon's policy does) and never announces a change (the
//! client does, over the bus).
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{fence, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustix::fs::{MemfdFlags, Mode, OFlags, SealFlags};
use rustix::io::Errno;
use rustix::mm::ProtFlags;

use crate::blob::{memfd_facts, Mapping};

/// Bytes before a region's data: magic, size, sequence and lock, padded to
/// a page so the data starts page-aligned.
pub const REGION_HEADER: usize = 4096;

const MAGIC: [u8; 8] = *b"SBREGN01";
const AT_MAGIC: usize = 0;
const AT_LEN: usize = 8;
const AT_SEQUENCE: usize = 64;
const AT_LOCK: usize = 128;
const _: () = assert!(AT_LOCK + std::mem::size_of::<libc::pthread_mutex_t>() <= REGION_HEADER);

/// The seals of a region: its size is fixed for good (a shrink would crash
/// every process that maps it), its bytes stay writable by writers.
const REGION_SEALS: SealFlags = SealFlags::GROW.union(SealFlags::SHRINK).union(SealFlags::SEAL);

/// How long a reader waits for a writer to finish before giving up.
const SETTLE: Duration = Duration::from_secs(1);

/// Why a region could not be made, taken, read or locked.
#[derive(Debug, thiserror::Error)]
pub enum RegionError {
    #[error("cannot create a region of {len} bytes: {source}")]
    Create { len: usize, source: std::io::Error },
    #[error("the descriptor is not a memory file (memfd) that can be sealed")]
    NotMemfd,
    #[error("the region's memory file is not sealed against resizing")]
    Resizable,
    #[error("the region was announced as {announced} bytes but its memory file has {actual}")]
    WrongSize { announced: u64, actual: u64 },
    #[error("the memory file does not hold a region header")]
    NotARegion,
    #[error("cannot map the region: {0}")]
    Map(std::io::Error),
    #[error("this region is mapped read-only: taking its lock needs region.write")]
    ReadOnly,
    #[error("the region's lock failed: {0}")]
    Lock(std::io::Error),
    #[error("a writer has held the region mid-write for over {SETTLE:?} (sequence {sequence})")]
    Unsettled { sequence: u64 },
}

/// The daemon's own hold on a region: the memory file, created and
/// initialised here, mapped writable so its header can be read.
pub struct RegionFile {
    fd: OwnedFd,
    map: Mapping,
}

impl RegionFile {
    /// A zero-filled region of `len` data bytes, its lock ready to take.
    pub fn create(len: usize) -> Result<Self, RegionError> {
        let create = |source: Errno| RegionError::Create { len, source: source.into() };
        let file_len = len.checked_add(REGION_HEADER).filter(|_| len > 0).ok_or(RegionError::Create {
            len,
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "size out of range"),
        })?;
        let fd =
            rustix::fs::memfd_create("switchboard-region", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
                .map_err(create)?;
        rustix::fs::ftruncate(&fd, file_len as u64).map_err(create)?;
        // Readers get a read-only reopening of it; owner-read only keeps
        // them (other users) from reopening it writable through /proc.
        rustix::fs::fchmod(&fd, Mode::RUSR).map_err(create)?;
        let map = Mapping::new(fd.as_fd(), file_len, ProtFlags::READ | ProtFlags::WRITE)
            .map_err(RegionError::Map)?;
        let base = map.ptr.cast::<u8>();
        // SAFETY: the mapping is fresh, writable, at least a header long and
        // shared with nobody yet; the lock is initialised once, here, at an
        // offset aligned for it (the mapping is page-aligned).
        unsafe {
            base.add(AT_MAGIC).copy_from_nonoverlapping(MAGIC.as_ptr(), MAGIC.len());
            base.add(AT_LEN).cast::<u64>().write(len as u64);
            init_robust_mutex(base.add(AT_LOCK).cast()).map_err(create)?;
        }
        rustix::fs::fcntl_add_seals(&fd, REGION_SEALS).map_err(create)?;
        Ok(Self { fd, map })
    }

    /// Its data bytes.
    pub fn len(&self) -> usize {
        self.map.len - REGION_HEADER
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many times a writer has let go of its lock, times two (odd
    /// while one holds it).
    pub fn sequence(&self) -> u64 {
        sequence_of(&self.map).load(Ordering::Acquire)
    }

    /// A grant of the region to pass to a client: its own descriptor for a
    /// writer, a read-only reopening of it for a reader (whose mapping then
    /// cannot be made writable).
    pub fn grant(&self, writable: bool) -> Result<RegionGrant, RegionError> {
        let fd = if writable {
            self.fd.try_clone().map_err(RegionError::Map)?
        } else {
            let path = format!("/proc/self/fd/{}", self.fd.as_raw_fd());
            rustix::fs::open(path.as_str(), OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
                .map_err(|err| RegionError::Map(err.into()))?
        };
        Ok(RegionGrant::new(fd, self.map.len as u64))
    }
}

/// A region's descriptor on its way through a connection: a payload (the
/// file's length, 8 bytes little-endian, which is also what travels on the
/// wire) that an outbox recognises and sends with the descriptor, and that a
/// reader makes of one that arrived.
#[derive(Clone)]
pub struct RegionGrant(Arc<Granted>);

struct Granted {
    fd: OwnedFd,
    file_len: [u8; 8],
}

impl RegionGrant {
    /// The grant of `fd`, a region memory file of `file_len` bytes.
    pub fn new(fd: OwnedFd, file_len: u64) -> Self {
        Self(Arc::new(Granted { fd, file_len: file_len.to_le_bytes() }))
    }

    /// The grant this payload is, if it is one.
    pub fn of(payload: &Bytes) -> Option<Self> {
        let grants = grants();
        if payload.len() != 8 || grants.count.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let found = grants.lock().get(&(payload.as_ptr() as usize))?.upgrade()?;
        Some(Self(found))
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.0.fd.as_fd()
    }

    /// The memory file's length, header included.
    pub fn file_len(&self) -> u64 {
        u64::from_le_bytes(self.0.file_len)
    }
}

impl AsRef<[u8]> for RegionGrant {
    fn as_ref(&self) -> &[u8] {
        &self.0.file_len
    }
}

impl From<RegionGrant> for Bytes {
    fn from(grant: RegionGrant) -> Bytes {
        let grants = grants();
        let fresh = grants.lock().insert(grant.0.file_len.as_ptr() as usize, Arc::downgrade(&grant.0));
        if fresh.is_none() {
            grants.count.fetch_add(1, Ordering::Relaxed);
        }
        Bytes::from_owner(grant)
    }
}

impl Drop for Granted {
    fn drop(&mut self) {
        let grants = grants();
        if grants.lock().remove(&(self.file_len.as_ptr() as usize)).is_some() {
            grants.count.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[derive(Default)]
struct Grants {
    map: Mutex<HashMap<usize, Weak<Granted>>>,
    count: AtomicUsize,
}

impl Grants {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<usize, Weak<Granted>>> {
        // Each update is one insert or remove: a panic cannot leave it half-done.
        self.map.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn grants() -> &'static Grants {
    static GRANTS: OnceLock<Grants> = OnceLock::new();
    GRANTS.get_or_init(Grants::default)
}

/// A region as a client maps it: read-write if its grant was a writer's,
/// read-only otherwise.
pub struct Region {
    _fd: OwnedFd,
    map: Mapping,
    writable: bool,
}

impl Region {
    /// Maps a region descriptor that arrived as `file_len` bytes, after
    /// checking it is one: a memfd sealed against resizing, of that size,
    /// with a region header.
    pub fn open(fd: OwnedFd, file_len: u64) -> Result<Self, RegionError> {
        let (seals, actual) =
            memfd_facts(fd.as_fd()).map_err(RegionError::Map)?.ok_or(RegionError::NotMemfd)?;
        if !seals.contains(SealFlags::GROW | SealFlags::SHRINK) {
            return Err(RegionError::Resizable);
        }
        if actual != file_len {
            return Err(RegionError::WrongSize { announced: file_len, actual });
        }
        let len = usize::try_from(file_len).map_err(|_| RegionError::NotARegion)?;
        if len <= REGION_HEADER {
            return Err(RegionError::NotARegion);
        }
        let access = rustix::fs::fcntl_getfl(&fd).map_err(|err| RegionError::Map(err.into()))?;
        let writable = access & OFlags::RWMODE == OFlags::RDWR;
        let prot = if writable { ProtFlags::READ | ProtFlags::WRITE } else { ProtFlags::READ };
        let map = Mapping::new(fd.as_fd(), len, prot).map_err(RegionError::Map)?;
        let base = map.ptr.cast::<u8>().cast_const();
        // SAFETY: the mapping is at least a header long; magic and size are
        // written once, before the region is ever granted, and never again.
        let (magic, data_len) =
            unsafe { (base.add(AT_MAGIC).cast::<[u8; 8]>().read(), base.add(AT_LEN).cast::<u64>().read()) };
        if magic != MAGIC || data_len != (len - REGION_HEADER) as u64 {
            return Err(RegionError::NotARegion);
        }
        Ok(Self { _fd: fd, map, writable })
    }

    /// Its data bytes.
    pub fn len(&self) -> usize {
        self.map.len - REGION_HEADER
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether this process may take its lock and write.
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// The current sequence: even when no writer holds the lock, and one
    /// higher (odd) while one does.
    pub fn sequence(&self) -> u64 {
        sequence_of(&self.map).load(Ordering::Acquire)
    }

    /// Copies the first `buf.len()` data bytes into `buf` as no writer had
    /// them half-written, and returns the sequence they are from. Waits up
    /// to a second for a writer to let go.
    pub fn read_into(&self, buf: &mut [u8]) -> Result<u64, RegionError> {
        let len = buf.len().min(self.len());
        let sequence = sequence_of(&self.map);
        let started = Instant::now();
        loop {
            let before = sequence.load(Ordering::Acquire);
            if before.is_multiple_of(2) {
                // SAFETY: `len` bytes after the header are mapped for as long
                // as `self` lives. A writer in another process may change
                // them meanwhile; the copy is then torn and thrown away (the
                // sequence moved), which is the seqlock's protocol.
                unsafe { buf.as_mut_ptr().copy_from_nonoverlapping(self.data().cast_const(), len) };
                fence(Ordering::Acquire);
                if sequence.load(Ordering::Relaxed) == before {
                    return Ok(before);
                }
            }
            if started.elapsed() > SETTLE {
                return Err(RegionError::Unsettled { sequence: before });
            }
            std::thread::yield_now();
        }
    }

    /// Takes the region's lock, waiting as long as it takes.
    pub fn lock(&self) -> Result<RegionGuard<'_>, RegionError> {
        // SAFETY: see `lock_with`.
        self.lock_with(|mutex| unsafe { libc::pthread_mutex_lock(mutex) })?.ok_or_else(unreachable_busy)
    }

    /// Takes the region's lock if nobody holds it.
    pub fn try_lock(&self) -> Result<Option<RegionGuard<'_>>, RegionError> {
        // SAFETY: see `lock_with`.
        self.lock_with(|mutex| unsafe { libc::pthread_mutex_trylock(mutex) })
    }

    /// Takes the region's lock, waiting at most `timeout`.
    pub fn lock_for(&self, timeout: Duration) -> Result<Option<RegionGuard<'_>>, RegionError> {
        // The deadline is absolute, on the realtime clock (POSIX's choice).
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let end = now.saturating_add(timeout);
        let deadline = libc::timespec {
            tv_sec: libc::time_t::try_from(end.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_nsec: libc::c_long::from(end.subsec_nanos()),
        };
        // SAFETY: see `lock_with`; `deadline` outlives the call.
        self.lock_with(|mutex| unsafe { libc::pthread_mutex_timedlock(mutex, &deadline) })
    }

    /// Runs one of the pthread lock calls on the region's mutex and makes a
    /// guard of its outcome; `None` when it was busy or timed out.
    fn lock_with(
        &self,
        call: impl FnOnce(*mut libc::pthread_mutex_t) -> libc::c_int,
    ) -> Result<Option<RegionGuard<'_>>, RegionError> {
        if !self.writable {
            return Err(RegionError::ReadOnly);
        }
        // The mutex was initialised by the daemon, robust and process-shared,
        // before the region was granted; the mapping is writable and lives as
        // long as the guard, which borrows `self`.
        let mutex = self.mutex();
        let owner_died = match call(mutex) {
            0 => false,
            libc::EOWNERDEAD => {
                // SAFETY: this thread holds the mutex (EOWNERDEAD means it
                // was handed over), as `pthread_mutex_consistent` requires.
                let marked = unsafe { libc::pthread_mutex_consistent(mutex) };
                if marked != 0 {
                    return Err(RegionError::Lock(std::io::Error::from_raw_os_error(marked)));
                }
                true
            }
            libc::EBUSY | libc::ETIMEDOUT => return Ok(None),
            code => return Err(RegionError::Lock(std::io::Error::from_raw_os_error(code))),
        };
        let sequence = sequence_of(&self.map);
        // Odd while held; a dead holder may have left it odd already.
        sequence.fetch_or(1, Ordering::Relaxed);
        fence(Ordering::Release);
        Ok(Some(RegionGuard { region: self, owner_died, _same_thread: PhantomData }))
    }

    fn mutex(&self) -> *mut libc::pthread_mutex_t {
        // SAFETY: the lock lies inside the mapped header (checked at compile time).
        unsafe { self.map.ptr.cast::<u8>().add(AT_LOCK).cast() }
    }

    fn data(&self) -> *mut u8 {
        // SAFETY: the data starts right after the header, inside the mapping.
        unsafe { self.map.ptr.cast::<u8>().add(REGION_HEADER) }
    }
}

fn unreachable_busy() -> RegionError {
    RegionError::Lock(std::io::Error::other("a blocking lock came back busy"))
}

/// The region's lock, held: its data, writable. Dropping it moves the
/// sequence on and lets go. It stays on the thread that took it (a
/// pthread mutex is unlocked by its owner).
pub struct RegionGuard<'a> {
    region: &'a Region,
    owner_died: bool,
    _same_thread: PhantomData<*const ()>,
}

impl RegionGuard<'_> {
    /// Whether the previous holder died holding the lock: what it was
    /// writing may be half-written.
    pub fn previous_owner_died(&self) -> bool {
        self.owner_died
    }
}

impl std::ops::Deref for RegionGuard<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the data is mapped while the region lives; writers change
        // it only under the lock, which this guard holds.
        unsafe { std::slice::from_raw_parts(self.region.data(), self.region.len()) }
    }
}

impl std::ops::DerefMut for RegionGuard<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as for `Deref`, and the mapping is writable (`lock_with`
        // refuses read-only regions); readers in other processes only copy
        // and discard what they copied while the sequence is odd.
        unsafe { std::slice::from_raw_parts_mut(self.region.data(), self.region.len()) }
    }
}

impl Drop for RegionGuard<'_> {
    fn drop(&mut self) {
        sequence_of(&self.region.map).fetch_add(1, Ordering::Release);
        // SAFETY: this thread holds the mutex (the guard is not `Send`).
        unsafe { libc::pthread_mutex_unlock(self.region.mutex()) };
    }
}

fn sequence_of(map: &Mapping) -> &AtomicU64 {
    // SAFETY: the sequence lies inside the mapped header, 8-byte aligned
    // (the mapping is page-aligned), and is only ever accessed atomically;
    // the reference lives no longer than the mapping it borrows.
    unsafe { &*map.ptr.cast::<u8>().add(AT_SEQUENCE).cast::<AtomicU64>() }
}

/// Initialises a robust, process-shared mutex at `mutex`.
///
/// # Safety
/// `mutex` points to writable memory, aligned for a `pthread_mutex_t`, that
/// no thread is using as a mutex yet.
unsafe fn init_robust_mutex(mutex: *mut libc::pthread_mutex_t) -> Result<(), Errno> {
    let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
    let check = |code: libc::c_int| if code == 0 { Ok(()) } else { Err(Errno::from_raw_os_error(code)) };
    // SAFETY: `attr` is initialised by the first call before any other use,
    // and destroyed after the mutex is initialised from it.
    unsafe {
        check(libc::pthread_mutexattr_init(attr.as_mut_ptr()))?;
        let outcome =
            check(libc::pthread_mutexattr_setpshared(attr.as_mut_ptr(), libc::PTHREAD_PROCESS_SHARED))
                .and_then(|()| {
                    check(libc::pthread_mutexattr_setrobust(attr.as_mut_ptr(), libc::PTHREAD_MUTEX_ROBUST))
                })
                .and_then(|()| check(libc::pthread_mutex_init(mutex, attr.as_ptr())));
        libc::pthread_mutexattr_destroy(attr.as_mut_ptr());
        outcome
    }
}

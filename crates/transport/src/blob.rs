//! Blobs: payloads that live in a sealed memory file and travel as its
//! descriptor, so a 64 MiB request is written once and never copied again.
//!
//! This module owns creating a blob (`memfd_create`, fill, seal against
//! write, grow and shrink), checking one that arrives (a memfd, sealed, of
//! the size announced), mapping it read-only, and knowing which `Bytes` are
//! whole blobs: a blob becomes a plain [`Bytes`] payload (so it goes
//! wherever a payload goes) and the writer asks [`Blob::of`] whether a
//! payload it is about to copy is one whose descriptor it can pass instead.
//! It is the one place of the transport with `unsafe` (mapping memory).
//!
//! It never reads a blob's bytes and never decides who may send one.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use bytes::Bytes;
use rustix::fs::{MemfdFlags, SealFlags};
use rustix::io::Errno;
use rustix::mm::{MapFlags, ProtFlags};

/// Payloads smaller than this travel in the frame even when they are blobs:
/// passing a descriptor and mapping it costs more than copying a page.
pub const MIN_BLOB: usize = 4096;

/// The seals that make a memory file a blob: nobody can change its bytes or
/// its size any more, so a read-only mapping of it is an immutable slice.
const BLOB_SEALS: SealFlags =
    SealFlags::WRITE.union(SealFlags::GROW).union(SealFlags::SHRINK).union(SealFlags::SEAL);

/// Why a blob could not be made or taken.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("cannot create a blob of {len} bytes: {source}")]
    Create { len: usize, source: std::io::Error },
    #[error("the descriptor is not a memory file (memfd) that can be sealed")]
    NotMemfd,
    #[error("the memory file is not sealed against {missing}: its bytes or size could still change")]
    Unsealed { missing: String },
    #[error("the blob was announced as {announced} bytes but its memory file has {actual}")]
    WrongSize { announced: u64, actual: u64 },
    #[error("an empty blob (send an empty payload instead)")]
    Empty,
    #[error("cannot map the blob: {0}")]
    Map(std::io::Error),
}

/// A blob being filled: writable memory of a fixed length, in a memory file
/// only this process holds. [`BlobMut::seal`] makes it a [`Blob`].
pub struct BlobMut {
    fd: OwnedFd,
    map: Mapping,
}

impl BlobMut {
    /// A zero-filled writable blob of `len` bytes.
    pub fn new(len: usize) -> Result<Self, BlobError> {
        let create = |source: Errno| BlobError::Create { len, source: source.into() };
        if len == 0 {
            return Err(BlobError::Empty);
        }
        let fd =
            rustix::fs::memfd_create("switchboard-blob", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
                .map_err(create)?;
        rustix::fs::ftruncate(&fd, len as u64).map_err(create)?;
        let map = Mapping::populated(fd.as_fd(), len).map_err(BlobError::Map)?;
        Ok(Self { fd, map })
    }

    /// Seals it: from now on nobody, this process included, can change it.
    pub fn seal(self) -> Result<Blob, BlobError> {
        let Self { fd, map } = self;
        let len = map.len;
        // The write seal is refused while a writable shared mapping exists.
        drop(map);
        rustix::fs::fcntl_add_seals(&fd, BLOB_SEALS)
            .map_err(|err| BlobError::Create { len, source: err.into() })?;
        Blob::map(fd, len)
    }
}

impl std::ops::Deref for BlobMut {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.map.bytes()
    }
}

impl std::ops::DerefMut for BlobMut {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: the mapping is writable and private to this value: the
        // memory file has not been shared (its descriptor never left
        // `self`), and `&mut self` makes this the only reference to it.
        unsafe { std::slice::from_raw_parts_mut(self.map.ptr.cast::<u8>(), self.map.len) }
    }
}

/// A sealed blob, mapped read-only. Cheap to clone; [`Bytes::from`] makes it
/// a payload without copying.
#[derive(Clone)]
pub struct Blob(Arc<Sealed>);

struct Sealed {
    fd: OwnedFd,
    map: Mapping,
}

impl Blob {
    /// Takes a descriptor that arrived as a blob of `announced` bytes,
    /// after checking it is one: a memfd, sealed, of exactly that size.
    pub fn receive(fd: OwnedFd, announced: u64) -> Result<Self, BlobError> {
        let (seals, actual) = memfd_facts(fd.as_fd()).map_err(BlobError::Map)?.ok_or(BlobError::NotMemfd)?;
        let needed = SealFlags::WRITE | SealFlags::GROW | SealFlags::SHRINK;
        if !seals.contains(needed) {
            return Err(BlobError::Unsealed { missing: seal_names(needed - seals) });
        }
        if actual != announced {
            return Err(BlobError::WrongSize { announced, actual });
        }
        if announced == 0 {
            return Err(BlobError::Empty);
        }
        let len = usize::try_from(announced).map_err(|_| BlobError::WrongSize { announced, actual })?;
        Self::map(fd, len)
    }

    fn map(fd: OwnedFd, len: usize) -> Result<Self, BlobError> {
        let map = Mapping::new(fd.as_fd(), len, ProtFlags::READ).map_err(BlobError::Map)?;
        let sealed = Arc::new(Sealed { fd, map });
        registry().insert(sealed.map.ptr as usize, &sealed);
        Ok(Self(sealed))
    }

    /// The blob whose whole mapping `payload` is, if it is one (a slice of a
    /// blob, or a small one, is not: it travels as bytes).
    pub fn of(payload: &Bytes) -> Option<Self> {
        let registry = registry();
        // Most processes hold no blob most of the time: no lock then.
        if payload.len() < MIN_BLOB || registry.count.load(Ordering::Relaxed) == 0 {
            return None;
        }
        registry.find(payload.as_ptr() as usize, payload.len()).map(Self)
    }

    pub fn len(&self) -> usize {
        self.0.map.len
    }

    pub fn is_empty(&self) -> bool {
        self.0.map.len == 0
    }

    /// Its memory file, to pass to another process.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.0.fd.as_fd()
    }
}

impl AsRef<[u8]> for Blob {
    fn as_ref(&self) -> &[u8] {
        self.0.map.bytes()
    }
}

impl std::ops::Deref for Blob {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.0.map.bytes()
    }
}

impl From<Blob> for Bytes {
    fn from(blob: Blob) -> Bytes {
        Bytes::from_owner(blob)
    }
}

impl std::fmt::Debug for Blob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blob").field("len", &self.len()).finish()
    }
}

impl Drop for Sealed {
    fn drop(&mut self) {
        registry().remove(self.map.ptr as usize, self.map.len);
    }
}

/// What `payload` counts toward a byte bound while it waits: a blob counts
/// [`crate::outbox::BLOB_CHARGE`] whatever its size (its bytes are in the
/// sender's memory file, not ours; what it costs us is a descriptor).
pub fn charge(payload: &Bytes) -> usize {
    if Blob::of(payload).is_some() {
        crate::outbox::BLOB_CHARGE
    } else {
        payload.len()
    }
}

/// How many blobs this process holds mapped, and their bytes (the daemon
/// bounds what it holds for others with these).
pub fn held() -> (usize, usize) {
    let registry = registry();
    (registry.count.load(Ordering::Relaxed), registry.bytes.load(Ordering::Relaxed))
}

/// A memory mapping of a whole memory file, unmapped on drop.
pub(crate) struct Mapping {
    pub(crate) ptr: *mut std::ffi::c_void,
    pub(crate) len: usize,
}

// SAFETY: a `Mapping` is plain memory with no thread affinity; a blob's
// read-only one is immutable (its file is sealed against writes), its
// writable one is reached only through `&mut BlobMut`, and a region's is
// reached only through raw pointers under the region's own protocol.
unsafe impl Send for Mapping {}
// SAFETY: see `Send`: shared references only ever read.
unsafe impl Sync for Mapping {}

impl Mapping {
    pub(crate) fn new(fd: BorrowedFd<'_>, len: usize, prot: ProtFlags) -> std::io::Result<Self> {
        // SAFETY: a fresh mapping chosen by the kernel (null hint) aliases
        // nothing of ours; `len` is the file's size, checked by the callers,
        // and the file cannot shrink below it (created at that size and
        // unshared, or sealed against shrinking), so no access faults.
        let ptr = unsafe { rustix::mm::mmap(std::ptr::null_mut(), len, prot, MapFlags::SHARED, fd, 0) }?;
        Ok(Self { ptr, len })
    }

    /// A writable mapping with every page in place: one system call
    /// allocates them all, where touching them one by one would fault once
    /// per page (at 16 MiB, most of the cost of making a blob).
    fn populated(fd: BorrowedFd<'_>, len: usize) -> std::io::Result<Self> {
        let prot = ProtFlags::READ | ProtFlags::WRITE;
        // SAFETY: as for `new`: a fresh mapping aliasing nothing, of the
        // file's own length.
        let ptr = unsafe {
            rustix::mm::mmap(std::ptr::null_mut(), len, prot, MapFlags::SHARED | MapFlags::POPULATE, fd, 0)
        }?;
        Ok(Self { ptr, len })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr..ptr+len` is mapped for as long as `self` lives, and
        // nothing writes to it while a shared reference exists (sealed, or
        // written only through `&mut BlobMut`).
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr..ptr+len` is this value's own mapping, and every
        // slice of it borrowed from `self` has ended.
        let _ = unsafe { rustix::mm::munmap(self.ptr, self.len) };
    }
}

/// Every blob mapped in this process, by the address of its mapping.
#[derive(Default)]
struct Registry {
    blobs: Mutex<HashMap<usize, Weak<Sealed>>>,
    count: AtomicUsize,
    bytes: AtomicUsize,
}

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::default)
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<usize, Weak<Sealed>>> {
        // Each update is one insert or remove: a panic cannot leave it half-done.
        self.blobs.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn insert(&self, addr: usize, sealed: &Arc<Sealed>) {
        self.lock().insert(addr, Arc::downgrade(sealed));
        self.count.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(sealed.map.len, Ordering::Relaxed);
    }

    /// Forgets the blob mapped at `addr` (its mapping is still in place, so
    /// no newer blob can have taken the address).
    fn remove(&self, addr: usize, len: usize) {
        if self.lock().remove(&addr).is_some() {
            self.count.fetch_sub(1, Ordering::Relaxed);
            self.bytes.fetch_sub(len, Ordering::Relaxed);
        }
    }

    fn find(&self, addr: usize, len: usize) -> Option<Arc<Sealed>> {
        let sealed = self.lock().get(&addr)?.upgrade()?;
        (sealed.map.len == len).then_some(sealed)
    }
}

/// The seals and size of a memory file that arrived; `None` when the
/// descriptor is not one (it has no seals to ask for).
pub(crate) fn memfd_facts(fd: BorrowedFd<'_>) -> std::io::Result<Option<(SealFlags, u64)>> {
    let seals = match rustix::fs::fcntl_get_seals(fd) {
        Ok(seals) => seals,
        Err(Errno::INVAL) => return Ok(None),
        Err(err) => return Err(err.into()),
    };
    Ok(Some((seals, rustix::fs::fstat(fd)?.st_size as u64)))
}

fn seal_names(missing: SealFlags) -> String {
    let names = [(SealFlags::WRITE, "write"), (SealFlags::GROW, "grow"), (SealFlags::SHRINK, "shrink")];
    let named: Vec<&str> =
        names.iter().filter(|(seal, _)| missing.contains(*seal)).map(|(_, n)| *n).collect();
    named.join(", ")
}

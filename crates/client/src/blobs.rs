//! Blob payloads on the client side: making one to fill, and turning a
//! large payload into one on its way out when the other end takes them.
//!
//! A [`Blob`] is a payload (`Bytes::from(blob)`) that crosses to another
//! process as a sealed memory file instead of bytes through a socket; what a
//! receiver gets is a read-only mapping of that same file. This module owns
//! when a payload becomes one by itself; the transport owns how it travels.

use bytes::Bytes;
pub use switchboard_transport::blob::{Blob, BlobError, BlobMut};
use switchboard_transport::Outbox;

use crate::Bus;

/// Payloads from this size on go as blobs by themselves when the other end
/// takes them: below it, copying into a memory file and mapping it costs
/// about as much as the socket's copies or more. Measured with
/// `switchboard-bench blobs` (docs/PERFORMANCE.md): blobs lose below 256 KiB,
/// win from 512 KiB in most runs, and won in every run from 1 MiB.
pub const AUTO_BLOB: usize = 1 << 20;

/// Whether this process passes and takes blobs at all: yes, unless
/// `SWITCHBOARD_BLOBS=off` (for a sandbox that forbids passing descriptors,
/// or to measure the socket path). Read once.
pub(crate) fn enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| !matches!(std::env::var("SWITCHBOARD_BLOBS").as_deref(), Ok("off" | "0" | "no")))
}

/// The `Hello` feature bits this process offers.
pub(crate) fn features() -> u32 {
    if enabled() {
        switchboard_proto::FEATURE_BLOBS
    } else {
        0
    }
}

impl Bus {
    /// A writable blob of `len` bytes (zero-filled). Fill it, then
    /// [`BlobMut::seal`] it and pass the [`Blob`] (or `Bytes::from(blob)`)
    /// wherever a payload goes: calls, replies, notifications, publications.
    /// It reaches receivers without a copy, and may be far larger than a
    /// frame (up to the principal's `max_blob`, 1 GiB by default).
    pub fn blob(&self, len: usize) -> Result<BlobMut, BlobError> {
        BlobMut::new(len)
    }

    /// Whether the connection to the daemon passes blobs as descriptors now.
    pub(crate) fn takes_blobs(&self) -> bool {
        self.shared.link.borrow().as_ref().is_some_and(|link| link.outbox.takes_blobs())
    }
}

/// `payload` as it should leave through `outbox`: one of [`AUTO_BLOB`] bytes
/// or more becomes a blob (one copy, into a memory file) when the peer takes
/// blobs; anything else goes as it is. A failure to make the blob (no
/// memory files here) leaves the payload as bytes.
pub(crate) fn outgoing(takes_blobs: bool, payload: Bytes) -> Bytes {
    if !takes_blobs || payload.len() < AUTO_BLOB || Blob::of(&payload).is_some() {
        return payload;
    }
    let Ok(mut blob) = BlobMut::new(payload.len()) else {
        return payload;
    };
    blob.copy_from_slice(&payload);
    blob.seal().map_or(payload, Bytes::from)
}

/// Whether `payload` leaves through `outbox` as a descriptor (so the frame
/// size does not bound it).
pub(crate) fn passes_as_blob(outbox: &Outbox, payload: &Bytes) -> bool {
    outbox.takes_blobs() && Blob::of(payload).is_some()
}

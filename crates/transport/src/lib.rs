//! Framed socket I/O, shared by the client library and the daemon.
//!
//! This crate owns the moving of frames between a socket and memory:
//! [`Endpoint`] (where to connect or listen, and the default socket path),
//! [`Stream`] (a connected Unix or TCP socket, or an in-process pipe, split
//! into halves),
//! [`FrameReader`] (socket → frames, bounded by the maximum frame size) and
//! [`Outbox`] with [`run_writer`] (frames → socket, batched into one `writev`
//! when several are waiting).
//!
//! It knows nothing of routing, services or calls, and never interprets a
//! frame beyond decoding it.
// One registration call needs `unsafe` (see `stream::register`), and mapping
// blobs and regions (`blob`, `region`); nothing else may.
#![deny(unsafe_code)]

pub mod blob;
pub mod region;

mod abstract_socket;
mod endpoint;
mod memory;
mod outbox;
mod reader;
mod stream;

pub mod tls;

pub use abstract_socket::AbstractListener;
pub use blob::{Blob, BlobError, BlobMut};
pub use endpoint::{default_endpoint, default_socket_path, Endpoint, EndpointError};
pub use outbox::{run_writer, Outbox, OutboxClosed, BLOB_CHARGE};
pub use reader::{FrameReader, ReadError};
pub use region::{Region, RegionError, RegionFile, RegionGrant, RegionGuard, REGION_HEADER};
pub use stream::{PeerCred, ReadHalf, Stream, WriteHalf};

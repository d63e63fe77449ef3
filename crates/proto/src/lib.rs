//! The Switchboard wire format, and nothing else.
//!
//! This crate owns the bytes that travel between a client and the daemon:
//! length-prefixed binary [`Frame`]s, the versioned handshake ([`Hello`] /
//! [`Welcome`]), the [`ErrorCode`] set every caller can match, and the
//! validated names ([`ServiceName`], [`MethodName`]) that appear on the wire.
//!
//! It must never do I/O or depend on a runtime: [`decode`] takes a buffer and
//! answers "need more", a frame, or a typed error; [`Frame::encode`] appends to
//! a buffer. Every decode is bounded by a maximum frame size checked *before*
//! anything is allocated, and is total: no input makes it panic (proptest
//! round trips below, and the `fuzz/` target).
//!
//! ```
//! use bytes::BytesMut;
//! use switchboard_proto::{decode, Frame, DEFAULT_MAX_FRAME};
//!
//! let mut buf = BytesMut::new();
//! Frame::Reply { id: 7, payload: bytes::Bytes::from_static(b"hi") }.encode(&mut buf);
//! let frame = decode(&mut buf, DEFAULT_MAX_FRAME).unwrap().unwrap();
//! assert!(matches!(frame, Frame::Reply { id: 7, .. }));
//! assert!(buf.is_empty());
//! ```
#![forbid(unsafe_code)]

pub mod api;
mod caller;
mod codec;
pub mod direct;
mod encode;
mod error;
pub mod fleet;
mod frame;
mod headers;
pub mod hops;
pub mod json;
mod names;
pub mod regions;
pub mod sizes;
pub mod stats;
pub mod supervision;
pub mod sys;
mod topic;
pub mod trace;
pub mod units;
mod validated;

pub use codec::{decode, frame_len, DecodeError, LEN_PREFIX};
pub use error::ErrorCode;
pub use frame::{
    Broadcast, Call, Caller, Frame, Held, Hello, Message, MethodSpec, Notify, PrincipalName, Publish,
    QueueDelivery, QueuePut, Request, Welcome, MAX_PRINCIPAL_NAME, MAX_PRODUCER_ID,
};
pub use headers::{HeaderError, HeaderIter, Headers};
pub use names::{MethodName, NameError, QueueName, ServiceName, Target};
pub use topic::{Topic, TopicError, TopicPattern};

/// The protocol version this crate speaks. A daemon refuses a client whose
/// major version differs.
pub const PROTOCOL_VERSION: u16 = 1;

/// Default maximum size of one frame (length prefix excluded): 8 MiB.
pub const DEFAULT_MAX_FRAME: u32 = 8 * 1024 * 1024;

/// `Hello.features` / `Welcome.features` bit: this end takes blobs — a
/// payload passed as a sealed memory file's descriptor beside a frame whose
/// kind byte carries [`BLOB_FLAG`] (docs/protocol.md, "Blobs"). Only over a
/// Unix socket, and only when both ends set it.
pub const FEATURE_BLOBS: u32 = 1;

/// Set in a frame's kind byte when its payload is a blob: the payload bytes
/// on the wire are then the blob's length (u64 LE), and the blob's
/// descriptor arrived with the frame's first byte.
pub const BLOB_FLAG: u8 = 0x80;

/// Set in a frame's kind byte (with [`BLOB_FLAG`]) when the descriptor that
/// came with it is a shared region granted by the daemon — writable by its
/// holders, sealed only against resizing — rather than a sealed blob. The
/// payload on the wire is the region file's length (u64 LE). Only the daemon
/// sends these, only in reply to `$sys.regions.open`.
pub const REGION_FLAG: u8 = 0x40;

/// Instance id assigned by the daemon when a service registers. `0` means
/// "any instance" wherever a target instance is optional.
pub type InstanceId = u64;

/// Session id assigned by the daemon to each connection.
pub type SessionId = u64;

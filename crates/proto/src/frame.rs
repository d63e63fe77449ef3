//! The frames of the protocol and how each is laid out.
//!
//! Every frame is `len:u32le kind:u8 body`, where `len` counts the bytes after
//! itself. Integers are little-endian; a `name` is `u8 length + ASCII`, a
//! `text` is `u16 length + UTF-8`; a `payload` is whatever remains of the
//! frame, so it needs no length of its own. `docs/protocol.md` is the
//! normative description; this file is its implementation.

use bytes::{BufMut, Bytes, BytesMut};

use crate::{ErrorCode, InstanceId, MethodName, ServiceName, SessionId};

/// Payloads larger than this travel as their own buffer (one more `iovec`)
/// instead of being copied behind the header.
pub(crate) const INLINE_PAYLOAD: usize = 512;

/// Frame kind bytes. Stable wire values.
pub(crate) mod kind {
    pub const HELLO: u8 = 1;
    pub const WELCOME: u8 = 2;
    pub const REGISTER: u8 = 3;
    pub const REGISTERED: u8 = 4;
    pub const UNREGISTER: u8 = 5;
    pub const CALL: u8 = 6;
    pub const NOTIFY: u8 = 7;
    pub const REQUEST: u8 = 8;
    pub const REPLY: u8 = 9;
    pub const ERROR: u8 = 10;
    pub const WATCH: u8 = 11;
    pub const EVENT: u8 = 12;
    pub const GOODBYE: u8 = 13;
}

/// Client → daemon, first frame of every connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub version: u16,
    /// Feature bits the client understands (none defined yet: send 0).
    pub features: u32,
    /// Free-form client name shown in `switchboard ls` (e.g. `billing-worker`).
    pub client_name: String,
}

/// Daemon → client, the answer to [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    pub version: u16,
    pub features: u32,
    pub session: SessionId,
    /// Largest frame the daemon accepts (length prefix excluded).
    pub max_frame: u32,
    /// Most calls this connection may have awaiting a reply at once.
    pub max_inflight: u32,
}

/// Client → daemon: call `service.method` and expect a reply or an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// Chosen by the caller, non-zero, unique among its calls in flight.
    pub id: u32,
    /// Relative deadline in milliseconds.
    pub timeout_ms: u32,
    /// A chosen instance, or 0 for "any" (load-balanced).
    pub instance: InstanceId,
    pub service: ServiceName,
    pub method: MethodName,
    pub payload: Bytes,
}

/// Client → daemon: one-way message to `service.method`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    pub instance: InstanceId,
    pub service: ServiceName,
    pub method: MethodName,
    pub payload: Bytes,
}

/// Who sent a request, as the daemon verified it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Caller {
    pub session: SessionId,
    /// OS user id from the socket's peer credentials (`u32::MAX` if unknown).
    pub uid: u32,
    /// OS process id from the socket's peer credentials (0 if unknown).
    pub pid: u32,
}

/// Daemon → callee: a call (id ≠ 0) or a notification (id = 0) for one of the
/// instances this connection registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Chosen by the daemon; the reply must carry it. 0 = notification.
    pub id: u32,
    /// Time left before the caller's deadline, in milliseconds.
    pub timeout_ms: u32,
    pub instance: InstanceId,
    pub caller: Caller,
    pub method: MethodName,
    pub payload: Bytes,
}

/// One unit of the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Hello(Hello),
    Welcome(Welcome),
    /// Serve `service` with `methods`; answered by `Registered` or `Error`.
    Register {
        req: u32,
        service: ServiceName,
        methods: Vec<MethodName>,
    },
    Registered {
        req: u32,
        instance: InstanceId,
    },
    /// Stop serving an instance; answered by `Reply` (empty) or `Error`.
    Unregister {
        req: u32,
        instance: InstanceId,
    },
    Call(Call),
    Notify(Notify),
    Request(Request),
    /// The successful answer to a call or a control request.
    Reply {
        id: u32,
        payload: Bytes,
    },
    /// The failed answer to a call or a control request.
    Error {
        id: u32,
        code: ErrorCode,
        message: String,
    },
    /// Subscribe to registry changes; each change arrives as an `Event`.
    Watch {
        req: u32,
    },
    Event {
        req: u32,
        payload: Bytes,
    },
    /// Daemon → client: the session is ending, and why.
    Goodbye {
        code: ErrorCode,
        message: String,
    },
}

fn put_name(dst: &mut BytesMut, name: &[u8]) {
    // Names are validated to at most 128 bytes, so the cast cannot truncate.
    dst.put_u8(name.len() as u8);
    dst.put_slice(name);
}

fn put_text(dst: &mut BytesMut, text: &str) {
    let bytes = text.as_bytes();
    let len = bytes.len().min(u16::MAX as usize);
    dst.put_u16_le(len as u16);
    dst.put_slice(&bytes[..len]);
}

impl Frame {
    /// A short name of the frame's kind, for logs and errors.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Frame::Hello(_) => "Hello",
            Frame::Welcome(_) => "Welcome",
            Frame::Register { .. } => "Register",
            Frame::Registered { .. } => "Registered",
            Frame::Unregister { .. } => "Unregister",
            Frame::Call(_) => "Call",
            Frame::Notify(_) => "Notify",
            Frame::Request(_) => "Request",
            Frame::Reply { .. } => "Reply",
            Frame::Error { .. } => "Error",
            Frame::Watch { .. } => "Watch",
            Frame::Event { .. } => "Event",
            Frame::Goodbye { .. } => "Goodbye",
        }
    }

    /// The payload a frame carries, if its kind has one.
    pub fn payload(&self) -> Option<&Bytes> {
        match self {
            Frame::Call(c) => Some(&c.payload),
            Frame::Notify(n) => Some(&n.payload),
            Frame::Request(r) => Some(&r.payload),
            Frame::Reply { payload, .. } | Frame::Event { payload, .. } => Some(payload),
            _ => None,
        }
    }

    /// Appends the whole frame to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        if let Some(payload) = self.encode_head(dst) {
            dst.put_slice(&payload);
        }
    }

    /// Appends the frame to `dst`, except a large payload, which is returned
    /// so the caller can hand it to `writev` without copying. The length
    /// prefix written already counts it.
    pub fn encode_head(&self, dst: &mut BytesMut) -> Option<Bytes> {
        let start = dst.len();
        dst.put_u32_le(0); // patched below
        self.put_fields(dst);
        let payload = self.payload();
        let payload_len = payload.map_or(0, Bytes::len);
        let detached = match payload {
            Some(p) if p.len() > INLINE_PAYLOAD => Some(p.clone()),
            Some(p) => {
                dst.put_slice(p);
                None
            }
            None => None,
        };
        let inline_len = dst.len() - start - crate::LEN_PREFIX;
        let total = inline_len + detached.as_ref().map_or(0, |_| payload_len);
        // A frame over u32::MAX cannot be built from validated parts plus a
        // payload the sender checked against max_frame; saturate defensively
        // so the receiver rejects it as too large rather than misparses.
        let total = u32::try_from(total).unwrap_or(u32::MAX);
        dst[start..start + 4].copy_from_slice(&total.to_le_bytes());
        detached
    }

    fn put_fields(&self, dst: &mut BytesMut) {
        match self {
            Frame::Hello(h) => {
                dst.put_u8(kind::HELLO);
                dst.put_u16_le(h.version);
                dst.put_u32_le(h.features);
                put_text(dst, &h.client_name);
            }
            Frame::Welcome(w) => {
                dst.put_u8(kind::WELCOME);
                dst.put_u16_le(w.version);
                dst.put_u32_le(w.features);
                dst.put_u64_le(w.session);
                dst.put_u32_le(w.max_frame);
                dst.put_u32_le(w.max_inflight);
            }
            Frame::Register {
                req,
                service,
                methods,
            } => {
                dst.put_u8(kind::REGISTER);
                dst.put_u32_le(*req);
                put_name(dst, service.as_bytes());
                let count = methods.len().min(u16::MAX as usize);
                dst.put_u16_le(count as u16);
                for method in &methods[..count] {
                    put_name(dst, method.as_bytes());
                }
            }
            Frame::Registered { req, instance } => {
                dst.put_u8(kind::REGISTERED);
                dst.put_u32_le(*req);
                dst.put_u64_le(*instance);
            }
            Frame::Unregister { req, instance } => {
                dst.put_u8(kind::UNREGISTER);
                dst.put_u32_le(*req);
                dst.put_u64_le(*instance);
            }
            Frame::Call(c) => {
                dst.put_u8(kind::CALL);
                dst.put_u32_le(c.id);
                dst.put_u32_le(c.timeout_ms);
                dst.put_u64_le(c.instance);
                put_name(dst, c.service.as_bytes());
                put_name(dst, c.method.as_bytes());
            }
            Frame::Notify(n) => {
                dst.put_u8(kind::NOTIFY);
                dst.put_u64_le(n.instance);
                put_name(dst, n.service.as_bytes());
                put_name(dst, n.method.as_bytes());
            }
            Frame::Request(r) => {
                dst.put_u8(kind::REQUEST);
                dst.put_u32_le(r.id);
                dst.put_u32_le(r.timeout_ms);
                dst.put_u64_le(r.instance);
                dst.put_u64_le(r.caller.session);
                dst.put_u32_le(r.caller.uid);
                dst.put_u32_le(r.caller.pid);
                put_name(dst, r.method.as_bytes());
            }
            Frame::Reply { id, .. } => {
                dst.put_u8(kind::REPLY);
                dst.put_u32_le(*id);
            }
            Frame::Error { id, code, message } => {
                dst.put_u8(kind::ERROR);
                dst.put_u32_le(*id);
                dst.put_u16_le(code.to_u16());
                put_text(dst, message);
            }
            Frame::Watch { req } => {
                dst.put_u8(kind::WATCH);
                dst.put_u32_le(*req);
            }
            Frame::Event { req, .. } => {
                dst.put_u8(kind::EVENT);
                dst.put_u32_le(*req);
            }
            Frame::Goodbye { code, message } => {
                dst.put_u8(kind::GOODBYE);
                dst.put_u16_le(code.to_u16());
                put_text(dst, message);
            }
        }
    }
}

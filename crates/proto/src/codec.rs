//! Bytes → frames. Total and bounded: the announced length is checked against
//! the maximum before a single byte of the body is awaited or allocated, and
//! every field read is bounds-checked, so no input can make it panic.

use bytes::{Buf, Bytes, BytesMut};

use crate::frame::{
    kind, Broadcast, Call, Caller, Frame, Held, Hello, Message, MethodSpec, Notify, PrincipalName, Publish,
    QueueDelivery, QueuePut, Request, Welcome,
};
use crate::{
    ErrorCode, HeaderError, Headers, MethodName, NameError, QueueName, ServiceName, Topic, TopicError,
    TopicPattern,
};

/// Size of the length prefix in front of every frame.
pub const LEN_PREFIX: usize = 4;

/// Why a byte stream is not a valid frame. Each names what was wrong; after
/// any of them the stream cannot be resynchronised, so the connection ends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge { len: u32, max: u32 },
    #[error("empty frame (length 0)")]
    Empty,
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("{kind} frame truncated in field `{field}`")]
    Truncated { kind: &'static str, field: &'static str },
    #[error("{kind} frame has {extra} unexpected trailing bytes")]
    TrailingBytes { kind: &'static str, extra: usize },
    #[error("{kind} frame field `{field}` is not valid UTF-8")]
    BadUtf8 { kind: &'static str, field: &'static str },
    #[error("{kind} frame field `{field}`: {why}")]
    BadName { kind: &'static str, field: &'static str, why: String },
    #[error("{kind} frame field `{field}` must be 0 or 1")]
    BadFlag { kind: &'static str, field: &'static str },
    #[error("{kind} frame: priority must be 0 to 9")]
    BadPriority { kind: &'static str },
    #[error("{kind} frame headers: {source}")]
    BadHeaders { kind: &'static str, source: HeaderError },
    #[error("Ended frame: unknown kind of held thing")]
    BadHeld,
}

/// Takes one frame off the front of `buf`.
///
/// Returns `Ok(None)` when `buf` does not yet hold a whole frame (read more
/// and call again), `Ok(Some(frame))` with the frame's bytes removed from
/// `buf`, or an error when the stream is invalid. Payloads and names share
/// the buffer's memory: nothing is copied.
pub fn decode(buf: &mut BytesMut, max_frame: u32) -> Result<Option<Frame>, DecodeError> {
    let Some(prefix) = buf.get(..LEN_PREFIX) else {
        return Ok(None);
    };
    let len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
    if len > max_frame {
        return Err(DecodeError::TooLarge { len, max: max_frame });
    }
    if len == 0 {
        return Err(DecodeError::Empty);
    }
    let total = LEN_PREFIX + len as usize;
    if buf.len() < total {
        return Ok(None);
    }
    buf.advance(LEN_PREFIX);
    let body = buf.split_to(len as usize).freeze();
    parse(body).map(Some)
}

/// How many bytes `buf` must hold before [`decode`] can return the next
/// frame, or `None` if that is not known yet (fewer than 4 bytes). Readers
/// use it to reserve at most one frame, never more than the maximum.
pub fn frame_len(buf: &[u8]) -> Option<usize> {
    let prefix = buf.get(..LEN_PREFIX)?;
    let len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
    Some(LEN_PREFIX + len as usize)
}

/// A bounds-checked cursor over one frame body.
struct Fields {
    body: Bytes,
    kind: &'static str,
}

impl Fields {
    fn need(&self, n: usize, field: &'static str) -> Result<(), DecodeError> {
        if self.body.remaining() < n {
            return Err(DecodeError::Truncated { kind: self.kind, field });
        }
        Ok(())
    }
    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        self.need(1, field)?;
        Ok(self.body.get_u8())
    }
    fn flag(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::BadFlag { kind: self.kind, field }),
        }
    }
    fn priority(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        match self.u8(field)? {
            p @ 0..=9 => Ok(p),
            _ => Err(DecodeError::BadPriority { kind: self.kind }),
        }
    }
    fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        self.need(2, field)?;
        Ok(self.body.get_u16_le())
    }
    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.need(4, field)?;
        Ok(self.body.get_u32_le())
    }
    fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        self.need(8, field)?;
        Ok(self.body.get_u64_le())
    }
    fn bytes(&mut self, n: usize, field: &'static str) -> Result<Bytes, DecodeError> {
        self.need(n, field)?;
        Ok(self.body.split_to(n))
    }
    fn name_bytes(&mut self, field: &'static str) -> Result<Bytes, DecodeError> {
        let n = self.u8(field)? as usize;
        self.bytes(n, field)
    }
    fn named<T, E: Into<NameOrTopic>>(
        &mut self,
        field: &'static str,
        parse: impl FnOnce(Bytes) -> Result<T, E>,
    ) -> Result<T, DecodeError> {
        let bytes = self.name_bytes(field)?;
        parse(bytes).map_err(|err| DecodeError::BadName { kind: self.kind, field, why: err.into().0 })
    }
    fn service(&mut self, field: &'static str) -> Result<ServiceName, DecodeError> {
        self.named(field, ServiceName::from_bytes)
    }
    fn method(&mut self, field: &'static str) -> Result<MethodName, DecodeError> {
        self.named(field, MethodName::from_bytes)
    }
    fn queue(&mut self, field: &'static str) -> Result<QueueName, DecodeError> {
        self.named(field, QueueName::from_bytes)
    }
    fn topic(&mut self, field: &'static str) -> Result<Topic, DecodeError> {
        self.named(field, Topic::from_bytes)
    }
    fn pattern(&mut self, field: &'static str) -> Result<TopicPattern, DecodeError> {
        self.named(field, TopicPattern::from_bytes)
    }
    fn text(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let n = self.u16(field)? as usize;
        let bytes = self.bytes(n, field)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::BadUtf8 { kind: self.kind, field })
    }
    fn headers(&mut self) -> Result<Headers, DecodeError> {
        let (headers, used) = Headers::parse_prefix(&self.body)
            .map_err(|source| DecodeError::BadHeaders { kind: self.kind, source })?;
        self.body.advance(used);
        Ok(headers)
    }
    fn caller(&mut self, prefix: &'static [&'static str; 4]) -> Result<Caller, DecodeError> {
        let (session, uid, pid) = (self.u64(prefix[0])?, self.u32(prefix[1])?, self.u32(prefix[2])?);
        let bytes = self.name_bytes(prefix[3])?;
        let principal = PrincipalName::from_utf8(bytes)
            .ok_or(DecodeError::BadUtf8 { kind: self.kind, field: prefix[3] })?;
        Ok(Caller { session, uid, pid, principal })
    }
    /// Everything left: the payload.
    fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.body)
    }
    /// For frames without a payload: nothing may follow the last field.
    fn end<T>(self, frame: T) -> Result<T, DecodeError> {
        match self.body.remaining() {
            0 => Ok(frame),
            extra => Err(DecodeError::TrailingBytes { kind: self.kind, extra }),
        }
    }
}

/// A name or topic error, as text for [`DecodeError::BadName`].
struct NameOrTopic(String);

impl From<NameError> for NameOrTopic {
    fn from(err: NameError) -> Self {
        Self(err.to_string())
    }
}

impl From<TopicError> for NameOrTopic {
    fn from(err: TopicError) -> Self {
        Self(err.to_string())
    }
}

const CALLER: [&str; 4] = ["caller.session", "caller.uid", "caller.pid", "caller.principal"];
const PUBLISHER: [&str; 4] = ["publisher.session", "publisher.uid", "publisher.pid", "publisher.principal"];

#[allow(clippy::too_many_lines)] // a table: one arm per frame kind
fn parse(mut body: Bytes) -> Result<Frame, DecodeError> {
    let kind_byte = body.get_u8(); // len ≥ 1 was checked by the caller
    let name = kind::name(kind_byte).ok_or(DecodeError::UnknownKind(kind_byte))?;
    let mut f = Fields { body, kind: name };
    let frame = match kind_byte {
        kind::HELLO => {
            let hello = Hello {
                version: f.u16("version")?,
                features: f.u32("features")?,
                client_name: f.text("client_name")?,
                // Absent from clients that predate it.
                credential: if f.body.has_remaining() { f.text("credential")? } else { String::new() },
            };
            f.end(Frame::Hello(hello))?
        }
        kind::WELCOME => {
            let welcome = Welcome {
                version: f.u16("version")?,
                features: f.u32("features")?,
                session: f.u64("session")?,
                max_frame: f.u32("max_frame")?,
                max_inflight: f.u32("max_inflight")?,
            };
            f.end(Frame::Welcome(welcome))?
        }
        kind::REGISTER => {
            let req = f.u32("req")?;
            let service = f.service("service")?;
            let count = f.u16("method_count")?;
            // Each method takes at least 4 bytes, so `count` is bounded by
            // the frame size before anything is reserved for it.
            f.need(count as usize * 4, "methods")?;
            let mut methods = Vec::with_capacity(count as usize);
            for _ in 0..count {
                methods.push(MethodSpec { name: f.method("methods")?, signature: f.text("signature")? });
            }
            f.end(Frame::Register { req, service, methods })?
        }
        kind::REGISTERED => {
            let frame = Frame::Registered { req: f.u32("req")?, instance: f.u64("instance")? };
            f.end(frame)?
        }
        kind::UNREGISTER => {
            let frame = Frame::Unregister { req: f.u32("req")?, instance: f.u64("instance")? };
            f.end(frame)?
        }
        kind::CALL => Frame::Call(Call {
            id: f.u32("id")?,
            timeout_ms: f.u32("timeout_ms")?,
            instance: f.u64("instance")?,
            service: f.service("service")?,
            method: f.method("method")?,
            headers: f.headers()?,
            payload: f.rest(),
        }),
        kind::NOTIFY => Frame::Notify(Notify {
            all: f.flag("all")?,
            instance: f.u64("instance")?,
            service: f.service("service")?,
            method: f.method("method")?,
            headers: f.headers()?,
            payload: f.rest(),
        }),
        kind::REQUEST => Frame::Request(Request {
            id: f.u32("id")?,
            timeout_ms: f.u32("timeout_ms")?,
            instance: f.u64("instance")?,
            caller: f.caller(&CALLER)?,
            method: f.method("method")?,
            headers: f.headers()?,
            payload: f.rest(),
        }),
        kind::REPLY => Frame::Reply { id: f.u32("id")?, payload: f.rest() },
        kind::ERROR => {
            let frame = Frame::Error {
                id: f.u32("id")?,
                code: ErrorCode::from_u16(f.u16("code")?),
                message: f.text("message")?,
            };
            f.end(frame)?
        }
        kind::WATCH => {
            let frame = Frame::Watch { req: f.u32("req")? };
            f.end(frame)?
        }
        kind::EVENT => Frame::Event { req: f.u32("req")?, payload: f.rest() },
        kind::REVOKE => {
            let frame = Frame::Revoke {
                grant: f.u64("grant")?,
                code: ErrorCode::from_u16(f.u16("code")?),
                message: f.text("message")?,
            };
            f.end(frame)?
        }
        kind::ENDED => {
            let what = Held::from_u8(f.u8("what")?).ok_or(DecodeError::BadHeld)?;
            let frame = Frame::Ended {
                what,
                id: f.u64("id")?,
                code: ErrorCode::from_u16(f.u16("code")?),
                message: f.text("message")?,
            };
            f.end(frame)?
        }
        kind::HOPS => {
            let frame = Frame::Hops { id: f.u32("id")?, headers: f.headers()? };
            f.end(frame)?
        }
        kind::GOODBYE => {
            let frame =
                Frame::Goodbye { code: ErrorCode::from_u16(f.u16("code")?), message: f.text("message")? };
            f.end(frame)?
        }
        kind::BROADCAST => Frame::Broadcast(Broadcast {
            id: f.u32("id")?,
            timeout_ms: f.u32("timeout_ms")?,
            service: f.service("service")?,
            method: f.method("method")?,
            headers: f.headers()?,
            payload: f.rest(),
        }),
        kind::BROADCAST_START => {
            let id = f.u32("id")?;
            let count = f.u16("instance_count")? as usize;
            f.need(count * 8, "instances")?;
            let mut instances = Vec::with_capacity(count);
            for _ in 0..count {
                instances.push(f.u64("instances")?);
            }
            f.end(Frame::BroadcastStart { id, instances })?
        }
        kind::BROADCAST_RESULT => Frame::BroadcastResult {
            id: f.u32("id")?,
            instance: f.u64("instance")?,
            code: match f.u16("code")? {
                0 => None,
                code => Some(ErrorCode::from_u16(code)),
            },
            payload: f.rest(),
        },
        kind::SUBSCRIBE => {
            let frame =
                Frame::Subscribe { req: f.u32("req")?, sid: f.u32("sid")?, pattern: f.pattern("pattern")? };
            f.end(frame)?
        }
        kind::UNSUBSCRIBE => {
            let frame = Frame::Unsubscribe { req: f.u32("req")?, sid: f.u32("sid")? };
            f.end(frame)?
        }
        kind::PUBLISH => Frame::Publish(Publish {
            retain: f.flag("retain")?,
            topic: f.topic("topic")?,
            headers: f.headers()?,
            payload: f.rest(),
        }),
        kind::MESSAGE => Frame::Message(Message {
            sid: f.u32("sid")?,
            retained: f.flag("retained")?,
            publisher: f.caller(&PUBLISHER)?,
            topic: f.topic("topic")?,
            headers: f.headers()?,
            payload: f.rest(),
        }),
        kind::LAGGED => {
            let frame = Frame::Lagged { sid: f.u32("sid")?, missed: f.u64("missed")? };
            f.end(frame)?
        }
        kind::QUEUE_PUT => Frame::QueuePut(QueuePut {
            req: f.u32("req")?,
            priority: f.priority("priority")?,
            ttl_ms: f.u32("ttl_ms")?,
            queue: f.queue("queue")?,
            dedup_id: f.text("dedup_id")?,
            headers: f.headers()?,
            payload: f.rest(),
        }),
        kind::QUEUE_CONSUME => {
            let frame = Frame::QueueConsume {
                req: f.u32("req")?,
                consumer: f.u32("consumer")?,
                prefetch: f.u32("prefetch")?,
                queue: f.queue("queue")?,
            };
            f.end(frame)?
        }
        kind::QUEUE_CANCEL => {
            let frame = Frame::QueueCancel { req: f.u32("req")?, consumer: f.u32("consumer")? };
            f.end(frame)?
        }
        kind::QUEUE_STOP => {
            let frame = Frame::QueueStop { req: f.u32("req")?, consumer: f.u32("consumer")? };
            f.end(frame)?
        }
        kind::QUEUE_DELIVERY => Frame::QueueDelivery(QueueDelivery {
            consumer: f.u32("consumer")?,
            tag: f.u64("tag")?,
            id: f.u64("id")?,
            attempt: f.u32("attempt")?,
            priority: f.priority("priority")?,
            headers: f.headers()?,
            payload: f.rest(),
        }),
        kind::QUEUE_ACK => {
            let frame = Frame::QueueAck { req: f.u32("req")?, tag: f.u64("tag")? };
            f.end(frame)?
        }
        kind::QUEUE_NACK => {
            let frame =
                Frame::QueueNack { req: f.u32("req")?, tag: f.u64("tag")?, delay_ms: f.u32("delay_ms")? };
            f.end(frame)?
        }
        other => return Err(DecodeError::UnknownKind(other)),
    };
    Ok(frame)
}

#[cfg(test)]
mod tests;

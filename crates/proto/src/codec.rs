//! Bytes → frames. Total and bounded: the announced length is checked against
//! the maximum before a single byte of the body is awaited or allocated, and
//! every field read is bounds-checked, so no input can make it panic.

use bytes::{Buf, Bytes, BytesMut};

use crate::frame::{kind, Call, Caller, Frame, Hello, Notify, Request, Welcome};
use crate::{ErrorCode, MethodName, NameError, ServiceName};

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
    Truncated {
        kind: &'static str,
        field: &'static str,
    },
    #[error("{kind} frame has {extra} unexpected trailing bytes")]
    TrailingBytes { kind: &'static str, extra: usize },
    #[error("{kind} frame field `{field}` is not valid UTF-8")]
    BadUtf8 {
        kind: &'static str,
        field: &'static str,
    },
    #[error("{kind} frame field `{field}`: {source}")]
    BadName {
        kind: &'static str,
        field: &'static str,
        source: NameError,
    },
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
        return Err(DecodeError::TooLarge {
            len,
            max: max_frame,
        });
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
            return Err(DecodeError::Truncated {
                kind: self.kind,
                field,
            });
        }
        Ok(())
    }
    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        self.need(1, field)?;
        Ok(self.body.get_u8())
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
    fn service(&mut self, field: &'static str) -> Result<ServiceName, DecodeError> {
        let bytes = self.name_bytes(field)?;
        ServiceName::from_bytes(bytes).map_err(|source| DecodeError::BadName {
            kind: self.kind,
            field,
            source,
        })
    }
    fn method(&mut self, field: &'static str) -> Result<MethodName, DecodeError> {
        let bytes = self.name_bytes(field)?;
        MethodName::from_bytes(bytes).map_err(|source| DecodeError::BadName {
            kind: self.kind,
            field,
            source,
        })
    }
    fn text(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let n = self.u16(field)? as usize;
        let bytes = self.bytes(n, field)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::BadUtf8 {
            kind: self.kind,
            field,
        })
    }
    /// Everything left: the payload.
    fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.body)
    }
    /// For frames without a payload: nothing may follow the last field.
    fn end(self) -> Result<(), DecodeError> {
        match self.body.remaining() {
            0 => Ok(()),
            extra => Err(DecodeError::TrailingBytes {
                kind: self.kind,
                extra,
            }),
        }
    }
}

fn kind_name(kind: u8) -> Option<&'static str> {
    Some(match kind {
        kind::HELLO => "Hello",
        kind::WELCOME => "Welcome",
        kind::REGISTER => "Register",
        kind::REGISTERED => "Registered",
        kind::UNREGISTER => "Unregister",
        kind::CALL => "Call",
        kind::NOTIFY => "Notify",
        kind::REQUEST => "Request",
        kind::REPLY => "Reply",
        kind::ERROR => "Error",
        kind::WATCH => "Watch",
        kind::EVENT => "Event",
        kind::GOODBYE => "Goodbye",
        _ => return None,
    })
}

fn parse(mut body: Bytes) -> Result<Frame, DecodeError> {
    let kind_byte = body.get_u8(); // len ≥ 1 was checked by the caller
    let name = kind_name(kind_byte).ok_or(DecodeError::UnknownKind(kind_byte))?;
    let mut f = Fields { body, kind: name };
    let frame = match kind_byte {
        kind::HELLO => {
            let hello = Hello {
                version: f.u16("version")?,
                features: f.u32("features")?,
                client_name: f.text("client_name")?,
            };
            f.end()?;
            Frame::Hello(hello)
        }
        kind::WELCOME => {
            let welcome = Welcome {
                version: f.u16("version")?,
                features: f.u32("features")?,
                session: f.u64("session")?,
                max_frame: f.u32("max_frame")?,
                max_inflight: f.u32("max_inflight")?,
            };
            f.end()?;
            Frame::Welcome(welcome)
        }
        kind::REGISTER => {
            let req = f.u32("req")?;
            let service = f.service("service")?;
            let count = f.u16("method_count")?;
            // Each method takes at least 2 bytes, so `count` is bounded by
            // the frame size before anything is reserved for it.
            f.need(count as usize * 2, "methods")?;
            let mut methods = Vec::with_capacity(count as usize);
            for _ in 0..count {
                methods.push(f.method("methods")?);
            }
            f.end()?;
            Frame::Register {
                req,
                service,
                methods,
            }
        }
        kind::REGISTERED => {
            let frame = Frame::Registered {
                req: f.u32("req")?,
                instance: f.u64("instance")?,
            };
            f.end()?;
            frame
        }
        kind::UNREGISTER => {
            let frame = Frame::Unregister {
                req: f.u32("req")?,
                instance: f.u64("instance")?,
            };
            f.end()?;
            frame
        }
        kind::CALL => Frame::Call(Call {
            id: f.u32("id")?,
            timeout_ms: f.u32("timeout_ms")?,
            instance: f.u64("instance")?,
            service: f.service("service")?,
            method: f.method("method")?,
            payload: f.rest(),
        }),
        kind::NOTIFY => Frame::Notify(Notify {
            instance: f.u64("instance")?,
            service: f.service("service")?,
            method: f.method("method")?,
            payload: f.rest(),
        }),
        kind::REQUEST => Frame::Request(Request {
            id: f.u32("id")?,
            timeout_ms: f.u32("timeout_ms")?,
            instance: f.u64("instance")?,
            caller: Caller {
                session: f.u64("caller.session")?,
                uid: f.u32("caller.uid")?,
                pid: f.u32("caller.pid")?,
            },
            method: f.method("method")?,
            payload: f.rest(),
        }),
        kind::REPLY => Frame::Reply {
            id: f.u32("id")?,
            payload: f.rest(),
        },
        kind::ERROR => {
            let frame = Frame::Error {
                id: f.u32("id")?,
                code: ErrorCode::from_u16(f.u16("code")?),
                message: f.text("message")?,
            };
            f.end()?;
            frame
        }
        kind::WATCH => {
            let frame = Frame::Watch { req: f.u32("req")? };
            f.end()?;
            frame
        }
        kind::EVENT => Frame::Event {
            req: f.u32("req")?,
            payload: f.rest(),
        },
        kind::GOODBYE => {
            let frame = Frame::Goodbye {
                code: ErrorCode::from_u16(f.u16("code")?),
                message: f.text("message")?,
            };
            f.end()?;
            frame
        }
        other => return Err(DecodeError::UnknownKind(other)),
    };
    Ok(frame)
}

#[cfg(test)]
mod tests;

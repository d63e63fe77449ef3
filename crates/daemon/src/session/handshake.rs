//! The first exchange of every connection: `Hello` in, `Welcome` out.

use switchboard_proto::{ErrorCode, Frame, Hello, SessionId, Welcome, PROTOCOL_VERSION};
use switchboard_transport::{FrameReader, Outbox};

use crate::Limits;

/// Largest frame accepted before the handshake completes; a `Hello` is tiny,
/// so an unauthenticated peer cannot make the daemon buffer megabytes.
pub const MAX_HELLO: u32 = 64 * 1024;

/// Waits for a valid `Hello`; answers and explains a refusal with `Goodbye`.
pub async fn accept(reader: &mut FrameReader, outbox: &Outbox, limits: &Limits) -> Result<Hello, String> {
    let refuse = |code: ErrorCode, message: String| {
        let _ = outbox.push(&Frame::Goodbye { code, message: message.clone() });
        message
    };
    let first = match tokio::time::timeout(limits.handshake_timeout, reader.next()).await {
        Err(_) => {
            let why = format!("no Hello within {:?}", limits.handshake_timeout);
            return Err(refuse(ErrorCode::ProtocolViolation, why));
        }
        Ok(Err(err)) => return Err(refuse(ErrorCode::ProtocolViolation, err.to_string())),
        Ok(Ok(None)) => return Err("closed before the handshake".into()),
        Ok(Ok(Some(frame))) => frame,
    };
    match first {
        Frame::Hello(hello) if hello.version == PROTOCOL_VERSION => Ok(hello),
        Frame::Hello(hello) => Err(refuse(
            ErrorCode::UnsupportedVersion,
            format!(
                "protocol version {} is not supported (this daemon speaks {PROTOCOL_VERSION})",
                hello.version
            ),
        )),
        other => Err(refuse(
            ErrorCode::ProtocolViolation,
            format!("expected Hello as the first frame, got {}", other.kind_name()),
        )),
    }
}

/// The daemon's answer, announcing the session id and limits.
pub fn welcome(session: SessionId, features: u32, limits: &Limits) -> Frame {
    Frame::Welcome(Welcome {
        version: PROTOCOL_VERSION,
        features,
        session,
        max_frame: limits.max_frame,
        max_inflight: limits.max_inflight,
    })
}

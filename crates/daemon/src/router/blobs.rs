//! Blob payloads as the router sees them: who may send how large a blob,
//! how many the daemon holds for others, what may keep one, and whether a
//! destination can take one.
//!
//! A blob arrives as an ordinary payload (the transport mapped it); this
//! module never reads its bytes. It must never let a blob larger than a
//! frame reach a connection that takes no descriptors, nor into a queue or a
//! retained value (both keep at most a frame).

use bytes::Bytes;
use switchboard_proto::{ErrorCode, Frame, SessionId};
use switchboard_transport::blob::{held, Blob};

use super::{Router, SessionEntry};

/// Room for a frame's head beside a payload that goes as bytes.
const HEAD_ROOM: usize = 64 * 1024;

impl Router {
    /// Checks a frame that carries a blob before it is handled: the
    /// sender's limit, what the daemon already holds, and the places that
    /// keep at most a frame. Refuses it to its sender (the answer goes where
    /// the frame's own answer would) and returns `None`, or lets it on.
    pub(super) fn admit_blob(&mut self, from: SessionId, frame: Frame) -> Option<Frame> {
        let Some(blob) = frame.payload().and_then(Blob::of) else {
            return Some(frame);
        };
        let Err((code, message)) = self.blob_allowed(from, &frame, blob.len()) else {
            return Some(frame);
        };
        tracing::debug!(session = from, kind = frame.kind_name(), "blob refused: {message}");
        match frame {
            Frame::Call(call) => self.refuse_call(from, call.id, code, message),
            Frame::Broadcast(b) => self.refuse_call(from, b.id, code, message),
            Frame::QueuePut(put) => self.send_error(from, put.req, code, message),
            // The callee's answer was too large: its caller is told why.
            Frame::Reply { id, .. } => self.answer(from, id, Err((code, message))),
            // One-way: the refusal goes back under id 0.
            _ => self.send_error(from, 0, code, message),
        }
        None
    }

    fn blob_allowed(&self, from: SessionId, frame: &Frame, len: usize) -> Result<(), (ErrorCode, String)> {
        let too_large = |message: String| Err((ErrorCode::PayloadTooLarge, message));
        let Some(session) = self.sessions.get(&from) else {
            return too_large("unknown connection".into());
        };
        let limit = session.rules.max_blob;
        if len as u64 > limit {
            let who = &session.caller.principal;
            return too_large(format!("a blob of {len} bytes is over {who}'s blob limit of {limit} bytes"));
        }
        let max_frame = self.limits.max_frame as usize;
        let kept = match frame {
            Frame::QueuePut(_) => Some("a queue keeps"),
            Frame::Publish(p) if p.retain => Some("a retained value is"),
            _ => None,
        };
        if let (Some(kept), true) = (kept, len > max_frame) {
            return too_large(format!(
                "{kept} at most {max_frame} bytes (the frame size); the blob has {len}"
            ));
        }
        let (count, bytes) = held();
        if count > self.limits.max_blobs_held || bytes > self.limits.max_blob_bytes_held {
            let message = format!(
                "the daemon already holds {count} blobs of {bytes} bytes for others (its limit: {} blobs, {} bytes)",
                self.limits.max_blobs_held, self.limits.max_blob_bytes_held
            );
            return Err((ErrorCode::Overloaded, message));
        }
        Ok(())
    }

    /// Whether `payload` can reach session `to`: anything but a blob can;
    /// a blob goes as a descriptor to a client that takes them, else as
    /// bytes if it fits that client's frame.
    pub(super) fn reaches(&self, to: SessionId, payload: &Bytes) -> Result<(), (ErrorCode, String)> {
        let max_frame = self.limits.max_frame;
        if fits(payload, max_frame) {
            return Ok(()); // the common case, decided without a lookup
        }
        let Some(session) = self.sessions.get(&to) else {
            return Ok(()); // gone: the send is dropped anyway
        };
        if reaches(session, payload, max_frame) {
            return Ok(());
        }
        let message = format!(
            "a blob of {} bytes cannot reach {} (client {:?}): it takes no blobs and a frame holds at most {max_frame} bytes",
            payload.len(),
            session.caller.principal,
            session.client_name
        );
        Err((ErrorCode::PayloadTooLarge, message))
    }
}

/// Whether `payload` fits a frame of `max_frame` as bytes, with room for the head.
fn fits(payload: &Bytes, max_frame: u32) -> bool {
    payload.len() + HEAD_ROOM <= max_frame as usize
}

/// [`Router::reaches`] for a session already looked up.
pub(super) fn reaches(session: &SessionEntry, payload: &Bytes, max_frame: u32) -> bool {
    fits(payload, max_frame) || session.outbox.takes_blobs() || Blob::of(payload).is_none()
}

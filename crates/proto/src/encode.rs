//! Frames → bytes.

use bytes::{BufMut, Bytes, BytesMut};

use crate::{Caller, Frame};

/// Payloads larger than this travel as their own buffer (one more `iovec`)
/// instead of being copied behind the header.
pub(crate) const INLINE_PAYLOAD: usize = 512;

fn put_name(dst: &mut BytesMut, name: &[u8]) {
    // Names and topics are validated to at most 255 bytes, principals
    // refused at the handshake past MAX_PRINCIPAL_NAME: nothing is cut.
    dst.put_u8(name.len().min(255) as u8);
    dst.put_slice(&name[..name.len().min(255)]);
}

fn put_text(dst: &mut BytesMut, text: &str) {
    let bytes = text.as_bytes();
    let len = bytes.len().min(u16::MAX as usize);
    dst.put_u16_le(len as u16);
    dst.put_slice(&bytes[..len]);
}

fn put_caller(dst: &mut BytesMut, caller: &Caller) {
    dst.put_u64_le(caller.session);
    dst.put_u32_le(caller.uid);
    dst.put_u32_le(caller.pid);
    put_name(dst, caller.principal.as_bytes());
}

impl Frame {
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
        dst.put_u8(self.kind());
        self.put_fields(dst);
        let payload = self.payload();
        let detached = match payload {
            Some(p) if p.len() > INLINE_PAYLOAD => Some(p.clone()),
            Some(p) => {
                dst.put_slice(p);
                None
            }
            None => None,
        };
        let inline_len = dst.len() - start - crate::LEN_PREFIX;
        let total = inline_len + detached.as_ref().map_or(0, Bytes::len);
        // Senders check payloads against max_frame; saturating keeps an
        // impossible frame detectable as too large rather than misparsed.
        let total = u32::try_from(total).unwrap_or(u32::MAX);
        dst[start..start + 4].copy_from_slice(&total.to_le_bytes());
        detached
    }

    /// Appends the frame with its payload replaced by a blob of `blob_len`
    /// bytes: the kind byte carries [`crate::BLOB_FLAG`] and the payload is
    /// the length. The blob's descriptor must go with the first byte.
    pub fn encode_blob_head(&self, dst: &mut BytesMut, blob_len: u64) {
        self.encode_described_head(dst, crate::BLOB_FLAG, blob_len);
    }

    /// Appends the frame with its payload replaced by a shared region's
    /// file length: the kind byte carries [`crate::BLOB_FLAG`] and
    /// [`crate::REGION_FLAG`]; the region's descriptor goes with the first byte.
    pub fn encode_region_head(&self, dst: &mut BytesMut, file_len: u64) {
        self.encode_described_head(dst, crate::BLOB_FLAG | crate::REGION_FLAG, file_len);
    }

    fn encode_described_head(&self, dst: &mut BytesMut, flags: u8, len: u64) {
        let start = dst.len();
        dst.put_u32_le(0); // patched below
        dst.put_u8(self.kind() | flags);
        self.put_fields(dst);
        dst.put_u64_le(len);
        let total = u32::try_from(dst.len() - start - crate::LEN_PREFIX).unwrap_or(u32::MAX);
        dst[start..start + 4].copy_from_slice(&total.to_le_bytes());
    }

    #[allow(clippy::too_many_lines)] // a table: one arm per frame kind
    fn put_fields(&self, dst: &mut BytesMut) {
        match self {
            Frame::Hello(h) => {
                dst.put_u16_le(h.version);
                dst.put_u32_le(h.features);
                put_text(dst, &h.client_name);
                put_text(dst, &h.credential);
            }
            Frame::Welcome(w) => {
                dst.put_u16_le(w.version);
                dst.put_u32_le(w.features);
                dst.put_u64_le(w.session);
                dst.put_u32_le(w.max_frame);
                dst.put_u32_le(w.max_inflight);
            }
            Frame::Register { req, service, methods } => {
                dst.put_u32_le(*req);
                put_name(dst, service.as_bytes());
                let count = methods.len().min(u16::MAX as usize);
                dst.put_u16_le(count as u16);
                for method in &methods[..count] {
                    put_name(dst, method.name.as_bytes());
                    put_text(dst, &method.signature);
                }
            }
            Frame::Registered { req, instance } | Frame::Unregister { req, instance } => {
                dst.put_u32_le(*req);
                dst.put_u64_le(*instance);
            }
            Frame::Call(c) => {
                dst.put_u32_le(c.id);
                dst.put_u32_le(c.timeout_ms);
                dst.put_u64_le(c.instance);
                put_name(dst, c.service.as_bytes());
                put_name(dst, c.method.as_bytes());
                c.headers.encode(dst);
            }
            Frame::Notify(n) => {
                dst.put_u8(u8::from(n.all));
                dst.put_u64_le(n.instance);
                put_name(dst, n.service.as_bytes());
                put_name(dst, n.method.as_bytes());
                n.headers.encode(dst);
            }
            Frame::Request(r) => {
                dst.put_u32_le(r.id);
                dst.put_u32_le(r.timeout_ms);
                dst.put_u64_le(r.instance);
                put_caller(dst, &r.caller);
                put_name(dst, r.method.as_bytes());
                r.headers.encode(dst);
            }
            Frame::Reply { id, .. } => dst.put_u32_le(*id),
            Frame::Error { id, code, message } => {
                dst.put_u32_le(*id);
                dst.put_u16_le(code.to_u16());
                put_text(dst, message);
            }
            Frame::Watch { req } => dst.put_u32_le(*req),
            Frame::Event { req, .. } => dst.put_u32_le(*req),
            Frame::Revoke { grant, code, message } => {
                dst.put_u64_le(*grant);
                dst.put_u16_le(code.to_u16());
                put_text(dst, message);
            }
            Frame::Goodbye { code, message } => {
                dst.put_u16_le(code.to_u16());
                put_text(dst, message);
            }
            Frame::Ended { what, id, code, message } => {
                dst.put_u8(what.to_u8());
                dst.put_u64_le(*id);
                dst.put_u16_le(code.to_u16());
                put_text(dst, message);
            }
            Frame::Hops { id, headers } => {
                dst.put_u32_le(*id);
                headers.encode(dst);
            }
            Frame::Broadcast(b) => {
                dst.put_u32_le(b.id);
                dst.put_u32_le(b.timeout_ms);
                put_name(dst, b.service.as_bytes());
                put_name(dst, b.method.as_bytes());
                b.headers.encode(dst);
            }
            Frame::BroadcastStart { id, instances } => {
                dst.put_u32_le(*id);
                let count = instances.len().min(u16::MAX as usize);
                dst.put_u16_le(count as u16);
                for instance in &instances[..count] {
                    dst.put_u64_le(*instance);
                }
            }
            Frame::BroadcastResult { id, instance, code, .. } => {
                dst.put_u32_le(*id);
                dst.put_u64_le(*instance);
                dst.put_u16_le(code.map_or(0, |c| c.to_u16()));
            }
            Frame::Subscribe { req, sid, pattern } => {
                dst.put_u32_le(*req);
                dst.put_u32_le(*sid);
                put_name(dst, pattern.as_bytes());
            }
            Frame::Unsubscribe { req, sid } => {
                dst.put_u32_le(*req);
                dst.put_u32_le(*sid);
            }
            Frame::Publish(p) => {
                dst.put_u8(u8::from(p.retain));
                put_name(dst, p.topic.as_bytes());
                p.headers.encode(dst);
            }
            Frame::Message(m) => {
                dst.put_u32_le(m.sid);
                dst.put_u8(u8::from(m.retained));
                put_caller(dst, &m.publisher);
                put_name(dst, m.topic.as_bytes());
                m.headers.encode(dst);
            }
            Frame::Lagged { sid, missed } => {
                dst.put_u32_le(*sid);
                dst.put_u64_le(*missed);
            }
            Frame::QueuePut(p) => {
                dst.put_u32_le(p.req);
                dst.put_u8(p.priority);
                dst.put_u32_le(p.ttl_ms);
                put_name(dst, p.queue.as_bytes());
                put_text(dst, &p.dedup_id);
                p.headers.encode(dst);
            }
            Frame::QueueConsume { req, consumer, prefetch, queue } => {
                dst.put_u32_le(*req);
                dst.put_u32_le(*consumer);
                dst.put_u32_le(*prefetch);
                put_name(dst, queue.as_bytes());
            }
            Frame::QueueCancel { req, consumer } | Frame::QueueStop { req, consumer } => {
                dst.put_u32_le(*req);
                dst.put_u32_le(*consumer);
            }
            Frame::QueueDelivery(d) => {
                dst.put_u32_le(d.consumer);
                dst.put_u64_le(d.tag);
                dst.put_u64_le(d.id);
                dst.put_u32_le(d.attempt);
                dst.put_u8(d.priority);
                d.headers.encode(dst);
            }
            Frame::QueueAck { req, tag } => {
                dst.put_u32_le(*req);
                dst.put_u64_le(*tag);
            }
            Frame::QueueNack { req, tag, delay_ms } => {
                dst.put_u32_le(*req);
                dst.put_u64_le(*tag);
                dst.put_u32_le(*delay_ms);
            }
        }
    }
}

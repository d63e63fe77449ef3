//! How long a frame will be (length prefix excluded) without encoding it:
//! what senders check against the maximum frame before they build one. The
//! one place these sums are made; the tests hold them to the encoder.

use crate::{Headers, MethodName, PrincipalName, QueueName, ServiceName};

const KIND: usize = 1;

/// A name on the wire: one length byte, then its bytes.
fn name(bytes: &[u8]) -> usize {
    1 + bytes.len()
}

/// A text on the wire: two length bytes, then its bytes.
fn text(text: &str) -> usize {
    2 + text.len()
}

/// A `Call` frame (id, timeout, instance, names, headers, payload).
pub fn call_len(service: &ServiceName, method: &MethodName, headers: &Headers, payload: usize) -> usize {
    KIND + 4 + 4 + 8 + name(service.as_bytes()) + name(method.as_bytes()) + headers.wire_len() + payload
}

/// The `Request` frame the daemon forwards for a call from `principal`.
pub fn request_len(
    principal: &PrincipalName,
    method: &MethodName,
    headers: &Headers,
    payload: usize,
) -> usize {
    let caller = 8 + 4 + 4 + name(principal.as_bytes());
    KIND + 4 + 4 + 8 + caller + name(method.as_bytes()) + headers.wire_len() + payload
}

/// A `QueuePut` frame.
pub fn put_len(queue: &QueueName, producer_id: &str, headers: &Headers, payload: usize) -> usize {
    KIND + 4 + 1 + 4 + name(queue.as_bytes()) + text(producer_id) + headers.wire_len() + payload
}

#[cfg(test)]
mod tests {
    use bytes::{Bytes, BytesMut};

    use super::*;
    use crate::{Call, Caller, Frame, QueuePut, Request, LEN_PREFIX};

    fn encoded_len(frame: &Frame) -> usize {
        let mut buf = BytesMut::new();
        frame.encode(&mut buf);
        buf.len() - LEN_PREFIX
    }

    #[test]
    fn the_sums_match_what_the_encoder_writes() {
        let headers = Headers::from_pairs([("trace", "abc"), ("origin", "edge-7")]).unwrap();
        let (service, method) =
            (ServiceName::parse("billing.eu").unwrap(), MethodName::parse("charge").unwrap());
        let payload = Bytes::from(vec![9u8; 300]);
        let call = Frame::Call(Call {
            id: 7,
            timeout_ms: 1000,
            instance: 3,
            service: service.clone(),
            method: method.clone(),
            headers: headers.clone(),
            payload: payload.clone(),
        });
        assert_eq!(call_len(&service, &method, &headers, payload.len()), encoded_len(&call));
        let principal = PrincipalName::new("service:billing#2");
        let request = Frame::Request(Request {
            id: 1,
            timeout_ms: 1000,
            instance: 3,
            caller: Caller { session: 4, uid: 1000, pid: 77, principal: principal.clone() },
            method: method.clone(),
            headers: headers.clone(),
            payload: payload.clone(),
        });
        assert_eq!(request_len(&principal, &method, &headers, payload.len()), encoded_len(&request));
        let queue = QueueName::parse("jobs.dlq").unwrap();
        let put = Frame::QueuePut(QueuePut {
            req: 2,
            priority: 5,
            ttl_ms: 60_000,
            queue: queue.clone(),
            dedup_id: "job-7".into(),
            headers: headers.clone(),
            payload: payload.clone(),
        });
        assert_eq!(put_len(&queue, "job-7", &headers, payload.len()), encoded_len(&put));
    }
}

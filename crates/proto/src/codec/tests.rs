use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;

use super::*;
use crate::{
    Broadcast, Call, Caller, Frame, Hello, Message, MethodSpec, Notify, Publish, QueueDelivery, QueuePut,
    Request, Welcome, DEFAULT_MAX_FRAME,
};

fn service() -> impl Strategy<Value = ServiceName> {
    "[a-z][a-z0-9_-]{0,10}(\\.[a-z][a-z0-9_-]{0,8}){0,3}"
        .prop_map(|s| ServiceName::parse(&s).expect("strategy yields valid names"))
}

fn queue() -> impl Strategy<Value = QueueName> {
    "[a-z][a-z0-9_-]{0,10}(\\.[a-z][a-z0-9_-]{0,8}){0,2}".prop_map(|s| QueueName::parse(&s).expect("valid"))
}

fn method() -> impl Strategy<Value = MethodName> {
    "[a-zA-Z_][a-zA-Z0-9_]{0,20}".prop_map(|s| MethodName::parse(&s).expect("valid"))
}

fn payload() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        proptest::collection::vec(any::<u8>(), 500..1500),
    ]
    .prop_map(Bytes::from)
}

fn headers() -> impl Strategy<Value = Headers> {
    proptest::collection::vec(("[a-zA-Z0-9_.-]{1,12}", ".{0,20}"), 0..4)
        .prop_map(|pairs| Headers::from_pairs(pairs).expect("strategy yields valid headers"))
}

fn topic() -> impl Strategy<Value = Topic> {
    "[a-zA-Z0-9_-]{1,8}(\\.[a-zA-Z0-9_-]{1,8}){0,4}".prop_map(|t| Topic::parse(&t).expect("valid"))
}

fn pattern() -> impl Strategy<Value = TopicPattern> {
    "([a-z]{1,6}|\\*)(\\.([a-z]{1,6}|\\*)){0,3}(\\.>)?".prop_map(|p| TopicPattern::parse(&p).expect("valid"))
}

fn caller() -> impl Strategy<Value = Caller> {
    (any::<(u64, u32, u32)>(), "(user|service|cert|token):[a-z0-9#]{0,20}").prop_map(
        |((session, uid, pid), name)| Caller { session, uid, pid, principal: PrincipalName::new(&name) },
    )
}

fn code() -> impl Strategy<Value = ErrorCode> {
    any::<u16>().prop_map(ErrorCode::from_u16)
}

#[allow(clippy::too_many_lines)] // a table: one strategy per frame kind
fn frame() -> impl Strategy<Value = Frame> {
    let control = prop_oneof![
        (any::<u16>(), any::<u32>(), ".{0,40}", "(|secret:[0-9a-f]{32}|token:.{0,20})").prop_map(
            |(version, features, client_name, credential)| {
                Frame::Hello(Hello { version, features, client_name, credential })
            }
        ),
        (any::<u16>(), any::<u32>(), any::<u64>(), any::<u32>(), any::<u32>()).prop_map(
            |(version, features, session, max_frame, max_inflight)| {
                Frame::Welcome(Welcome { version, features, session, max_frame, max_inflight })
            }
        ),
        (any::<u32>(), service(), proptest::collection::vec((method(), ".{0,30}"), 0..5)).prop_map(
            |(req, service, methods)| Frame::Register {
                req,
                service,
                methods: methods
                    .into_iter()
                    .map(|(name, signature)| MethodSpec { name, signature })
                    .collect(),
            }
        ),
        (any::<u32>(), any::<u64>()).prop_map(|(req, instance)| Frame::Registered { req, instance }),
        (any::<u32>(), any::<u64>()).prop_map(|(req, instance)| Frame::Unregister { req, instance }),
        (any::<u32>(), payload()).prop_map(|(id, payload)| Frame::Reply { id, payload }),
        (any::<u32>(), code(), ".{0,40}").prop_map(|(id, code, message)| Frame::Error { id, code, message }),
        any::<u32>().prop_map(|req| Frame::Watch { req }),
        (any::<u32>(), payload()).prop_map(|(req, payload)| Frame::Event { req, payload }),
        (code(), ".{0,40}").prop_map(|(code, message)| Frame::Goodbye { code, message }),
        (any::<u64>(), code(), ".{0,40}").prop_map(|(grant, code, message)| Frame::Revoke {
            grant,
            code,
            message
        }),
        (any::<u32>(), headers()).prop_map(|(id, headers)| Frame::Hops { id, headers }),
        (1u8..=4, any::<u64>(), code(), ".{0,40}").prop_map(|(what, id, code, message)| Frame::Ended {
            what: crate::Held::from_u8(what).unwrap_or(crate::Held::Watch),
            id,
            code,
            message
        }),
    ];
    let calls = prop_oneof![
        (any::<u32>(), any::<u32>(), any::<u64>(), service(), method(), headers(), payload()).prop_map(
            |(id, timeout_ms, instance, service, method, headers, payload)| {
                Frame::Call(Call { id, timeout_ms, instance, service, method, headers, payload })
            }
        ),
        (any::<bool>(), any::<u64>(), service(), method(), headers(), payload()).prop_map(
            |(all, instance, service, method, headers, payload)| {
                Frame::Notify(Notify { all, instance, service, method, headers, payload })
            }
        ),
        (any::<u32>(), any::<u32>(), any::<u64>(), caller(), method(), headers(), payload()).prop_map(
            |(id, timeout_ms, instance, caller, method, headers, payload)| {
                Frame::Request(Request { id, timeout_ms, instance, caller, method, headers, payload })
            }
        ),
        (any::<u32>(), any::<u32>(), service(), method(), headers(), payload()).prop_map(
            |(id, timeout_ms, service, method, headers, payload)| {
                Frame::Broadcast(Broadcast { id, timeout_ms, service, method, headers, payload })
            }
        ),
        (any::<u32>(), proptest::collection::vec(any::<u64>(), 0..6))
            .prop_map(|(id, instances)| Frame::BroadcastStart { id, instances }),
        (any::<u32>(), any::<u64>(), proptest::option::of(1..20u16), payload()).prop_map(
            |(id, instance, code, payload)| Frame::BroadcastResult {
                id,
                instance,
                code: code.map(ErrorCode::from_u16),
                payload,
            }
        ),
    ];
    let topics = prop_oneof![
        (any::<u32>(), any::<u32>(), pattern()).prop_map(|(req, sid, pattern)| Frame::Subscribe {
            req,
            sid,
            pattern
        }),
        (any::<u32>(), any::<u32>()).prop_map(|(req, sid)| Frame::Unsubscribe { req, sid }),
        (any::<bool>(), topic(), headers(), payload()).prop_map(|(retain, topic, headers, payload)| {
            Frame::Publish(Publish { retain, topic, headers, payload })
        }),
        (any::<u32>(), any::<bool>(), caller(), topic(), headers(), payload()).prop_map(
            |(sid, retained, publisher, topic, headers, payload)| {
                Frame::Message(Message { sid, retained, publisher, topic, headers, payload })
            }
        ),
        (any::<u32>(), any::<u64>()).prop_map(|(sid, missed)| Frame::Lagged { sid, missed }),
    ];
    let queues = prop_oneof![
        (any::<u32>(), 0..10u8, any::<u32>(), queue(), ".{0,20}", headers(), payload()).prop_map(
            |(req, priority, ttl_ms, queue, dedup_id, headers, payload)| {
                Frame::QueuePut(QueuePut { req, priority, ttl_ms, queue, dedup_id, headers, payload })
            }
        ),
        (any::<u32>(), any::<u32>(), any::<u32>(), queue()).prop_map(|(req, consumer, prefetch, queue)| {
            Frame::QueueConsume { req, consumer, prefetch, queue }
        }),
        (any::<u32>(), any::<u32>()).prop_map(|(req, consumer)| Frame::QueueCancel { req, consumer }),
        (any::<u32>(), any::<u32>()).prop_map(|(req, consumer)| Frame::QueueStop { req, consumer }),
        (any::<(u32, u64, u64, u32)>(), 0..10u8, headers(), payload()).prop_map(
            |((consumer, tag, id, attempt), priority, headers, payload)| {
                Frame::QueueDelivery(QueueDelivery { consumer, tag, id, attempt, priority, headers, payload })
            }
        ),
        (any::<u32>(), any::<u64>()).prop_map(|(req, tag)| Frame::QueueAck { req, tag }),
        (any::<u32>(), any::<u64>(), any::<u32>()).prop_map(|(req, tag, delay_ms)| Frame::QueueNack {
            req,
            tag,
            delay_ms
        }),
    ];
    prop_oneof![control, calls, topics, queues]
}

proptest! {
    #[test]
    fn every_frame_round_trips(frames in proptest::collection::vec(frame(), 1..8)) {
        let mut buf = BytesMut::new();
        for f in &frames {
            f.encode(&mut buf);
        }
        for f in &frames {
            let decoded = decode(&mut buf, DEFAULT_MAX_FRAME).expect("valid").expect("whole");
            prop_assert_eq!(&decoded, f);
        }
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn split_encoding_matches_whole(f in frame()) {
        let mut whole = BytesMut::new();
        f.encode(&mut whole);
        let mut split = BytesMut::new();
        if let Some(payload) = f.encode_head(&mut split) {
            split.put_slice(&payload);
        }
        prop_assert_eq!(whole, split);
    }

    #[test]
    fn any_prefix_asks_for_more(f in frame()) {
        let mut whole = BytesMut::new();
        f.encode(&mut whole);
        for cut in 0..whole.len() {
            let mut partial = BytesMut::from(&whole[..cut]);
            prop_assert_eq!(decode(&mut partial, DEFAULT_MAX_FRAME), Ok(None));
        }
    }

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut buf = BytesMut::from(&bytes[..]);
        // Drain until need-more or error; must terminate and never panic.
        while let Ok(Some(_)) = decode(&mut buf, 1024) {}
    }

    #[test]
    fn corrupted_frames_never_panic(f in frame(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4)) {
        let mut buf = BytesMut::new();
        f.encode(&mut buf);
        for (at, byte) in flips {
            let at = LEN_PREFIX + at % (buf.len() - LEN_PREFIX);
            buf[at] = byte;
        }
        let _ = decode(&mut buf, DEFAULT_MAX_FRAME);
    }
}

#[test]
fn oversized_length_is_refused_before_the_body_arrives() {
    let mut buf = BytesMut::new();
    buf.put_u32_le(u32::MAX); // announces 4 GiB
    assert_eq!(
        decode(&mut buf, DEFAULT_MAX_FRAME),
        Err(DecodeError::TooLarge { len: u32::MAX, max: DEFAULT_MAX_FRAME })
    );
}

#[test]
fn truncated_field_is_named() {
    let mut buf = BytesMut::new();
    buf.put_u32_le(3);
    buf.put_u8(6); // Call
    buf.put_u16_le(1); // half of `id`
    let err = decode(&mut buf, DEFAULT_MAX_FRAME).unwrap_err();
    assert_eq!(err, DecodeError::Truncated { kind: "Call", field: "id" });
    assert_eq!(err.to_string(), "Call frame truncated in field `id`");
}

#[test]
fn invalid_service_name_is_named() {
    let mut buf = BytesMut::new();
    let body: &[u8] = &[7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, b'B', b'A', b'D', 1, b'm', 0, 0];
    buf.put_u32_le(body.len() as u32);
    buf.put_slice(body);
    let err = decode(&mut buf, DEFAULT_MAX_FRAME).unwrap_err();
    assert!(matches!(err, DecodeError::BadName { kind: "Notify", field: "service", .. }), "{err}");
}

#[test]
fn unknown_kind_and_empty_and_trailing() {
    let mut buf = BytesMut::from(&[1, 0, 0, 0, 200][..]);
    assert_eq!(decode(&mut buf, 64), Err(DecodeError::UnknownKind(200)));
    let mut buf = BytesMut::from(&[0, 0, 0, 0][..]);
    assert_eq!(decode(&mut buf, 64), Err(DecodeError::Empty));
    let mut buf = BytesMut::from(&[6, 0, 0, 0, 11, 1, 0, 0, 0, 9][..]);
    assert_eq!(decode(&mut buf, 64), Err(DecodeError::TrailingBytes { kind: "Watch", extra: 1 }));
}

#[test]
fn large_payload_is_detached_not_copied() {
    let payload = Bytes::from(vec![7u8; 4096]);
    let frame = Frame::Reply { id: 1, payload: payload.clone() };
    let mut head = BytesMut::new();
    let detached = frame.encode_head(&mut head).expect("large payload is detached");
    assert_eq!(detached.as_ptr(), payload.as_ptr());
    assert_eq!(frame_len(&head), Some(head.len() + payload.len()));
}

#[test]
fn the_example_in_protocol_md_is_exact() {
    let call = Frame::Call(Call {
        id: 1,
        timeout_ms: 30_000,
        instance: 0,
        service: ServiceName::parse("demo").unwrap(),
        method: MethodName::parse("echo").unwrap(),
        headers: Headers::new(),
        payload: Bytes::from_static(&[0xc0]),
    });
    let mut buf = BytesMut::new();
    call.encode(&mut buf);
    let expected: &[u8] = &[
        0x1e, 0, 0, 0, 0x06, 1, 0, 0, 0, 0x30, 0x75, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, b'd', b'e', b'm', b'o',
        4, b'e', b'c', b'h', b'o', 0, 0, 0xc0,
    ];
    assert_eq!(&buf[..], expected);
}

#[test]
fn flags_must_be_zero_or_one() {
    let mut buf = BytesMut::new();
    let body: &[u8] = &[19, 2, 1, b'a', 0, 0];
    buf.put_u32_le(body.len() as u32);
    buf.put_slice(body);
    assert_eq!(
        decode(&mut buf, DEFAULT_MAX_FRAME),
        Err(DecodeError::BadFlag { kind: "Publish", field: "retain" })
    );
}

#[test]
fn wildcard_in_a_published_topic_is_named() {
    let mut buf = BytesMut::new();
    let body: &[u8] = &[19, 0, 3, b'a', b'.', b'*', 0, 0];
    buf.put_u32_le(body.len() as u32);
    buf.put_slice(body);
    let err = decode(&mut buf, DEFAULT_MAX_FRAME).unwrap_err();
    assert!(matches!(err, DecodeError::BadName { kind: "Publish", field: "topic", .. }), "{err}");
}

#[test]
fn priority_above_nine_is_refused() {
    let mut buf = BytesMut::new();
    let body: &[u8] = &[22, 1, 0, 0, 0, 10, 0, 0, 0, 0, 1, b'q', 0, 0, 0, 0];
    buf.put_u32_le(body.len() as u32);
    buf.put_slice(body);
    assert_eq!(decode(&mut buf, DEFAULT_MAX_FRAME), Err(DecodeError::BadPriority { kind: "QueuePut" }));
}

//! Durable queues on the router: dispatch order (priority, then first in),
//! the visibility timeout, dead-lettering. Every change is committed by the
//! real writer before it is confirmed or delivered.

use std::time::{Duration, Instant};

use bytes::Bytes;
use switchboard_proto::sys::{self, QueueDeclare, QueueOptions};
use switchboard_proto::{Frame, Headers, QueueDelivery, QueueName, QueuePut};

use super::{errors, replies, Bench};
use crate::policy::Principal;
use crate::Limits;

fn declare(bench: &mut Bench, from: u64, queue: &str, options: QueueOptions) {
    let declare = sys::encode(&QueueDeclare { queue: queue.into(), options, fleet: false });
    bench.call(from, &format!("{}.{}", sys::QUEUES_SERVICE, sys::QUEUES_DECLARE), &declare, 1000);
    bench.commit();
    assert_eq!(replies(&bench.received(from)).len(), 1, "declared");
}

fn put(bench: &mut Bench, from: u64, queue: &str, priority: u8, payload: &'static [u8]) {
    let req = bench.id();
    let put = QueuePut {
        req,
        priority,
        ttl_ms: 0,
        queue: QueueName::parse(queue).unwrap(),
        dedup_id: String::new(),
        headers: Headers::new(),
        payload: Bytes::from_static(payload),
    };
    bench.send(from, Frame::QueuePut(put));
    bench.commit();
    let frames = bench.received(from);
    assert_eq!(replies(&frames).len(), 1, "confirmed once on disk: {frames:?}");
}

fn consume(bench: &mut Bench, from: u64, queue: &str, consumer: u32) {
    let req = bench.id();
    bench.send(
        from,
        Frame::QueueConsume { req, consumer, prefetch: 10, queue: QueueName::parse(queue).unwrap() },
    );
}

fn deliveries(frames: Vec<Frame>) -> Vec<QueueDelivery> {
    frames.into_iter().filter_map(|f| if let Frame::QueueDelivery(d) = f { Some(d) } else { None }).collect()
}

#[test]
fn messages_go_out_by_priority_then_first_in_first_out() {
    let mut bench = Bench::new(Limits::default());
    let client = bench.connect(Principal::daemon(), 0);
    for (priority, payload) in [(1, &b"low"[..]), (9, b"urgent"), (5, b"a"), (5, b"b"), (5, b"c")] {
        put(&mut bench, client, "jobs", priority, payload);
    }
    consume(&mut bench, client, "jobs", 1);
    let got: Vec<Bytes> = deliveries(bench.received(client)).into_iter().map(|d| d.payload).collect();
    assert_eq!(got, ["urgent", "a", "b", "c", "low"].map(|p| Bytes::from_static(p.as_bytes())));
}

#[test]
fn an_unacknowledged_delivery_comes_back_after_the_visibility_timeout() {
    let mut bench = Bench::new(Limits::default());
    let client = bench.connect(Principal::daemon(), 0);
    declare(
        &mut bench,
        client,
        "jobs",
        QueueOptions { visibility_timeout_ms: 50, ..QueueOptions::default() },
    );
    put(&mut bench, client, "jobs", 0, b"work");
    consume(&mut bench, client, "jobs", 1);
    let first = deliveries(bench.received(client));
    assert_eq!(first.iter().map(|d| d.attempt).collect::<Vec<_>>(), [1]);
    bench.router.queue_tick(Instant::now());
    assert!(deliveries(bench.received(client)).is_empty(), "still within its timeout");
    std::thread::sleep(Duration::from_millis(80));
    bench.router.queue_tick(Instant::now());
    let again = deliveries(bench.received(client));
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].id, again[0].attempt), (first[0].id, 2));
    assert_ne!(again[0].tag, first[0].tag, "a redelivery has a new tag");
    // The old tag no longer acknowledges anything.
    let req = bench.id();
    bench.send(client, Frame::QueueAck { req, tag: first[0].tag });
    assert_eq!(errors(&bench.received(client)), [switchboard_proto::ErrorCode::StaleDelivery]);
}

#[test]
fn a_message_out_of_attempts_moves_to_the_dead_letter_queue_saying_why() {
    let mut bench = Bench::new(Limits::default());
    let client = bench.connect(Principal::daemon(), 0);
    declare(&mut bench, client, "jobs", QueueOptions { max_attempts: 1, ..QueueOptions::default() });
    put(&mut bench, client, "jobs", 0, b"poison");
    consume(&mut bench, client, "jobs", 1);
    let delivery = deliveries(bench.received(client)).remove(0);
    let req = bench.id();
    bench.send(client, Frame::QueueNack { req, tag: delivery.tag, delay_ms: 0 });
    bench.commit();
    bench.received(client);
    consume(&mut bench, client, "jobs.dlq", 2);
    let dead = deliveries(bench.received(client));
    assert_eq!(dead.len(), 1);
    assert_eq!(&dead[0].payload[..], b"poison");
    let headers: Vec<(String, String)> = dead[0].headers.iter().map(|(k, v)| (k.into(), v.into())).collect();
    assert!(headers.contains(&("x-dead-from".into(), "jobs".into())), "{headers:?}");
    assert!(headers.iter().any(|(k, _)| k == "x-dead-reason"), "{headers:?}");
    // And nothing is left in the queue it came from.
    consume(&mut bench, client, "jobs", 3);
    assert!(deliveries(bench.received(client)).is_empty());
}

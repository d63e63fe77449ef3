//! Topics: a subscriber that does not keep up gets a bounded backlog, the
//! newest messages, and a count of what it missed.

use bytes::Bytes;
use switchboard_proto::{Frame, Headers, Publish, Topic, TopicPattern};

use super::Bench;
use crate::policy::Principal;
use crate::Limits;

fn publish(bench: &mut Bench, from: u64, n: u8) {
    let payload = Bytes::from(vec![n; 100]);
    let topic = Topic::parse("news.sport").unwrap();
    bench.send(from, Frame::Publish(Publish { retain: false, topic, headers: Headers::new(), payload }));
}

#[test]
fn a_slow_subscriber_gets_a_bounded_backlog_of_the_newest_and_the_count_it_missed() {
    let limits = Limits { congested_at: 512, subscription_backlog: 4, ..Limits::default() };
    let mut bench = Bench::new(limits);
    let subscriber = bench.connect(Principal::daemon(), 0);
    let publisher = bench.connect(Principal::daemon(), 0);
    let pattern = TopicPattern::parse("news.>").unwrap();
    bench.send(subscriber, Frame::Subscribe { req: 1, sid: 7, pattern });
    bench.received(subscriber);
    for n in 0..40 {
        publish(&mut bench, publisher, n);
    }
    // It reads what reached its socket; each time, the router moves more
    // of the backlog, until none is left.
    let mut frames = bench.received(subscriber);
    let mut rounds = 0;
    while bench.router.pump(subscriber) {
        frames.extend(bench.received(subscriber));
        rounds += 1;
        assert!(rounds < 10, "the backlog never drained");
    }
    frames.extend(bench.received(subscriber));
    let delivered: Vec<u8> = frames
        .iter()
        .filter_map(|f| if let Frame::Message(m) = f { Some(m.payload[0]) } else { None })
        .collect();
    let missed: u64 = frames
        .iter()
        .filter_map(|f| if let Frame::Lagged { sid: 7, missed } = f { Some(*missed) } else { None })
        .sum();
    assert!(missed > 0, "{frames:?}");
    assert_eq!(delivered.len() as u64 + missed, 40, "every message delivered or counted");
    // In order, and the newest are the ones kept.
    assert!(delivered.windows(2).all(|w| w[0] < w[1]), "{delivered:?}");
    assert_eq!(&delivered[delivered.len() - 4..], &[36, 37, 38, 39]);
}

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

#[test]
fn each_subscriber_of_one_publication_gets_it_whole_under_its_own_id_also_when_congested() {
    let limits = Limits { congested_at: 4096, subscription_backlog: 64, ..Limits::default() };
    let mut bench = Bench::new(limits);
    let publisher = bench.connect(Principal::daemon(), 0);
    let subscribers: Vec<(u64, u32)> =
        (0..3).map(|i| (bench.connect(Principal::daemon(), 0), 100 + i)).collect();
    for (session, sid) in &subscribers {
        let pattern = TopicPattern::parse("news.*").unwrap();
        bench.send(*session, Frame::Subscribe { req: 1, sid: *sid, pattern });
        bench.received(*session);
    }
    // Enough that each outbox congests and the rest waits in backlogs.
    for n in 0..50 {
        publish(&mut bench, publisher, n);
    }
    for (session, sid) in subscribers {
        let mut frames = bench.received(session);
        while bench.router.pump(session) {
            frames.extend(bench.received(session));
        }
        frames.extend(bench.received(session));
        let messages: Vec<_> =
            frames.iter().filter_map(|f| if let Frame::Message(m) = f { Some(m) } else { None }).collect();
        assert_eq!(messages.len(), 50, "session {session}: every message, none missed");
        for (n, m) in messages.iter().enumerate() {
            assert_eq!((m.sid, m.topic.as_str(), m.publisher.session), (sid, "news.sport", publisher));
            assert_eq!(&m.payload[..], &[n as u8; 100][..], "message {n} in order");
        }
    }
}

#[test]
fn a_congested_subscriber_holds_its_publisher_back_until_it_lags_and_again_once_it_caught_up() {
    let limits = Limits { congested_at: 512, subscription_backlog: 1000, ..Limits::default() };
    let mut bench = Bench::new(limits);
    let subscriber = bench.connect(Principal::daemon(), 0);
    let publisher = bench.connect(Principal::daemon(), 0);
    bench.send(
        subscriber,
        Frame::Subscribe { req: 1, sid: 7, pattern: TopicPattern::parse("news.>").unwrap() },
    );
    bench.received(subscriber);
    let publish = |bench: &mut Bench, n: u8| {
        let topic = Topic::parse("news.sport").unwrap();
        let payload = Bytes::from(vec![n; 100]);
        let frame = Frame::Publish(Publish { retain: false, topic, headers: Headers::new(), payload });
        bench.router.handle(publisher, frame).unwrap().map(|congested| (congested.session, congested.wait))
    };
    // Sent straight to its socket while it is not congested: nothing to wait for.
    assert_eq!(publish(&mut bench, 0), None);
    let waits: Vec<_> = (1..20).map(|n| publish(&mut bench, n)).collect();
    assert_eq!(waits.last(), Some(&Some((subscriber, crate::router::Wait::Subscriber))), "{waits:?}");
    // The publisher waited past the hold: the subscriber lags, and is not waited for.
    bench.router.lag(subscriber);
    assert_eq!(publish(&mut bench, 20), None);
    // Once its backlog is gone, it is waited for again.
    bench.received(subscriber);
    while bench.router.pump(subscriber) {
        bench.received(subscriber);
    }
    bench.received(subscriber);
    let again: Vec<_> = (21..40).map(|n| publish(&mut bench, n)).collect();
    assert!(again.contains(&Some((subscriber, crate::router::Wait::Subscriber))), "{again:?}");
}

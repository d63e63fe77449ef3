//! Durable queues end to end: ordering, expiry and attempts to the
//! dead-letter queue, redelivery, limits, restarts and disk space.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod support;

use std::time::Duration;

use rustix::process::Signal;
use support::{Daemon, Guard};
use switchboard::{CallError, Consumer, Delivery, Overflow, PutOptions, QueueOptions};

async fn next(consumer: &mut Consumer) -> Delivery {
    tokio::time::timeout(Duration::from_secs(5), consumer.next()).await.expect("a delivery in time").unwrap()
}

async fn nothing(consumer: &mut Consumer, wait: Duration) {
    if let Ok(Some(d)) = tokio::time::timeout(wait, consumer.next()).await {
        panic!("unexpected delivery {d:?}");
    }
}

fn text(d: &Delivery) -> String {
    String::from_utf8(d.payload.to_vec()).unwrap()
}

fn dir_bytes(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum()
}

#[tokio::test]
async fn higher_priority_first_fifo_within_and_nothing_twice() {
    let daemon = Daemon::start();
    let bus = daemon.bus().await;
    let jobs = bus.queue("jobs").unwrap();
    for (name, priority) in [("a", 0), ("b", 5), ("c", 9), ("d", 5), ("e", 0)] {
        jobs.put_with(name, PutOptions { priority, ..Default::default() }).await.unwrap();
    }
    let mut consumer = jobs.consume(1).await.unwrap();
    let mut order = String::new();
    for _ in 0..5 {
        let d = next(&mut consumer).await;
        order += &text(&d);
        d.ack().await.unwrap();
    }
    assert_eq!(order, "cbdae");
    nothing(&mut consumer, Duration::from_millis(200)).await;
}

#[tokio::test]
async fn an_expired_message_goes_to_the_dead_letter_queue() {
    let daemon = Daemon::start();
    let bus = daemon.bus().await;
    let jobs = bus.queue("mail").unwrap();
    let ttl = PutOptions { ttl: Some(Duration::from_millis(100)), ..Default::default() };
    let id = jobs.put_with("too late", ttl).await.unwrap();
    jobs.put("in time").await.unwrap();
    let mut dead = bus.queue("mail.dlq").unwrap().consume(4).await.unwrap();
    // Nobody consumes `mail`: the expiry sweep moves it on its own.
    let d = next(&mut dead).await;
    assert_eq!(text(&d), "too late");
    assert_eq!(d.headers.get("x-dead-reason"), Some("expired"));
    assert_eq!(d.headers.get("x-dead-from"), Some("mail"));
    assert_ne!(d.id, id, "the dead letter is a new message");
    let mut live = jobs.consume(4).await.unwrap();
    assert_eq!(text(&next(&mut live).await), "in time");
}

#[tokio::test]
async fn after_max_attempts_a_message_is_dead_lettered_with_its_count() {
    let daemon = Daemon::start();
    let bus = daemon.bus().await;
    let jobs = bus.queue("flaky").unwrap();
    jobs.declare(QueueOptions { max_attempts: 3, ..Default::default() }).await.unwrap();
    jobs.put("poison").await.unwrap();
    let mut consumer = jobs.consume(1).await.unwrap();
    for attempt in 1..=3 {
        let d = next(&mut consumer).await;
        assert_eq!(d.attempt, attempt);
        d.nack(Duration::ZERO).await.unwrap();
    }
    nothing(&mut consumer, Duration::from_millis(200)).await;
    let mut dead = bus.queue("flaky.dlq").unwrap().consume(1).await.unwrap();
    let d = next(&mut dead).await;
    assert_eq!(d.headers.get("x-dead-reason"), Some("max_attempts"));
    assert_eq!(d.headers.get("x-dead-attempts"), Some("3"));
    let info = bus.queues().await.unwrap();
    let flaky = info.iter().find(|q| q.queue == "flaky").unwrap();
    assert_eq!((flaky.depth, flaky.in_flight, flaky.dead_lettered_total), (0, 0, 1));
}

#[tokio::test]
async fn a_consumer_that_dies_without_acking_gives_the_message_back() {
    let daemon = Daemon::start();
    let bus = daemon.bus().await;
    let jobs = bus.queue("work").unwrap();
    jobs.put("job-1").await.unwrap();
    // A consumer process takes it without acking, and is killed.
    let mut child = daemon
        .cli(&["queue", "get", "work", "--no-ack", "--wait", "30s", "--count", "2"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line)
        .unwrap();
    assert!(line.contains("job-1"), "{line}");
    let child = Guard(child);
    support::signal_pid(child.0.id(), Signal::KILL);
    let mut consumer = jobs.consume(1).await.unwrap();
    let d = next(&mut consumer).await;
    assert_eq!((text(&d).as_str(), d.attempt), ("job-1", 2));
    d.ack().await.unwrap();
}

#[tokio::test]
async fn a_stopped_consumer_gets_nothing_more_but_keeps_what_it_holds() {
    let daemon = Daemon::start();
    let bus = daemon.bus().await;
    let jobs = bus.queue("drain").unwrap();
    for name in ["a", "b"] {
        jobs.put(name).await.unwrap();
    }
    let mut leaving = jobs.consume(10).await.unwrap();
    let (a, b) = (next(&mut leaving).await, next(&mut leaving).await);
    leaving.stop().await.unwrap();
    // New work goes to someone else, not to the consumer that is leaving,
    // even after it acks (which would otherwise give it credit again).
    a.ack().await.unwrap();
    jobs.put("c").await.unwrap();
    let mut staying = jobs.consume(10).await.unwrap();
    assert_eq!(text(&next(&mut staying).await), "c");
    nothing(&mut leaving, Duration::from_millis(200)).await;
    // What it held and did not ack returns once it is gone.
    assert_eq!(text(&b), "b");
    drop(b);
    drop(leaving);
    let again = next(&mut staying).await;
    assert_eq!((text(&again), again.attempt), ("b".to_owned(), 2));
    nothing(&mut staying, Duration::from_millis(200)).await;
}

#[tokio::test]
async fn an_unacked_delivery_returns_after_the_visibility_timeout() {
    let daemon = Daemon::start();
    let bus = daemon.bus().await;
    let jobs = bus.queue("slow").unwrap();
    jobs.declare(QueueOptions { visibility_timeout_ms: 300, ..Default::default() }).await.unwrap();
    jobs.put("job").await.unwrap();
    let mut first = jobs.consume(1).await.unwrap();
    let held = next(&mut first).await;
    let other = daemon.bus().await;
    let mut second = other.queue("slow").unwrap().consume(1).await.unwrap();
    let again = next(&mut second).await;
    assert_eq!((again.id, again.attempt), (held.id, 2));
    // The first holder's ack is too late, and says so.
    assert!(matches!(held.ack().await, Err(CallError::StaleDelivery(_))));
    again.ack().await.unwrap();
}

#[tokio::test]
async fn a_full_queue_rejects_or_drops_the_oldest() {
    let daemon = Daemon::start();
    let bus = daemon.bus().await;
    let strict = bus.queue("strict").unwrap();
    strict.declare(QueueOptions { max_messages: 2, ..Default::default() }).await.unwrap();
    strict.put("1").await.unwrap();
    strict.put("2").await.unwrap();
    let err = strict.put("3").await.unwrap_err();
    assert!(matches!(&err, CallError::QueueFull(m) if m.contains("strict")), "{err:?}");

    let lossy = bus.queue("lossy").unwrap();
    lossy
        .declare(QueueOptions { max_messages: 2, overflow: Overflow::DropOldest, ..Default::default() })
        .await
        .unwrap();
    for n in ["1", "2", "3"] {
        lossy.put(n).await.unwrap();
    }
    let peeked: Vec<String> =
        lossy.peek(10).await.unwrap().into_iter().map(|m| String::from_utf8(m.payload).unwrap()).collect();
    assert_eq!(peeked, vec!["2", "3"]);
    let info = bus.queues().await.unwrap();
    assert_eq!(info.iter().find(|q| q.queue == "lossy").unwrap().dropped_total, 1);
}

#[tokio::test]
async fn duplicate_puts_with_the_same_id_are_stored_once() {
    let daemon = Daemon::start();
    let bus = daemon.bus().await;
    let jobs = bus.queue("orders").unwrap();
    let with_id = || PutOptions { id: Some("order-42".into()), ..Default::default() };
    let first = jobs.put_with("charge", with_id()).await.unwrap();
    let retry = jobs.put_with("charge", with_id()).await.unwrap();
    assert_eq!(first, retry);
    let mut consumer = jobs.consume(4).await.unwrap();
    next(&mut consumer).await.ack().await.unwrap();
    // Even after it was consumed, the window still suppresses the retry.
    assert_eq!(jobs.put_with("charge", with_id()).await.unwrap(), first);
    nothing(&mut consumer, Duration::from_millis(200)).await;
}

#[tokio::test]
async fn unacked_messages_survive_a_restart_and_acked_ones_do_not_return() {
    let mut daemon = Daemon::start();
    let bus = daemon.bus().await;
    let jobs = bus.queue("durable").unwrap();
    jobs.declare(QueueOptions { max_attempts: 7, ..Default::default() }).await.unwrap();
    for n in 0..10 {
        jobs.put(format!("m{n}")).await.unwrap();
    }
    let mut consumer = jobs.consume(10).await.unwrap();
    for _ in 0..4 {
        next(&mut consumer).await.ack().await.unwrap();
    }
    drop(consumer);
    daemon.signal(Signal::KILL);
    daemon.wait_exit(Duration::from_secs(5)).unwrap();
    daemon.restart();
    let bus = daemon.bus().await;
    let info = bus.queues().await.unwrap();
    let durable = info.iter().find(|q| q.queue == "durable").unwrap();
    assert_eq!(durable.depth, 6);
    assert_eq!(durable.options.max_attempts, 7, "the declaration survived");
    let mut consumer = bus.queue("durable").unwrap().consume(10).await.unwrap();
    let mut left: Vec<String> = Vec::new();
    for _ in 0..6 {
        let d = next(&mut consumer).await;
        left.push(text(&d));
        d.ack().await.unwrap();
    }
    left.sort();
    assert_eq!(left, vec!["m4", "m5", "m6", "m7", "m8", "m9"]);
}

#[tokio::test]
async fn disk_space_is_reclaimed_after_a_large_put_ack_cycle() {
    let daemon = Daemon::start_with(&["--queue-segment-bytes", "1048576"]);
    let bus = daemon.bus().await;
    let jobs = bus.queue("bulk").unwrap();
    let keeper = jobs.put("kept for the whole cycle").await.unwrap();
    let mut consumer = jobs.consume(64).await.unwrap();
    let first = next(&mut consumer).await;
    assert_eq!(first.id, keeper);
    let payload = bytes::Bytes::from(vec![7u8; 16 * 1024]);
    // 2,000 × 16 KiB = 32 MiB through a log that rolls every 1 MiB.
    for chunk in 0..20 {
        let puts = jobs.put_batch((0..100).map(|_| payload.clone())).await;
        assert!(puts.iter().all(Result::is_ok), "chunk {chunk}: {:?}", puts.iter().find(|r| r.is_err()));
        for _ in 0..100 {
            next(&mut consumer).await.ack().await.unwrap();
        }
    }
    let queues_dir = daemon.dir.path().join("data/queues");
    let bytes = dir_bytes(&queues_dir);
    println!("queue log after 32 MiB put and acked: {bytes} bytes");
    assert!(bytes < 4 * 1024 * 1024, "{bytes} bytes kept on disk");
    // The one unacked message is still there.
    drop(first);
    drop(consumer);
    let mut again = jobs.consume(1).await.unwrap();
    assert_eq!(next(&mut again).await.id, keeper);
}

#[test]
fn the_cli_manages_queues() {
    let daemon = Daemon::start_with(&["--no-auto-create-queues"]);
    let out = daemon.cli(&["queue", "put", "undeclared", "1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such queue"));
    let ok = |args: &[&str]| {
        let out = daemon.cli(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    ok(&["queue", "declare", "tasks", "--max-attempts", "2", "--visibility-timeout", "5s"]);
    ok(&["queue", "put", "tasks", r#"{"n":1}"#, "--priority", "3", "-H", "origin=cli"]);
    ok(&["queue", "put", "tasks", r#"{"n":2}"#, "--priority", "8"]);
    let peek = ok(&["queue", "peek", "tasks"]);
    assert!(peek.find(r#"{"n":2}"#) < peek.find(r#"{"n":1}"#), "{peek}");
    let ls = ok(&["queue", "ls"]);
    assert!(
        ls.contains("tasks") && ls.lines().nth(1).unwrap().split_whitespace().nth(1) == Some("2"),
        "{ls}"
    );
    let got = ok(&["queue", "get", "tasks"]);
    assert!(got.contains(r#""payload":{"n":2}"#), "{got}");
    assert_eq!(ok(&["queue", "purge", "tasks"]).trim(), "1");
    let out = daemon.cli(&["queue", "put", "tasks", "1", "--priority", "12"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

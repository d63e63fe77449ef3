//! Regression tests for the durable-queue trust defects (issue 12, points
//! 1, 2 and 4): what the store forgets on compaction, what a retried put is
//! told, and what a segment head may carry. Each runs the real daemon.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod support;

use std::time::Duration;

use rustix::process::Signal;
use support::Daemon;
use switchboard::{Bus, CallError, PutOptions, QueueOptions};

async fn depth(bus: &Bus, queue: &str) -> u64 {
    let infos = bus.queues().await.unwrap();
    infos.iter().find(|q| q.queue == queue).map_or(0, |q| q.depth + q.in_flight)
}

/// Takes `count` messages off `queue`, acking each; returns their payloads.
async fn take(bus: &Bus, queue: &str, count: usize) -> Vec<Vec<u8>> {
    let mut consumer = bus.queue(queue).unwrap().consume(1).await.unwrap();
    let mut got = Vec::new();
    while got.len() < count {
        let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("a delivery within 10 s")
            .expect("bus open");
        got.push(delivery.payload.to_vec());
        delivery.ack().await.unwrap();
    }
    got
}

/// Defect 1: segments that held no live put were deleted together with the
/// acks they carried for puts in *older* segments, so those puts came back
/// on restart (`jobs` showed depth 64 instead of 34). Failed before the fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_messages_stay_acked_after_compaction_and_restart() {
    let mut daemon = Daemon::start_with(&["--queue-segment-bytes", "65536"]);
    let bus = daemon.bus().await;
    let jobs = bus.queue("jobs").unwrap();
    for n in 0..64u32 {
        let mut payload = vec![0u8; 1024];
        payload[..4].copy_from_slice(&n.to_le_bytes());
        jobs.put(payload).await.unwrap();
    }
    take(&bus, "jobs", 30).await;
    // Churn on another queue so segments roll and old ones are reclaimed.
    let other = bus.queue("other").unwrap();
    for _ in 0..400 {
        other.put(vec![7u8; 1024]).await.unwrap();
        take(&bus, "other", 1).await;
    }
    assert_eq!(depth(&bus, "jobs").await, 34);
    drop(bus);
    daemon.signal(Signal::KILL);
    daemon.wait_exit(Duration::from_secs(5)).expect("killed");
    daemon.restart();
    let bus = daemon.bus().await;
    assert_eq!(depth(&bus, "jobs").await, 34, "acked messages came back after compaction");
    assert_eq!(depth(&bus, "other").await, 0);
    // And the 34 that remain are exactly the ones never taken.
    let rest = take(&bus, "jobs", 34).await;
    let mut numbers: Vec<u32> = rest.iter().map(|p| u32::from_le_bytes([p[0], p[1], p[2], p[3]])).collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (30..64).collect::<Vec<u32>>());
}

/// Defect 4: a producer id of any length (up to 64 KiB) was kept in every
/// segment head for the dedup window, so heads outgrew the segment size and
/// the store rolled on every append. Ids are now at most 256 bytes, refused
/// with a typed error above that; failed before the fix (the put was taken).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_producer_ids_are_refused_and_heads_never_roll_the_store() {
    let mut daemon = Daemon::start_with(&["--queue-segment-bytes", "65536"]);
    let bus = daemon.bus().await;
    let queue = bus.queue("ids").unwrap();
    queue.declare(QueueOptions { dedup_window_ms: 3_600_000, ..Default::default() }).await.unwrap();
    let long = PutOptions { id: Some("x".repeat(257)), ..Default::default() };
    match queue.put_with(&b"a"[..], long).await {
        Err(CallError::BadRequest(message)) => assert!(message.contains("256"), "{message}"),
        other => panic!("a 257-byte producer id must be refused, got {other:?}"),
    }
    // The largest allowed ids, many of them within the window: the head
    // (every id still in its window) grows past the segment size, and the
    // store must still roll only as data arrives, not on every append.
    for n in 0..400 {
        let id = format!("{n:0>256}");
        let options = PutOptions { id: Some(id), ..Default::default() };
        queue.put_with(vec![1u8; 16], options).await.unwrap();
        take(&bus, "ids", 1).await;
    }
    let data = daemon.dir.path().join("data").join("queues");
    let segments = std::fs::read_dir(&data).unwrap().count();
    assert!(segments <= 8, "{segments} segment files for 400 small puts: heads are rolling the store");
    drop(bus);
    daemon.signal(Signal::KILL);
    daemon.wait_exit(Duration::from_secs(5)).expect("killed");
    daemon.restart();
    let bus = daemon.bus().await;
    assert_eq!(depth(&bus, "ids").await, 0);
    // Every id is still remembered: a retry is a duplicate, not a new message.
    let retry = PutOptions { id: Some(format!("{:0>256}", 7)), ..Default::default() };
    bus.queue("ids").unwrap().put_with(vec![1u8; 16], retry).await.unwrap();
    assert_eq!(depth(&bus, "ids").await, 0, "a retried id within its window was stored again");
}

/// Defect 5: anyone allowed `queue.put jobs` could re-declare `jobs` with
/// `drop-oldest` and `max-messages 1` (a purge by another name), and first
/// use created queues without limit. Declaring needs `queue.declare`;
/// creation stops at `--max-queues` with `overloaded`; an empty queue can be
/// deleted, and stays deleted across `kill -9`. Failed before the fix (the
/// producer's declare was accepted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producers_cannot_redeclare_and_queues_are_bounded_and_deletable() {
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("daemon.toml");
    let token = "producer-token-0123456789";
    std::fs::write(
        &config,
        format!(
            "[security]\ntokens = {{ producer = \"{token}\" }}\n\
             [[policy]]\nprincipal = \"token:producer\"\nallow = [\"queue.put *\", \"queue.get *\"]\n"
        ),
    )
    .unwrap();
    let mut daemon = Daemon::start_with(&["--config", config.to_str().unwrap(), "--max-queues", "3"]);
    let owner = daemon.bus().await;
    owner.queue("jobs").unwrap().declare(QueueOptions::default()).await.unwrap();
    owner.queue("jobs").unwrap().put(&b"keep me"[..]).await.unwrap();

    let producer = Bus::connect_with_token(&daemon.addr, token).await.unwrap();
    let squash =
        QueueOptions { max_messages: 1, overflow: switchboard::Overflow::DropOldest, ..Default::default() };
    match producer.queue("jobs").unwrap().declare(squash).await {
        Err(CallError::PermissionDenied(message)) => {
            assert!(message.contains("queue.declare jobs"), "{message}")
        }
        other => panic!("a producer re-declared jobs: {other:?}"),
    }
    producer.queue("jobs").unwrap().put(&b"second"[..]).await.unwrap();
    assert_eq!(depth(&owner, "jobs").await, 2, "nothing was dropped");
    match producer.queue("jobs").unwrap().delete().await {
        Err(CallError::PermissionDenied(_)) => {}
        other => panic!("a producer deleted a queue: {other:?}"),
    }

    // Auto-creation by first use, up to the limit (jobs + 2 more).
    producer.queue("a").unwrap().put(&b"x"[..]).await.unwrap();
    producer.queue("b").unwrap().put(&b"x"[..]).await.unwrap();
    match producer.queue("c").unwrap().put(&b"x"[..]).await {
        Err(CallError::Overloaded(message)) => assert!(message.contains("max-queues"), "{message}"),
        other => panic!("a fourth queue was created past --max-queues 3: {other:?}"),
    }
    // A dead-letter queue of a queue that exists is not counted; a `.dlq`
    // name alone is (else any client could create them without end).
    owner.queue("jobs.dlq").unwrap().consume(1).await.unwrap();
    match owner.queue("nosuch.dlq").unwrap().put(&b"x"[..]).await {
        Err(CallError::Overloaded(_)) => {}
        other => panic!("a .dlq name of no queue went past --max-queues: {other:?}"),
    }
    match owner.queue("other.dlq").unwrap().declare(QueueOptions::default()).await {
        Err(CallError::Overloaded(_)) => {}
        other => panic!("a declared .dlq name of no queue went past --max-queues: {other:?}"),
    }

    // Deleting: refused while not empty, done once it is; the place is free again.
    match owner.queue("b").unwrap().delete().await {
        Err(CallError::BadRequest(message)) => assert!(message.contains("holds 1 messages"), "{message}"),
        other => panic!("a queue with a message was deleted: {other:?}"),
    }
    take(&owner, "b", 1).await;
    let out = daemon.cli(&["queue", "delete", "b"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    producer.queue("c").unwrap().put(&b"x"[..]).await.unwrap();
    assert!(!owner.queues().await.unwrap().iter().any(|q| q.queue == "b"));

    drop((owner, producer));
    daemon.signal(Signal::KILL);
    daemon.wait_exit(Duration::from_secs(5)).expect("killed");
    daemon.restart();
    let owner = daemon.bus().await;
    let names: Vec<String> = owner.queues().await.unwrap().into_iter().map(|q| q.queue).collect();
    assert!(!names.contains(&"b".to_owned()), "a deleted queue came back: {names:?}");
    assert_eq!(depth(&owner, "jobs").await, 2);
}

/// Deadlines computed from a client's options overflowed: a queue declared
/// with `u64::MAX` milliseconds of visibility timeout, time to live and
/// duplicate window overflowed them on the first put. They saturate now.
/// Failed before the fix (the put was never answered: timeout after 30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_at_their_maximum_saturate_instead_of_overflowing() {
    let daemon = Daemon::start();
    let bus = daemon.bus().await;
    let queue = bus.queue("forever").unwrap();
    let options = QueueOptions {
        visibility_timeout_ms: u64::MAX,
        default_ttl_ms: u64::MAX,
        dedup_window_ms: u64::MAX,
        ..Default::default()
    };
    queue.declare(options).await.unwrap();
    let put = PutOptions { id: Some("once".into()), ..Default::default() };
    queue.put_with(&b"x"[..], put.clone()).await.unwrap();
    queue.put_with(&b"x"[..], put).await.unwrap();
    let mut consumer = queue.consume(1).await.unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(5), consumer.next()).await.unwrap().unwrap();
    delivery.nack(Duration::from_millis(u64::from(u32::MAX))).await.unwrap();
    assert_eq!(depth(&bus, "forever").await, 1, "stored once, waiting out its delay");
    bus.whoami().await.expect("the daemon is alive");
}

//! A queue kept on JetStream by the fleet (`[fleet] queues`), on the real
//! three-server NATS cluster of `support::fleet`: producers on two hosts,
//! a consumer on the third, one NATS server and one daemon killed during
//! the run — every confirmed put is delivered, none acknowledged twice.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod support;

use std::time::{Duration, Instant};

use support::fleet::Fleet;
use switchboard::Bus;

/// Puts `count` messages `PREFIX-i` into `queue` from a client on `host`,
/// for at most `limit`: the ids and payloads JetStream confirmed.
fn produce(
    fleet: &Fleet,
    host: &str,
    prefix: &'static str,
    count: u32,
    limit: Duration,
) -> std::thread::JoinHandle<Vec<(u64, String)>> {
    let addr = fleet.host(host).daemon.addr.clone();
    fleet.spawn_on_host(host, move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let started = Instant::now();
            let Ok(bus) = Bus::connect(&addr).await else { return Vec::new() };
            let queue = bus.queue("jobs").unwrap();
            let mut confirmed = Vec::new();
            for i in 0..count {
                if started.elapsed() > limit {
                    break;
                }
                let payload = format!("{prefix}-{i}");
                let put = tokio::time::timeout(Duration::from_secs(3), queue.put(payload.clone())).await;
                if let Ok(Ok(id)) = put {
                    confirmed.push((id, payload));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            confirmed
        })
    })
}

/// Puts `payload` into `jobs` from a, retrying until the queue takes it:
/// JetStream elects its leaders after the cluster forms, and the queue
/// takes puts once its stream exists.
async fn first_put(fleet: &Fleet, payload: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !fleet.cli(fleet.host("a"), &["queue", "put", "jobs", payload]).output().unwrap().status.success() {
        assert!(
            Instant::now() < deadline,
            "the fleet queue took no put in 30 s:\n{}",
            fleet.host("a").daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_queue_delivers_every_confirmed_put_once_through_a_dead_server_and_a_dead_daemon() {
    let fleet =
        Fleet::start(&["a", "b", "c"], |_| "queues = [\"jobs\"]\nqueue_ack_wait = \"3s\"\n".to_owned());
    // This first one is delivered too.
    first_put(&fleet, "\"warm-up\"").await;
    // Consumers on c take everything and ack it, until nothing came for 10 s
    // (a delivery lost with a server is given again after 3 s).
    let addr = fleet.host("c").daemon.addr.clone();
    let consumer = fleet.spawn_on_host("c", move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let bus = Bus::connect(&addr).await.unwrap();
            let mut consumer = bus.queue("jobs").unwrap().consume(16).await.unwrap();
            let mut acked: Vec<(u64, String)> = Vec::new();
            while let Ok(Some(delivery)) = tokio::time::timeout(Duration::from_secs(8), consumer.next()).await
            {
                let entry = (delivery.id, String::from_utf8_lossy(&delivery.payload).into_owned());
                if delivery.ack().await.is_ok() {
                    acked.push(entry);
                }
            }
            acked
        })
    });
    let declared =
        fleet.cli(fleet.host("a"), &["queue", "declare", "jobs", "--max-attempts", "3"]).output().unwrap();
    let said = String::from_utf8_lossy(&declared.stderr);
    assert!(!declared.status.success() && said.contains("kept by the fleet on JetStream"), "{said}");
    let priority =
        fleet.cli(fleet.host("a"), &["queue", "put", "jobs", "1", "--priority", "5"]).output().unwrap();
    let said = String::from_utf8_lossy(&priority.stderr);
    assert!(!priority.status.success() && said.contains("keeps no priorities"), "{said}");
    let on_a = produce(&fleet, "a", "a", 400, Duration::from_secs(20));
    let on_b = produce(&fleet, "b", "b", 400, Duration::from_secs(20));
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let mut fleet = fleet;
    fleet.kill_nats("b"); // b's daemon moves to another server; the stream has two copies left
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    support::signal_pid(fleet.host("a").daemon.pid(), rustix::process::Signal::KILL);
    let mut confirmed = on_a.join().unwrap();
    confirmed.extend(on_b.join().unwrap());
    let acked = consumer.join().unwrap();
    assert!(
        confirmed.len() > 100,
        "too few puts confirmed to mean anything: {}; c's log:\n{}",
        confirmed.len(),
        fleet.host("c").daemon.log()
    );
    let mut acked_payloads: Vec<&String> = acked.iter().map(|(_, payload)| payload).collect();
    acked_payloads.sort();
    let before = acked_payloads.len();
    acked_payloads.dedup();
    assert_eq!(before, acked_payloads.len(), "a message was acked twice");
    let acked_set: std::collections::HashSet<&String> = acked_payloads.into_iter().collect();
    let lost: Vec<&(u64, String)> =
        confirmed.iter().filter(|(_, payload)| !acked_set.contains(payload)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} confirmed puts never delivered ({} acked), e.g. {:?}; c's log:\n{}",
        lost.len(),
        confirmed.len(),
        acked.len(),
        lost.first(),
        fleet.host("c").daemon.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_runs_out_of_attempts_goes_to_the_dead_letter_queue_with_why() {
    let config = |_: &str| "queues = [\"jobs\"]\nqueue_replicas = 2\nqueue_max_attempts = 2\n".to_owned();
    let fleet = Fleet::start(&["a", "b"], config);
    first_put(&fleet, "\"poison\"").await;
    let addr = fleet.host("b").daemon.addr.clone();
    let (attempts, dead) = fleet.on_host("b", move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let bus = Bus::connect(&addr).await.unwrap();
            let mut consumer = bus.queue("jobs").unwrap().consume(1).await.unwrap();
            let mut attempts = Vec::new();
            while let Ok(Some(delivery)) = tokio::time::timeout(Duration::from_secs(4), consumer.next()).await
            {
                attempts.push(delivery.attempt);
                delivery.nack(Duration::ZERO).await.unwrap();
            }
            let mut dead = bus.queue("jobs.dlq").unwrap().consume(1).await.unwrap();
            let letter = tokio::time::timeout(Duration::from_secs(10), dead.next()).await.unwrap().unwrap();
            let header = |key: &str| letter.headers.get(key).map(str::to_owned);
            let seen = (
                switchboard::decode::<String>(&letter.payload).unwrap(),
                header("x-dead-reason"),
                header("x-dead-attempts"),
                header("x-dead-from"),
            );
            letter.ack().await.unwrap();
            (attempts, seen)
        })
    });
    assert_eq!(attempts, [1, 2], "delivered twice, then no more");
    let expected = ("poison".to_owned(), Some("max attempts".into()), Some("2".into()), Some("jobs".into()));
    assert_eq!(dead, expected);
}

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

/// Runs the CLI on `host` with `args`: (success, stdout, stderr).
fn cli(fleet: &Fleet, host: &str, args: &[&str]) -> (bool, String, String) {
    let out = fleet.cli(fleet.host(host), args).output().unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// `queue ls --json` on `host`: the entry of `queue`, if listed.
fn listed(fleet: &Fleet, host: &str, queue: &str) -> Option<serde_json::Value> {
    let (ok, out, err) = cli(fleet, host, &["queue", "ls", "--json"]);
    assert!(ok, "{err}");
    let queues: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    queues.into_iter().find(|q| q["queue"] == queue)
}

/// Waits up to 10 s for `host` to list `queue` (`present`) or not.
fn until_listed(fleet: &Fleet, host: &str, queue: &str, present: bool) -> Option<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let entry = listed(fleet, host, queue);
        if entry.is_some() == present {
            return entry;
        }
        assert!(
            Instant::now() < deadline,
            "{host} still {} {queue}",
            if present { "lacks" } else { "lists" }
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_declared_on_the_fleet_from_one_host_is_listed_peeked_purged_and_deleted_from_the_others() {
    let fleet = Fleet::start(&["a", "b"], |_| "queue_replicas = 2\n".to_owned());
    // What JetStream cannot take is refused by name, before anything is made.
    let (ok, _, said) = cli(&fleet, "a", &["queue", "declare", "orders", "--fleet", "--ttl", "1s"]);
    assert!(!ok && said.contains("dedup window"), "{said}");
    // A queue on this host's log cannot become a fleet queue under its feet.
    assert!(cli(&fleet, "a", &["queue", "declare", "scratch"]).0);
    let (ok, _, said) = cli(&fleet, "a", &["queue", "declare", "scratch", "--fleet"]);
    assert!(!ok && said.contains("scratch is a queue on this host's log"), "{said}");

    let (ok, out, said) =
        cli(&fleet, "a", &["queue", "declare", "orders", "--fleet", "--visibility-timeout", "5s", "--json"]);
    assert!(ok, "{said}");
    assert!(out.contains("\"fleet\":true"), "{out}");
    // b learns of it from JetStream, and its puts go there.
    until_listed(&fleet, "b", "orders", true);
    for payload in ["\"m1\"", "\"m2\"", "\"m3\""] {
        let (ok, _, said) = cli(&fleet, "b", &["queue", "put", "orders", payload]);
        assert!(ok, "{said}");
    }
    let entry = listed(&fleet, "a", "orders").unwrap();
    assert_eq!(entry["depth"], 3, "{entry}");
    assert_eq!(entry["fleet"]["replicas"], 2, "{entry}");
    assert_eq!(entry["options"]["visibility_timeout_ms"], 5_000, "{entry}");
    assert!(
        listed(&fleet, "a", "scratch").unwrap().get("fleet").is_none(),
        "a local queue has no fleet entry"
    );
    let (ok, table, _) = cli(&fleet, "a", &["queue", "ls"]);
    assert!(ok && table.lines().any(|l| l.starts_with("orders") && l.contains("fleet R2")), "{table}");

    let (ok, peeked, said) = cli(&fleet, "a", &["queue", "peek", "orders", "--count", "10"]);
    assert!(ok, "{said}");
    let payloads: Vec<String> = peeked
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap()["payload"].to_string())
        .collect();
    assert_eq!(payloads, ["\"m1\"", "\"m2\"", "\"m3\""]);
    assert_eq!(listed(&fleet, "a", "orders").unwrap()["depth"], 3, "a peek takes nothing");

    let (ok, _, said) = cli(&fleet, "b", &["queue", "delete", "orders"]);
    assert!(!ok && said.contains("holds 3 messages"), "{said}");
    let (ok, removed, said) = cli(&fleet, "b", &["queue", "purge", "orders"]);
    assert!(ok && removed.trim() == "3", "{removed}{said}");
    assert_eq!(listed(&fleet, "a", "orders").unwrap()["depth"], 0);
    let (ok, _, said) = cli(&fleet, "a", &["queue", "delete", "orders"]);
    assert!(ok, "{said}");
    until_listed(&fleet, "b", "orders", false);
}

#[test]
fn a_daemon_that_joined_no_fleet_refuses_a_fleet_queue_by_saying_so() {
    let daemon = support::Daemon::start();
    let out = daemon.cli(&["queue", "declare", "orders", "--fleet"]).output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && said.contains("joined no fleet"), "{said}");
    let listed = daemon.cli(&["queue", "ls", "--json"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&listed.stdout).trim(), "[]", "nothing was made");
}

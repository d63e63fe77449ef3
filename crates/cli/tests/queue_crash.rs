//! The promise of durable queues, tested the hard way: the daemon is killed
//! with SIGKILL five times while four producers put and two consumers
//! consume. Afterwards: every confirmed put was delivered at least once, no
//! message whose ack was confirmed was delivered again, and no message id
//! was stored twice.
#![allow(clippy::unwrap_used, clippy::too_many_lines)] // tests fail loudly and read as one story

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::process::Signal;
use support::Daemon;
use switchboard::{Bus, PutOptions, QueueOptions};

const PRODUCERS: usize = 4;
const CONSUMERS: usize = 2;
const CYCLES: usize = 5;

#[derive(Default)]
struct Ledger {
    /// Message ids whose put was confirmed.
    confirmed: HashSet<String>,
    /// Times each message id was delivered, and the stored ids it came with.
    delivered: HashMap<String, (u32, HashSet<u64>)>,
    /// Message ids whose ack was confirmed.
    acked: HashSet<String>,
    /// Deliveries of a message whose ack had already been confirmed.
    delivered_after_ack: Vec<String>,
    /// Puts that failed and were retried with the same id.
    retries: u64,
}

async fn produce(
    bus: Bus,
    producer: usize,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let queue = bus.queue("crash").unwrap();
    let mut seq = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let id = format!("p{producer}-{seq}");
        loop {
            let options = PutOptions { id: Some(id.clone()), ..Default::default() };
            match queue.put_with(id.clone(), options).await {
                Ok(_) => {
                    ledger.lock().unwrap().confirmed.insert(id.clone());
                    break;
                }
                // The daemon died mid-put: retry the same id once it is back.
                Err(_) => {
                    ledger.lock().unwrap().retries += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        seq += 1;
    }
}

async fn consume(bus: Bus, ledger: Arc<Mutex<Ledger>>) {
    let queue = bus.queue("crash").unwrap();
    loop {
        let Ok(mut consumer) = queue.consume(16).await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        while let Some(delivery) = consumer.next().await {
            let id = String::from_utf8(delivery.payload.to_vec()).unwrap();
            {
                let mut ledger = ledger.lock().unwrap();
                if ledger.acked.contains(&id) {
                    ledger.delivered_after_ack.push(id.clone());
                }
                let entry = ledger.delivered.entry(id.clone()).or_default();
                entry.0 += 1;
                entry.1.insert(delivery.id);
            }
            if delivery.ack().await.is_ok() {
                ledger.lock().unwrap().acked.insert(id);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_confirmed_message() {
    let mut daemon = Daemon::start();
    let setup = daemon.bus().await;
    setup
        .queue("crash")
        .unwrap()
        .declare(QueueOptions { max_attempts: 0, ..Default::default() })
        .await
        .unwrap();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for producer in 0..PRODUCERS {
        let bus = daemon.bus().await;
        tasks.push(tokio::spawn(produce(bus, producer, ledger.clone(), stop.clone())));
    }
    let mut consumers = Vec::new();
    for _ in 0..CONSUMERS {
        let bus = daemon.bus().await;
        consumers.push(tokio::spawn(consume(bus, ledger.clone())));
    }

    for cycle in 1..=CYCLES {
        tokio::time::sleep(Duration::from_millis(400)).await;
        daemon.signal(Signal::KILL);
        daemon.wait_exit(Duration::from_secs(5)).expect("killed");
        let confirmed = ledger.lock().unwrap().confirmed.len();
        println!("cycle {cycle}: killed the daemon with {confirmed} puts confirmed so far");
        daemon.restart();
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(30), task).await.expect("producers finish").unwrap();
    }

    // Drain: wait until every confirmed put has been delivered and the queue is empty.
    let bus = daemon.bus().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let info = bus.queues().await.unwrap();
        let crash = info.iter().find(|q| q.queue == "crash").unwrap();
        let missing = {
            let ledger = ledger.lock().unwrap();
            ledger.confirmed.iter().filter(|id| !ledger.delivered.contains_key(*id)).count()
        };
        if crash.depth == 0 && crash.in_flight == 0 && missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not drained: depth {} in flight {} missing {missing}",
            crash.depth,
            crash.in_flight
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for consumer in consumers {
        consumer.abort();
    }

    let ledger = ledger.lock().unwrap();
    let lost: Vec<&String> =
        ledger.confirmed.iter().filter(|id| !ledger.delivered.contains_key(*id)).collect();
    let stored_twice: Vec<(&String, &HashSet<u64>)> = ledger
        .delivered
        .iter()
        .filter(|(_, (_, ids))| ids.len() > 1)
        .map(|(id, (_, ids))| (id, ids))
        .collect();
    let redelivered = ledger.delivered.values().filter(|(n, _)| *n > 1).count();
    println!(
        "checked: {} puts confirmed ({} retried after a crash), {} messages delivered, {} redelivered \
         (at-least-once), {} acks confirmed; lost {}, delivered after a confirmed ack {}, stored twice {}",
        ledger.confirmed.len(),
        ledger.retries,
        ledger.delivered.len(),
        redelivered,
        ledger.acked.len(),
        lost.len(),
        ledger.delivered_after_ack.len(),
        stored_twice.len()
    );
    assert!(ledger.confirmed.len() > 1000, "the load was too light to mean much");
    assert!(lost.is_empty(), "confirmed but never delivered: {lost:?}");
    assert!(
        ledger.delivered_after_ack.is_empty(),
        "delivered after a confirmed ack: {:?}",
        ledger.delivered_after_ack
    );
    assert!(stored_twice.is_empty(), "stored under two ids: {stored_twice:?}");
}

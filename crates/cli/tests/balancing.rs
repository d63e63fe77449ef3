//! Load balancing across instances, concurrency, notifications.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::{Daemon, Guard};

#[tokio::test]
async fn three_instances_share_3000_calls() {
    let daemon = Daemon::start();
    let _instances: Vec<Guard> =
        (0..3).map(|_| Guard(daemon.responder(&["lb.work", "--echo", "-q"]))).collect();
    let bus = daemon.bus().await;
    let mut tasks = Vec::new();
    for worker in 0..16 {
        let bus = bus.clone();
        tasks.push(tokio::spawn(async move {
            let mut calls = 0;
            for i in (worker..3000).step_by(16) {
                let payload = format!("{i}");
                let reply = bus.call("lb.work", payload.clone()).await.expect("call");
                assert_eq!(&reply[..], payload.as_bytes());
                calls += 1;
            }
            calls
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    assert_eq!(total, 3000);
    let services = bus.services().await.unwrap();
    let lb = services.iter().find(|s| s.service == "lb").expect("lb is registered");
    let shares: Vec<u64> = lb.instances.iter().map(|i| i.delivered).collect();
    println!("deliveries per instance: {shares:?}");
    assert_eq!(shares.len(), 3);
    assert_eq!(shares.iter().sum::<u64>(), 3000);
    for share in shares {
        assert!((750..=1260).contains(&share), "share {share} outside 25%..42% of 3000");
    }
}

#[tokio::test]
async fn many_concurrent_calls_multiplex_on_one_connection() {
    let daemon = Daemon::start();
    let bus = daemon.bus().await;
    let _svc = bus
        .serve("mux")
        .unwrap()
        .method("delay", |r| async move {
            // Replies come back out of order: later calls finish first.
            let n: u64 = std::str::from_utf8(&r.payload).unwrap().parse().unwrap();
            tokio::time::sleep(Duration::from_millis(50 - n % 50)).await;
            Ok(r.payload)
        })
        .start()
        .await
        .unwrap();
    let client = daemon.bus().await;
    let calls: Vec<_> = (0..500u64)
        .map(|n| {
            let client = client.clone();
            tokio::spawn(async move { (n, client.call("mux.delay", n.to_string()).await) })
        })
        .collect();
    for call in calls {
        let (n, reply) = call.await.unwrap();
        assert_eq!(reply.unwrap(), n.to_string().as_bytes());
    }
}

#[tokio::test]
async fn notifications_arrive_without_replies() {
    let daemon = Daemon::start();
    let bus = daemon.bus().await;
    let seen = Arc::new(AtomicUsize::new(0));
    let _svc = bus
        .serve("cache")
        .unwrap()
        .method("invalidate", {
            let seen = seen.clone();
            move |r| {
                assert!(r.is_notification());
                seen.fetch_add(1, Ordering::SeqCst);
                async { Ok(Default::default()) }
            }
        })
        .start()
        .await
        .unwrap();
    let sender = daemon.bus().await;
    for i in 0..100 {
        sender.notify("cache.invalidate", format!("key{i}")).await.unwrap();
    }
    // A notification to nobody is dropped, not an error for the sender.
    sender.notify("nobody.listens", "x").await.unwrap();
    assert!(support::eventually(Duration::from_secs(5), || seen.load(Ordering::SeqCst) == 100).await);
}

#[tokio::test]
async fn handlers_run_concurrently_up_to_the_limit() {
    let daemon = Daemon::start();
    let bus = daemon.bus().await;
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let _svc = bus
        .serve("pool")
        .unwrap()
        .max_concurrency(4)
        .method("work", {
            let (running, peak) = (running.clone(), peak.clone());
            move |_| {
                let (running, peak) = (running.clone(), peak.clone());
                async move {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    Ok(Default::default())
                }
            }
        })
        .start()
        .await
        .unwrap();
    let calls: Vec<_> = (0..32)
        .map(|_| {
            let bus = bus.clone();
            tokio::spawn(async move { bus.call("pool.work", "").await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(peak.load(Ordering::SeqCst), 4);
}

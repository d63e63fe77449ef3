//! A supervised, bus-aware instance whose connection the daemon cuts while
//! it keeps running (here: as a slow consumer) reconnects, attaches again
//! with its secret, and can still be paused and controlled.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use support::supervised::{bus_aware_cache, supervise_with};
use support::Daemon;
use switchboard::CallOptions;
use switchboard_proto::supervision::ServiceStatus;

fn status(daemon: &Daemon) -> ServiceStatus {
    let out = daemon.cli(&["status", "cache", "--json"]).output().unwrap();
    serde_json::from_slice::<Vec<ServiceStatus>>(&out.stdout).unwrap().pop().unwrap()
}

fn attachments(daemon: &Daemon) -> usize {
    let out = daemon.cli(&["logs", "cache", "-n", "1000"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).matches("attached over the bus").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_cut_off_by_the_daemon_attaches_again_and_is_still_paused() {
    let supervised = supervise_with(&bus_aware_cache(1500), &["--slow-consumer", "300ms"]);
    let daemon = &supervised.daemon;
    assert!(support::eventually(Duration::from_secs(20), || status(daemon).instances[0].bus_aware).await);
    let pid = status(daemon).instances[0].pid;
    assert_eq!(attachments(daemon), 1);

    // The instance stops reading (its only thread sleeps) while calls pile
    // up for it past the congestion mark: the daemon cuts it off.
    let bus = daemon.bus().await;
    let stalled = {
        let bus = bus.clone();
        tokio::spawn(async move {
            bus.call_with("cache.stall", Bytes::new(), CallOptions::timeout(Duration::from_secs(5))).await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let big = Bytes::from(vec![0x90; 64 * 1024]);
    let flood: Vec<_> = (0..100)
        .map(|_| {
            let (bus, big) = (bus.clone(), big.clone());
            tokio::spawn(async move {
                bus.call_with("cache.get", big, CallOptions::timeout(Duration::from_secs(5))).await
            })
        })
        .collect();
    for call in flood {
        let _ = call.await.unwrap();
    }
    let _ = stalled.await.unwrap();
    assert!(daemon.log().contains("slow consumer") || daemon.log().contains("congested"), "{}", daemon.log());

    // It reconnected and attached again: the same process, controllable.
    let deadline = Instant::now() + Duration::from_secs(20);
    while attachments(daemon) < 2 {
        assert!(Instant::now() < deadline, "never attached again:\n{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let state = status(daemon);
    assert_eq!((state.instances[0].pid, state.instances[0].bus_aware), (pid, true));
    let paused = daemon.cli(&["pause", "cache"]).output().unwrap();
    assert!(paused.status.success(), "{}", String::from_utf8_lossy(&paused.stderr));
    assert_eq!(status(daemon).state, "Paused");
    let resumed = daemon.cli(&["continue", "cache"]).output().unwrap();
    assert!(resumed.status.success(), "{}", String::from_utf8_lossy(&resumed.stderr));
    assert_eq!(daemon.cli(&["call", "cache.get"]).output().unwrap().status.code(), Some(0));
}

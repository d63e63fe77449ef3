//! A circuit breaker against the real daemon: a service that keeps timing
//! out opens its callers' breaker, calls then fail at once with
//! `CircuitOpen` instead of waiting out their timeouts, and once the service
//! recovers a probe closes the breaker again.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use support::Daemon;
use switchboard::{BreakerPolicy, BreakerState, CallError, CallOptions, Reject};
use switchboard_proto::sys::ProcessBreakers;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_service_opens_the_breaker_which_fails_fast_and_closes_after_recovery() {
    let daemon = Daemon::start();
    let server = daemon.bus().await;
    let sick = Arc::new(AtomicBool::new(true));
    let unwell = sick.clone();
    let _svc = server
        .serve("flaky")
        .unwrap()
        .method("work", move |_| {
            let unwell = unwell.clone();
            async move {
                if unwell.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Ok::<_, Reject>(Bytes::new())
            }
        })
        .start()
        .await
        .unwrap();
    let bus = daemon.bus().await;
    let policy =
        BreakerPolicy { min_calls: 5, cool_down: Duration::from_millis(500), ..BreakerPolicy::default() };
    bus.set_breakers(Some(policy));
    let quick = || CallOptions::timeout(Duration::from_millis(100));

    for _ in 0..5 {
        let err = bus.call_with("flaky.work", Bytes::new(), quick()).await.unwrap_err();
        assert!(matches!(err, CallError::Timeout(_)), "{err}");
    }
    let open = bus.open_breakers();
    assert!(matches!(&open[..], [(name, BreakerState::Open { .. })] if name == "flaky"), "{open:?}");
    // The process reported it: `ls --breakers` shows it, with this session.
    let session = bus.whoami().await.unwrap().session;
    let listed = || {
        let out = daemon.cli(&["ls", "--breakers", "--json"]).output().unwrap();
        serde_json::from_slice::<Vec<ProcessBreakers>>(&out.stdout).unwrap()
    };
    let shown = |list: &[ProcessBreakers]| {
        list.iter().any(|p| {
            p.session == session && p.breakers.iter().any(|b| b.service == "flaky" && b.state == "open")
        })
    };
    assert!(support::eventually(Duration::from_secs(5), || shown(&listed())).await, "{:?}", listed());
    let text = daemon.cli(&["ls", "--breakers"]).output().unwrap();
    assert!(String::from_utf8_lossy(&text.stdout).contains("flaky"), "{text:?}");

    // Open: refused at once, without waiting the 100 ms timeout.
    let started = Instant::now();
    for _ in 0..100 {
        let err = bus.call_with("flaky.work", Bytes::new(), quick()).await.unwrap_err();
        assert!(matches!(&err, CallError::CircuitOpen(why) if why.contains("flaky")), "{err}");
        assert_eq!(err.kind(), "circuit_open");
    }
    let per_call = started.elapsed() / 100;
    eprintln!("while open: {per_call:?} per call");
    assert!(per_call < Duration::from_millis(10), "not failing fast: {per_call:?} per call");

    // Another service is not affected by this one's breaker.
    assert!(matches!(
        bus.call_with("other.work", Bytes::new(), quick()).await,
        Err(CallError::NoSuchService(_))
    ));

    // Recovered: after the cool-down one probe goes through and closes it.
    sick.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(550)).await;
    bus.call_with("flaky.work", Bytes::new(), quick()).await.unwrap();
    assert!(bus.open_breakers().is_empty());
    assert!(
        support::eventually(Duration::from_secs(5), || !shown(&listed())).await,
        "closed, reported as such"
    );
    for _ in 0..10 {
        bus.call_with("flaky.work", Bytes::new(), quick()).await.unwrap();
    }

    // Off by default: a bus without a policy just waits out each timeout.
    sick.store(true, Ordering::SeqCst);
    let plain = daemon.bus().await;
    for _ in 0..6 {
        let err = plain.call_with("flaky.work", Bytes::new(), quick()).await.unwrap_err();
        assert!(matches!(err, CallError::Timeout(_)), "{err}");
    }
    assert!(plain.open_breakers().is_empty());
}

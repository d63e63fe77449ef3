//! Deadlines travel through a chain of services (A → B → C): B's call to a
//! slow C ends at A's deadline, not at its own 30 s default; and a call made
//! after the inherited deadline passed fails at once, without reaching C.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use support::Daemon;
use switchboard::{CallError, CallOptions, Reject};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handlers_calls_inherit_the_deadline_of_the_request_it_serves() {
    let daemon = Daemon::start();
    let (a, b, c) = (daemon.bus().await, daemon.bus().await, daemon.bus().await);
    let reached_c = Arc::new(AtomicUsize::new(0));
    let counter = reached_c.clone();
    let _c = c
        .serve("slow")
        .unwrap()
        .method("wait", move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
            async {
                tokio::time::sleep(Duration::from_secs(2)).await;
                Ok::<_, Reject>(Bytes::new())
            }
        })
        .start()
        .await
        .unwrap();
    // What B saw of its call to C: the error and how long the call took.
    let seen: Arc<Mutex<Vec<(String, Duration)>>> = Arc::default();
    let (relay_bus, relay_seen) = (b.clone(), seen.clone());
    let (late_bus, late_seen) = (b.clone(), seen.clone());
    let _b = b
        .serve("mid")
        .unwrap()
        .method("relay", move |_| {
            let (bus, seen) = (relay_bus.clone(), relay_seen.clone());
            async move {
                let started = Instant::now();
                let result = bus.call("slow.wait", Bytes::new()).await; // its own default: 30 s
                seen.lock()
                    .unwrap()
                    .push((result.err().map(|e| e.kind().to_owned()).unwrap_or_default(), started.elapsed()));
                Err::<Bytes, _>(Reject::new("relayed"))
            }
        })
        .method("late", move |_| {
            let (bus, seen) = (late_bus.clone(), late_seen.clone());
            async move {
                tokio::time::sleep(Duration::from_millis(350)).await; // past A's 300 ms
                let started = Instant::now();
                let result = bus.call("slow.wait", Bytes::new()).await;
                seen.lock()
                    .unwrap()
                    .push((result.err().map(|e| e.kind().to_owned()).unwrap_or_default(), started.elapsed()));
                Err::<Bytes, _>(Reject::new("late"))
            }
        })
        .start()
        .await
        .unwrap();

    let short = || CallOptions::timeout(Duration::from_millis(300));
    // B's call ends a margin (5 ms) before A's deadline, so B can usually
    // still answer A in time; either way A's call ends at its deadline.
    let started = Instant::now();
    let err = a.call_with("mid.relay", Bytes::new(), short()).await.unwrap_err();
    let relayed = matches!(&err, CallError::Rejected(why) if why == "relayed");
    assert!(relayed || matches!(err, CallError::Timeout(_)), "{err}");
    assert!(started.elapsed() < Duration::from_millis(400), "{:?}", started.elapsed());
    let deadline = Instant::now() + Duration::from_secs(5);
    while seen.lock().unwrap().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (kind, took) = seen.lock().unwrap().remove(0);
    assert_eq!(kind, "timeout");
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_secs(1),
        "B's call to C took {took:?}"
    );
    assert_eq!(reached_c.load(Ordering::SeqCst), 1);

    let err = a.call_with("mid.late", Bytes::new(), short()).await.unwrap_err();
    assert!(matches!(err, CallError::Timeout(_)), "B answered after A's deadline: {err}");
    while seen.lock().unwrap().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (kind, took) = seen.lock().unwrap().remove(0);
    assert_eq!(kind, "timeout");
    assert!(took < Duration::from_millis(50), "an expired inherited deadline fails at once, took {took:?}");
    assert_eq!(reached_c.load(Ordering::SeqCst), 1, "the late call was never sent");
    // Outside a handler nothing is inherited: the caller's own timeout holds.
    let started = Instant::now();
    let err = a.call_with("slow.wait", Bytes::new(), CallOptions::timeout(Duration::from_millis(500))).await;
    assert!(matches!(err, Err(CallError::Timeout(_))) && started.elapsed() >= Duration::from_millis(450));
}

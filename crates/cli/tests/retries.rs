//! Retries against the real daemon: an idempotent call whose only instance
//! is killed mid-call is retried, waits while the supervisor restarts the
//! service, and succeeds on attempt 2; a plain retry rides out a pause; a
//! rejection is never retried; a service's retry budget caps the extra load.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use support::supervised::{bus_aware_cache, supervise};
use support::Daemon;
use switchboard::{CallError, CallOptions, Reject, RetryPolicy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_call_survives_its_instance_being_killed_and_a_plain_one_a_pause() {
    let s = supervise(&bus_aware_cache(400));
    let daemon = &s.daemon;
    let cache = || s.status("cache");
    assert!(support::eventually(Duration::from_secs(20), || cache().state == "Running").await);
    let first = cache().instances[0].pid.unwrap();
    let bus = daemon.bus().await;

    let options = CallOptions::timeout(Duration::from_secs(15)).retry(RetryPolicy::default().idempotent());
    let call = {
        let bus = bus.clone();
        tokio::spawn(async move { bus.call_attempts("cache.stall", Bytes::new(), options).await })
    };
    tokio::time::sleep(Duration::from_millis(150)).await; // the call is in the handler
    support::signal_pid(first, rustix::process::Signal::KILL);
    let attempted = call.await.unwrap();
    assert!(attempted.result.is_ok(), "{:?}", attempted.result);
    assert_eq!(attempted.attempts, 2, "the first attempt died with its instance");
    let second = cache().instances[0].pid.unwrap();
    assert_ne!(first, second, "answered by the restarted process");

    // Without `idempotent`, the same failure is not retried.
    let once = CallOptions::timeout(Duration::from_secs(15)).retry(RetryPolicy::default());
    let call = {
        let bus = bus.clone();
        tokio::spawn(async move { bus.call_attempts("cache.stall", Bytes::new(), once).await })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    support::signal_pid(second, rustix::process::Signal::KILL);
    let attempted = call.await.unwrap();
    assert!(matches!(attempted.result, Err(CallError::InstanceGone(_))), "{:?}", attempted.result);
    assert_eq!(attempted.attempts, 1);

    // A pause is ridden out by a plain retry: the call never ran while paused.
    assert!(support::eventually(Duration::from_secs(20), || cache().state == "Running").await);
    assert!(daemon.cli(&["pause", "cache"]).output().unwrap().status.success());
    // Waits of up to 100–300 ms: a few retries, well within the service's
    // budget (a burst of 10, of which the first call above took one).
    let patient = RetryPolicy {
        max_attempts: 30,
        initial: Duration::from_millis(100),
        max_delay: Duration::from_millis(300),
        ..RetryPolicy::default()
    };
    let options = CallOptions::timeout(Duration::from_secs(10)).retry(patient);
    let call = {
        let bus = bus.clone();
        tokio::spawn(async move { bus.call_attempts("cache.get", Bytes::new(), options).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(daemon.cli(&["continue", "cache"]).output().unwrap().status.success());
    let attempted = call.await.unwrap();
    assert!(attempted.result.is_ok(), "{:?}", attempted.result);
    assert!(attempted.attempts >= 2, "it was paused at first: {}", attempted.attempts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_are_never_retried_and_the_budget_caps_retries() {
    let daemon = Daemon::start();
    let server = daemon.bus().await;
    let _svc = server
        .serve("strict")
        .unwrap()
        .method("check", |_| async { Err::<Bytes, _>(Reject::new("not today")) })
        .start()
        .await
        .unwrap();
    let bus = daemon.bus().await;
    let eager = RetryPolicy::default().idempotent().attempts(5);
    let options = CallOptions::timeout(Duration::from_secs(5)).retry(eager.clone());
    let attempted = bus.call_attempts("strict.check", Bytes::new(), options).await;
    assert!(matches!(attempted.result, Err(CallError::Rejected(_))));
    assert_eq!(attempted.attempts, 1, "the service's own answer is final");

    // No instance at all: retryable, but the budget allows a burst of 10
    // retries and then about one per ten calls, not 4 per call.
    let started = Instant::now();
    let quick = RetryPolicy { max_attempts: 5, initial: Duration::from_millis(1), ..RetryPolicy::default() };
    let mut attempts = 0;
    for _ in 0..40 {
        let options = CallOptions::timeout(Duration::from_secs(5)).retry(quick.clone());
        let attempted = bus.call_attempts("nobody.here", Bytes::new(), options).await;
        assert!(matches!(attempted.result, Err(CallError::NoSuchService(_))), "{:?}", attempted.result);
        attempts += attempted.attempts;
    }
    assert!(
        (50..=55).contains(&attempts),
        "40 calls made {attempts} attempts (40 + a burst of 10 + ~4 earned)"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

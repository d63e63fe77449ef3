//! Every error a caller can meet, provoked for real and matched by type.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod support;

use std::time::{Duration, Instant};

use rustix::process::Signal;
use support::{Daemon, Guard};
use switchboard::{Bus, CallError, CallOptions, Reject};

#[tokio::test]
async fn no_such_service_and_no_such_method() {
    let daemon = Daemon::start();
    let bus = daemon.bus().await;
    let _svc =
        bus.serve("demo").unwrap().method("echo", |r| async move { Ok(r.payload) }).start().await.unwrap();
    assert!(
        matches!(bus.call("nobody.home", "x").await, Err(CallError::NoSuchService(m)) if m.contains("nobody"))
    );
    assert!(
        matches!(bus.call("demo.shout", "x").await, Err(CallError::NoSuchMethod(m)) if m.contains("shout"))
    );
    assert!(matches!(bus.call("Bad.name", "x").await, Err(CallError::InvalidTarget(_))));
}

#[tokio::test]
async fn timeout_comes_back_at_the_deadline() {
    let daemon = Daemon::start();
    let bus = daemon.bus().await;
    let _svc = bus
        .serve("slow")
        .unwrap()
        .method("wait", |_| async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            Ok(Default::default())
        })
        .start()
        .await
        .unwrap();
    let started = Instant::now();
    let result = bus.call_with("slow.wait", "x", CallOptions::timeout(Duration::from_millis(300))).await;
    assert_eq!(result, Err(CallError::Timeout(Duration::from_millis(300))));
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(3), "{took:?}");
}

#[tokio::test]
async fn instance_killed_mid_call_is_reported_at_once() {
    let daemon = Daemon::start();
    let responder = Guard(daemon.responder(&["slow.work", "--exec", "sleep 5", "-q"]));
    let bus = daemon.bus().await;
    let pid = responder.0.id();
    let killer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        support::signal_pid(pid, Signal::KILL);
    });
    let started = Instant::now();
    let result = bus.call_with("slow.work", "x", CallOptions::timeout(Duration::from_secs(20))).await;
    let took = started.elapsed();
    killer.await.unwrap();
    assert!(matches!(result, Err(CallError::InstanceGone(_))), "{result:?}");
    assert!(took < Duration::from_secs(3), "caller learned only after {took:?}");
}

#[tokio::test]
async fn payload_too_large_is_refused_before_sending_and_by_the_daemon() {
    let daemon = Daemon::start_with(&["--max-frame", "4096"]);
    let bus = daemon.bus().await;
    let _svc = bus
        .serve("big")
        .unwrap()
        .method("echo", |r| async move { Ok(r.payload) })
        .method("inflate", |_| async { Ok(vec![0u8; 10_000].into()) })
        .start()
        .await
        .unwrap();
    let big = vec![1u8; 5000];
    assert!(matches!(bus.call("big.echo", big).await, Err(CallError::PayloadTooLarge(_))));
    // The reply is too large: the callee's library answers with the error.
    assert!(matches!(bus.call("big.inflate", "x").await, Err(CallError::PayloadTooLarge(_))));
    // Just under the limit still works.
    assert_eq!(bus.call("big.echo", vec![2u8; 3000]).await.unwrap().len(), 3000);
}

#[tokio::test]
async fn rejection_carries_the_callee_message() {
    let daemon = Daemon::start();
    let bus = daemon.bus().await;
    let _svc = bus
        .serve("billing")
        .unwrap()
        .method("charge", |_| async { Err(Reject::new("account a is frozen")) })
        .method("boom", |_| async { panic!("handler bug") })
        .start()
        .await
        .unwrap();
    assert_eq!(bus.call("billing.charge", "x").await, Err(CallError::Rejected("account a is frozen".into())));
    // A panicking handler still answers, instead of leaving the caller to time out.
    assert!(
        matches!(bus.call("billing.boom", "x").await, Err(CallError::Rejected(m)) if m.contains("panicked"))
    );
}

#[tokio::test]
async fn shutting_down_answers_calls_in_flight() {
    let daemon = Daemon::start();
    let _responder = Guard(daemon.responder(&["slow.work", "--exec", "sleep 5", "-q"]));
    let bus = daemon.bus().await;
    let pid = daemon.pid();
    let stopper = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        support::signal_pid(pid, Signal::TERM);
    });
    let started = Instant::now();
    let result = bus.call_with("slow.work", "x", CallOptions::timeout(Duration::from_secs(20))).await;
    stopper.await.unwrap();
    assert_eq!(result, Err(CallError::ShuttingDown));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn chosen_instance_and_no_such_instance() {
    let daemon = Daemon::start();
    let bus = daemon.bus().await;
    let a = bus.serve("w").unwrap().method("who", |_| async { Ok("a".into()) }).start().await.unwrap();
    let b = bus.serve("w").unwrap().method("who", |_| async { Ok("b".into()) }).start().await.unwrap();
    for (svc, name) in [(&a, "a"), (&b, "b")] {
        for _ in 0..5 {
            let options = CallOptions { instance: Some(svc.instance()), ..Default::default() };
            assert_eq!(&bus.call_with("w.who", "", options).await.unwrap()[..], name.as_bytes());
        }
    }
    let options = CallOptions { instance: Some(999_999), ..Default::default() };
    assert!(matches!(bus.call_with("w.who", "", options).await, Err(CallError::NoSuchInstance(_))));
}

#[tokio::test]
async fn overloaded_service_says_so_instead_of_queueing_forever() {
    let daemon = Daemon::start();
    let bus = daemon.bus().await;
    let _svc = bus
        .serve("narrow")
        .unwrap()
        .max_concurrency(1)
        .max_queued(0)
        .method("hold", |_| async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            Ok(Default::default())
        })
        .start()
        .await
        .unwrap();
    let first = tokio::spawn({
        let bus = bus.clone();
        async move { bus.call("narrow.hold", "").await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(matches!(bus.call("narrow.hold", "").await, Err(CallError::Overloaded(_))));
    assert!(first.await.unwrap().is_ok());
}

#[tokio::test]
async fn unknown_daemon_is_a_clear_connect_error() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("unix:{}/none.sock", dir.path().display());
    let err = Bus::connect(&addr).await.err().expect("no daemon there");
    let text = err.to_string();
    assert!(text.contains("no switchboard daemon") && text.contains("none.sock"), "{text}");
}

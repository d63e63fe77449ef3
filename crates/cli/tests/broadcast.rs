//! Broadcast to every instance: one answer per instance, gone and late
//! instances reported as such, and the caller told when all have answered.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::process::Signal;
use support::{Daemon, Guard};
use switchboard::{CallError, CallOptions};

const RECYCLE: &str = r#"sleep 0.3; echo '"recycled"'"#;

#[tokio::test]
async fn an_instance_killed_mid_broadcast_is_reported_gone_and_the_rest_answer() {
    let daemon = Daemon::start();
    let _a = Guard(daemon.responder(&["worker.recycle", "--exec", RECYCLE, "-q"]));
    let _b = Guard(daemon.responder(&["worker.recycle", "--exec", RECYCLE, "-q"]));
    let doomed = Guard(daemon.responder(&["worker.recycle", "--exec", "sleep 5", "-q"]));
    let bus = daemon.bus().await;
    let pid = doomed.0.id();
    let killer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        support::signal_pid(pid, Signal::KILL);
    });
    let started = Instant::now();
    let outcome = bus
        .broadcast(
            "worker.recycle",
            switchboard::encode("deploy").unwrap(),
            CallOptions::timeout(Duration::from_secs(10)),
        )
        .await
        .unwrap();
    let took = started.elapsed();
    killer.await.unwrap();
    assert_eq!(outcome.replies.len(), 3);
    assert!(outcome.complete, "every instance answered or was reported gone");
    let ok: Vec<_> = outcome.replies.iter().filter(|r| r.result.is_ok()).collect();
    let gone: Vec<_> =
        outcome.replies.iter().filter(|r| matches!(r.result, Err(CallError::InstanceGone(_)))).collect();
    assert_eq!((ok.len(), gone.len()), (2, 1), "{:?}", outcome.replies);
    for reply in ok {
        let text: String = switchboard::decode(reply.result.as_ref().unwrap()).unwrap();
        assert_eq!(text, "recycled");
    }
    assert!(took < Duration::from_secs(5), "returned after {took:?}, long before the 10 s deadline");
}

#[tokio::test]
async fn a_late_instance_is_a_timeout_entry_and_the_call_returns_at_the_deadline() {
    let daemon = Daemon::start();
    let _fast = Guard(daemon.responder(&["worker.ping", "--reply", "\"pong\"", "-q"]));
    let _slow = Guard(daemon.responder(&["worker.ping", "--exec", "sleep 3", "-q"]));
    let bus = daemon.bus().await;
    let started = Instant::now();
    let deadline = Duration::from_millis(400);
    let outcome = bus.broadcast("worker.ping", "", CallOptions::timeout(deadline)).await.unwrap();
    let took = started.elapsed();
    assert!(!outcome.complete);
    assert_eq!(outcome.replies.len(), 2);
    assert!(outcome.replies.iter().any(|r| r.result.is_ok()));
    assert!(outcome.replies.iter().any(|r| r.result == Err(CallError::Timeout(deadline))));
    assert!(took >= deadline && took < Duration::from_secs(2), "{took:?}");
}

#[tokio::test]
async fn broadcast_errors_are_typed() {
    let daemon = Daemon::start();
    let bus = daemon.bus().await;
    let err = bus.broadcast("nobody.home", "", CallOptions::default()).await.unwrap_err();
    assert!(matches!(err, CallError::NoSuchService(_)), "{err:?}");
    let _svc = bus.serve("w").unwrap().method("a", |r| async move { Ok(r.payload) }).start().await.unwrap();
    let err = bus.broadcast("w.b", "", CallOptions::default()).await.unwrap_err();
    assert!(matches!(err, CallError::NoSuchMethod(_)), "{err:?}");
}

#[tokio::test]
async fn one_way_broadcast_reaches_every_instance() {
    let daemon = Daemon::start();
    let seen = Arc::new(AtomicUsize::new(0));
    let mut services = Vec::new();
    let server = daemon.bus().await;
    for _ in 0..3 {
        let seen = seen.clone();
        let svc = server
            .serve("cache")
            .unwrap()
            .method("flush", move |_| {
                seen.fetch_add(1, Ordering::SeqCst);
                async { Ok(Default::default()) }
            })
            .start()
            .await
            .unwrap();
        services.push(svc);
    }
    let bus = daemon.bus().await;
    bus.notify_all("cache.flush", "").await.unwrap();
    assert!(support::eventually(Duration::from_secs(5), || seen.load(Ordering::SeqCst) == 3).await);
    // A plain notification goes to one instance only.
    bus.notify("cache.flush", "").await.unwrap();
    assert!(support::eventually(Duration::from_secs(5), || seen.load(Ordering::SeqCst) == 4).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(seen.load(Ordering::SeqCst), 4);
}

#[test]
fn cli_prints_one_line_per_instance() {
    let daemon = Daemon::start();
    let _a = Guard(daemon.responder(&["svc.status", "--reply", r#"{"ok":true}"#, "-q"]));
    let _b = Guard(daemon.responder(&["svc.status", "--exec", "echo broken >&2; exit 1", "-q"]));
    let out = daemon.cli(&["broadcast", "svc.status", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "one instance failed");
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["reply"], serde_json::json!({"ok": true}));
    assert_eq!(lines[1]["error"], "rejected");
    assert!(String::from_utf8_lossy(&out.stderr).contains("all 2 instances answered"));
}

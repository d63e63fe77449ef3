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

/// `switchboard call --trace --json` on the chain, parsed.
async fn traced_call(daemon: &Daemon, target: &str, timeout: &str) -> (bool, serde_json::Value) {
    let mut command = daemon.cli(&["call", target, "--trace", "--json", "--timeout", timeout]);
    let out = tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap();
    let object = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{out:?}"));
    (out.status.success(), object)
}

/// (depth, service.method, outcome) of each hop, and their deadlines.
fn hop_rows(object: &serde_json::Value) -> (Vec<(u64, String, String)>, Vec<u64>) {
    let hops = object["hops"].as_array().unwrap_or_else(|| panic!("no hops: {object}"));
    let rows = hops
        .iter()
        .map(|h| {
            let name = format!("{}.{}", h["service"].as_str().unwrap(), h["method"].as_str().unwrap());
            (h["depth"].as_u64().unwrap(), name, h["outcome"].as_str().unwrap().to_owned())
        })
        .collect();
    (rows, hops.iter().map(|h| h["deadline_ms"].as_u64().unwrap()).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_trace_shows_the_deadline_each_hop_saw_and_how_it_answered() {
    let daemon = Daemon::start();
    let (a, b, c) = (daemon.bus().await, daemon.bus().await, daemon.bus().await);
    let traces: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = traces.clone();
    let _c = c
        .serve("chain-c")
        .unwrap()
        .method("work", move |request| {
            seen.lock().unwrap().push(request.trace().map(|t| t.trace_id_hex()).unwrap_or_default());
            async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok::<_, Reject>(Bytes::from_static(b"\xa4done"))
            }
        })
        .method("refuse", |_| async { Err::<Bytes, _>(Reject::new("no")) })
        .start()
        .await
        .unwrap();
    // B and A relay to the next service, the same method name on B.
    let relay = |bus: switchboard::Bus, service: &'static str, next: &'static str| {
        let (work, refuse) = (bus.clone(), bus.clone());
        async move {
            bus.serve(service)
                .unwrap()
                .method("work", move |_| {
                    let bus = work.clone();
                    async move {
                        bus.call(format!("{next}.work").as_str(), Bytes::new())
                            .await
                            .map_err(|e| Reject::new(e.to_string()))
                    }
                })
                .method("refuse", move |_| {
                    let bus = refuse.clone();
                    async move {
                        bus.call(format!("{next}.refuse").as_str(), Bytes::new())
                            .await
                            .map_err(|e| Reject::new(e.to_string()))
                    }
                })
                .start()
                .await
                .unwrap()
        }
    };
    let _b = relay(b, "chain-b", "chain-c").await;
    let _a = relay(a, "chain-a", "chain-b").await;

    // Twice: the second time B's and A's calls may take direct channels.
    for round in 0..2 {
        let (ok, object) = traced_call(&daemon, "chain-a.work", "2s").await;
        assert!(ok, "{object}");
        assert_eq!(object["reply"], "done");
        let (rows, deadlines) = hop_rows(&object);
        let expected = [(0, "chain-a.work"), (1, "chain-b.work"), (2, "chain-c.work")];
        let names: Vec<(u64, &str)> = rows.iter().map(|(d, n, _)| (*d, n.as_str())).collect();
        assert_eq!(names, expected, "round {round}: {object}");
        assert!(rows.iter().all(|(_, _, outcome)| outcome == "ok"), "{object}");
        // Each hop saw less time left than the one before, all within 2 s.
        assert!(deadlines[0] <= 2000 && deadlines[0] > 1500, "{deadlines:?}");
        assert!(deadlines[1] < deadlines[0] && deadlines[2] < deadlines[1], "{deadlines:?}");
        let took: Vec<u64> =
            object["hops"].as_array().unwrap().iter().map(|h| h["took_us"].as_u64().unwrap()).collect();
        assert!(took[2] >= 50_000 && took[1] >= took[2] && took[0] >= took[1], "{took:?}");
        // The trace id printed is the one C's handler saw.
        assert_eq!(traces.lock().unwrap().pop().unwrap(), object["trace_id"].as_str().unwrap(), "{object}");
    }

    // A failure deep in the chain: every hop names the error it answered.
    let (ok, object) = traced_call(&daemon, "chain-a.refuse", "2s").await;
    assert!(!ok);
    assert_eq!(object["error"], "rejected", "{object}");
    let (rows, _) = hop_rows(&object);
    let outcomes: Vec<&str> = rows.iter().map(|(_, _, o)| o.as_str()).collect();
    assert_eq!(outcomes, ["rejected", "rejected", "rejected"], "{object}");

    // The table for people, on stderr; the reply stays alone on stdout.
    let out = daemon.cli(&["call", "chain-a.work", "--trace"]).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.trim(), "\"done\"");
    assert!(stderr.contains("trace ") && stderr.contains("DEADLINE LEFT"), "{stderr}");
    assert!(stderr.contains("\n    chain-c.work"), "C indented two levels: {stderr}");
}

//! Trace context travels: a chain A → B → C sees one trace id in every
//! handler (a new span at each hop), and what a handler publishes, notifies
//! or puts on a queue carries the same trace; a caller's own `traceparent`
//! is kept.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use support::Daemon;
use switchboard::trace::{TraceParent, TRACEPARENT};
use switchboard::{Bus, CallOptions, Headers, Item, Reject};

type Seen = Arc<Mutex<Vec<(&'static str, TraceParent)>>>;

/// Serves `service.method`, recording the trace it was called with, then
/// calling `next` (if any) from inside the handler.
async fn hop(
    bus: &Bus,
    service: &str,
    name: &'static str,
    next: Option<&'static str>,
    seen: &Seen,
) -> switchboard::Service {
    let (caller, seen) = (bus.clone(), seen.clone());
    bus.serve(service)
        .unwrap()
        .method("go", move |request| {
            let (caller, seen) = (caller.clone(), seen.clone());
            async move {
                let trace = request.trace().ok_or_else(|| Reject::new("no traceparent"))?;
                assert_eq!(
                    switchboard::trace::current(),
                    Some(trace),
                    "the handler's context is its request's"
                );
                seen.lock().unwrap().push((name, trace));
                if let Some(next) = next {
                    caller.call(next, Bytes::new()).await.map_err(|err| Reject::new(err.to_string()))?;
                    // What a handler sends one way carries the trace too.
                    caller
                        .publish("traced.event", "from B")
                        .await
                        .map_err(|err| Reject::new(err.to_string()))?;
                    caller
                        .queue("traced")
                        .unwrap()
                        .put("job from B")
                        .await
                        .map_err(|err| Reject::new(err.to_string()))?;
                }
                Ok(Bytes::new())
            }
        })
        .start()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_id_follows_a_chain_of_calls_and_what_it_sends() {
    let daemon = Daemon::start();
    let seen: Seen = Arc::default();
    let (a, b, c) = (daemon.bus().await, daemon.bus().await, daemon.bus().await);
    let _a = hop(&a, "a", "A", Some("b.go"), &seen).await;
    let _b = hop(&b, "b", "B", Some("c.go"), &seen).await;
    let _c = hop(&c, "c", "C", None, &seen).await;
    let watcher = daemon.bus().await;
    let mut events = watcher.subscribe("traced.>").await.unwrap();
    let mut jobs = watcher.queue("traced").unwrap().consume(8).await.unwrap();

    let client = daemon.bus().await;
    client.call("a.go", Bytes::new()).await.unwrap();
    let seen = seen.lock().unwrap().clone();
    let names: Vec<&str> = seen.iter().map(|(name, _)| *name).collect();
    assert_eq!(names, ["A", "B", "C"], "each handler records before it calls the next");
    let trace_id = seen[0].1.trace_id;
    assert!(seen.iter().all(|(_, t)| t.trace_id == trace_id), "one trace id: {seen:?}");
    let spans: std::collections::BTreeSet<[u8; 8]> = seen.iter().map(|(_, t)| t.parent_id).collect();
    assert_eq!(spans.len(), 3, "a new span at each hop: {seen:?}");

    // A and B each published and put a job from their handler: the same trace.
    let within = Duration::from_secs(5);
    let traced = |headers: &Headers| TraceParent::parse(headers.get(TRACEPARENT).unwrap()).unwrap().trace_id;
    let published = loop {
        match tokio::time::timeout(within, events.next()).await.unwrap().unwrap() {
            Item::Message(message) => break message,
            Item::Lagged(_) => continue,
        }
    };
    assert_eq!(traced(&published.headers), trace_id);
    let job = tokio::time::timeout(within, jobs.next()).await.unwrap().unwrap();
    assert_eq!(traced(&job.headers), trace_id);

    // A caller that sets its own traceparent keeps it (and the chain joins it).
    let own = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let options =
        CallOptions { headers: Headers::from_pairs([(TRACEPARENT, own)]).unwrap(), ..CallOptions::default() };
    let d = daemon.bus().await;
    let recorded: Seen = Arc::default();
    let _d = hop(&d, "d", "D", None, &recorded).await;
    client.call_with("d.go", Bytes::new(), options).await.unwrap();
    assert_eq!(recorded.lock().unwrap()[0].1.to_string(), own);
    // Calls outside any request each start a trace of their own.
    client.call("d.go", Bytes::new()).await.unwrap();
    client.call("d.go", Bytes::new()).await.unwrap();
    let recorded = recorded.lock().unwrap().clone();
    assert_ne!(recorded[1].1.trace_id, recorded[2].1.trace_id);

    // Turned off for the process (SWITCHBOARD_TRACE=0 does the same), calls
    // outside any request carry none; a caller's own still travels.
    switchboard::trace::set_enabled(false);
    let err = client.call("d.go", Bytes::new()).await.unwrap_err();
    assert!(matches!(&err, switchboard::CallError::Rejected(why) if why == "no traceparent"), "{err}");
    let options =
        CallOptions { headers: Headers::from_pairs([(TRACEPARENT, own)]).unwrap(), ..CallOptions::default() };
    client.call_with("d.go", Bytes::new(), options).await.unwrap();
    switchboard::trace::set_enabled(true);
}

/// The acceptance's "the same in all three handlers and in the logs": a
/// caller (the CLI, which prints the trace id) → a library handler → a
/// supervised service that logs a structured event while serving; the
/// handler's trace id and the logged one are the caller's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trace_id_a_caller_prints_is_the_one_the_handlers_see_and_log() {
    let s = support::supervised::supervise(&support::supervised::bus_aware_cache(0));
    s.wait_state("cache", "Running", std::time::Duration::from_secs(20));
    let front = s.daemon.bus().await;
    let seen: Seen = Arc::default();
    let _front = hop(&front, "front", "front", Some("cache.note"), &seen).await;
    let mut command = s.daemon.cli(&["call", "front.go", "--trace", "--json"]);
    let out = tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap();
    assert!(out.status.success(), "{out:?}");
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let trace_id = printed["trace_id"].as_str().unwrap().to_owned();
    assert_eq!(seen.lock().unwrap()[0].1.trace_id_hex(), trace_id, "the front handler's");
    let logged = format!("noted trace_id={trace_id}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !s.logs("cache").iter().any(|line| line.stream == "event" && line.line == logged) {
        assert!(std::time::Instant::now() < deadline, "no {logged:?} in {:#?}", s.logs("cache"));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

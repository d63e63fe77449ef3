//! `switchboard reexec` (and SIGUSR2): the daemon re-executes itself with
//! its services running on — same pids, output still captured — while a
//! caller, a subscriber, a producer and a consumer keep working through the
//! swap; and the refusals that leave the running daemon untouched.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use support::{Daemon, BIN};
use switchboard::{Bus, CallError, CallOptions, Item, PutOptions};
use switchboard_proto::supervision::ServiceStatus;

fn config(dir: &std::path::Path) -> std::path::PathBuf {
    let root = if rustix::process::geteuid().is_root() { "run_as_root = true\n" } else { "" };
    let bus_aware = std::path::Path::new(BIN).parent().unwrap().join("examples/bus_aware");
    let bus_aware = bus_aware.display();
    let text = format!(
        r#"
[services.cache]
command = "{bus_aware}"
ready = "bus"
{root}
[services.ticker]
command = "sh"
args = ["-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.05; done"]
{root}
[services.sleeper]
command = "sleep"
args = ["600"]
instances = 2
{root}"#
    );
    let path = dir.join("services.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Every instance's pid once all are Running, by (service, instance).
fn running_pids(daemon: &Daemon) -> BTreeMap<(String, u32), u32> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = daemon.cli(&["status", "--json"]).output().unwrap();
        let all: Vec<ServiceStatus> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let pids: BTreeMap<(String, u32), u32> = all
            .iter()
            .flat_map(|s| {
                s.instances.iter().map(move |i| ((s.service.clone(), i.instance), (i.state.clone(), i.pid)))
            })
            .filter_map(|(key, (state, pid))| (state == "Running").then_some((key, pid?)))
            .collect();
        if pids.len() == 4 {
            return pids;
        }
        assert!(Instant::now() < deadline, "not all running: {all:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn reexec(daemon: &Daemon) -> serde_json::Value {
    let out = daemon.cli(&["reexec", "--json", "--timeout", "20s"]).output().unwrap();
    assert!(
        out.status.success(),
        "reexec failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        daemon.log()
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Calls `cache.get` until told to stop; returns (answered, typed failures).
async fn caller(bus: Bus, stop: Arc<AtomicBool>) -> (u32, Vec<CallError>) {
    let (mut answered, mut failures) = (0, Vec::new());
    while !stop.load(Ordering::Relaxed) {
        let options = CallOptions::timeout(Duration::from_secs(5));
        match bus.call_with("cache.get", Bytes::new(), options).await {
            Ok(_) => answered += 1,
            Err(err) => {
                failures.push(err);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    (answered, failures)
}

/// Puts numbered messages until told to stop; returns the confirmed ones.
async fn producer(bus: Bus, stop: Arc<AtomicBool>) -> BTreeSet<u32> {
    let queue = bus.queue("jobs").unwrap();
    let (mut confirmed, mut n) = (BTreeSet::new(), 0u32);
    while !stop.load(Ordering::Relaxed) && n < 20_000 {
        let options = PutOptions { id: Some(format!("job-{n}")), ..PutOptions::default() };
        match queue.put_with(n.to_string(), options).await {
            Ok(_) => {
                confirmed.insert(n);
                n += 1;
            }
            // Not confirmed: the same id again (deduplicated if it did land).
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
    confirmed
}

/// What a subscriber to `events.>` received, and whether a probe came.
struct Subscriber {
    received: Arc<Mutex<BTreeSet<String>>>,
    probed: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

async fn subscriber(bus: Bus) -> Subscriber {
    let mut subscription = bus.subscribe("events.>").await.unwrap();
    let (received, probed) = (Arc::new(Mutex::new(BTreeSet::new())), Arc::new(AtomicBool::new(false)));
    let (into, probe) = (received.clone(), probed.clone());
    let task = tokio::spawn(async move {
        let _bus = bus;
        while let Some(item) = subscription.next().await {
            let Item::Message(message) = item else { continue };
            if message.topic.as_str() == "events.probe" {
                probe.store(true, Ordering::Relaxed);
            } else {
                into.lock().unwrap().insert(String::from_utf8_lossy(&message.payload).into_owned());
            }
        }
    });
    Subscriber { received, probed, task }
}

/// Consumes `jobs`, acking each; returns what it saw.
async fn consumer(bus: Bus) -> (Arc<Mutex<BTreeSet<u32>>>, tokio::task::JoinHandle<()>) {
    let consumed = Arc::new(Mutex::new(BTreeSet::new()));
    let mut consumer = bus.queue("jobs").unwrap().consume(64).await.unwrap();
    let into = consumed.clone();
    let task = tokio::spawn(async move {
        let _bus = bus;
        while let Some(delivery) = consumer.next().await {
            into.lock().unwrap().insert(String::from_utf8_lossy(&delivery.payload).parse::<u32>().unwrap());
            // An ack that meets the swap fails; the message comes again.
            let _ = delivery.ack().await;
        }
    });
    (consumed, task)
}

/// Waits until `check` holds, failing with `what` after 20 s.
async fn within_20s(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_keep_their_pids_and_clients_lose_nothing_across_a_reexec() {
    let dir = tempfile::tempdir().unwrap();
    let services = config(dir.path());
    let daemon = Daemon::start_with(&["--config", services.to_str().unwrap()]);
    let before = running_pids(&daemon);
    let events = subscriber(daemon.bus().await).await;
    let (consumed, consuming) = consumer(daemon.bus().await).await;
    let stop = Arc::new(AtomicBool::new(false));
    let calls = tokio::spawn(caller(daemon.bus().await, stop.clone()));
    let puts = tokio::spawn(producer(daemon.bus().await, stop.clone()));

    // A burst the subscriber has not read yet when the swap begins: the old
    // daemon delivers what it routed before saying goodbye.
    let publisher = daemon.bus().await;
    for n in 0..2000 {
        publisher.publish("events.before", n.to_string()).await.unwrap();
    }
    publisher.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cli = daemon.cli(&["reexec", "--json", "--timeout", "20s"]);
    let outcome = tokio::task::spawn_blocking(move || { cli }.output().unwrap()).await.unwrap();
    assert!(outcome.status.success(), "{}\n{}", String::from_utf8_lossy(&outcome.stderr), daemon.log());
    let outcome: serde_json::Value = serde_json::from_slice(&outcome.stdout).unwrap();
    assert_eq!(outcome["pid"], daemon.pid(), "the same process, re-executed");
    assert_eq!(outcome["generation"], 1);

    // Once the subscriber is subscribed again, what is published reaches it.
    within_20s("the subscriber never came back", async || {
        let _ = publisher.publish("events.probe", "?").await;
        events.probed.load(Ordering::Relaxed)
    })
    .await;
    for n in 0..500 {
        publisher.publish("events.after", format!("a{n}")).await.unwrap();
    }
    publisher.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let (answered, failures) = calls.await.unwrap();
    let confirmed = puts.await.unwrap();

    assert_eq!(running_pids(&daemon), before, "every service kept its process");
    // Calls during the swap failed with what a caller can act on, if at all;
    // never `no_such_service`: calls wait (held) until the service is back.
    let expected = |f: &CallError| {
        matches!(f, CallError::ShuttingDown | CallError::ConnectionLost | CallError::InstanceGone(_))
    };
    assert!(failures.iter().all(expected), "unexpected failures during the swap: {failures:?}");
    assert!(answered > 10, "the caller got {answered} answers ({} failures)", failures.len());
    let got = events.received.lock().unwrap().clone();
    let published = (0..2000).map(|n| n.to_string()).chain((0..500).map(|n| format!("a{n}")));
    let missing: Vec<String> = published.filter(|m| !got.contains(m)).collect();
    assert!(missing.is_empty(), "{} published messages never arrived: {:?}…", missing.len(), missing.first());
    // Every confirmed put is consumed (a redelivery is fine, a loss is not).
    assert!(confirmed.len() > 10, "only {} puts confirmed", confirmed.len());
    within_20s("confirmed messages were never consumed", async || {
        confirmed.difference(&consumed.lock().unwrap()).next().is_none()
    })
    .await;
    eprintln!("answered {answered}, failed {failures:?}, confirmed puts {}", confirmed.len());

    // Output is still captured from the same ticker process, and the log says
    // it was taken over.
    let ticker = before[&("ticker".to_owned(), 1)];
    let logs = daemon.cli(&["logs", "ticker", "-n", "400"]).output().unwrap();
    let logs = String::from_utf8_lossy(&logs.stdout);
    let (_, after) = logs.split_once("taken over by the new daemon process").expect(&logs);
    assert!(after.contains("stdout: tick"), "no output captured after the swap:\n{logs}");
    assert!(logs.contains(&format!("(pid {ticker} runs on)")), "{logs}");

    // The bus-aware service attached again: controls still reach it.
    let status = |service: &str| -> ServiceStatus {
        let out = daemon.cli(&["status", service, "--json"]).output().unwrap();
        serde_json::from_slice::<Vec<ServiceStatus>>(&out.stdout).unwrap().pop().unwrap()
    };
    assert!(support::eventually(Duration::from_secs(10), || status("cache").instances[0].bus_aware).await);
    let paused = daemon.cli(&["pause", "cache"]).output().unwrap();
    assert!(paused.status.success(), "{}", String::from_utf8_lossy(&paused.stderr));
    assert_eq!(status("cache").state, "Paused");
    assert!(daemon.cli(&["continue", "cache"]).output().unwrap().status.success());

    // SIGUSR2 does the same, without a client waiting.
    daemon.signal(rustix::process::Signal::USR2);
    within_20s("SIGUSR2 did not re-execute", async || {
        let Ok(bus) = Bus::connect(&daemon.addr).await else { return false };
        bus.daemon_info().await.is_ok_and(|info| info.generation == 2)
    })
    .await;
    assert_eq!(running_pids(&daemon), before);
    events.task.abort();
    consuming.abort();
}

#[test]
fn a_reexec_that_cannot_work_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let services = config(dir.path());
    let daemon = Daemon::start_with(&["--config", services.to_str().unwrap(), "--threads", "2"]);
    let before = running_pids(&daemon);
    let out = daemon.cli(&["reexec"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--threads 1"), "{stderr}");
    assert_eq!(running_pids(&daemon), before);
    drop(daemon);

    // A config file the successor would refuse: named, and nothing happens.
    // (This daemon also listens on loopback TCP, which the successor keeps.)
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let tcp = format!("tcp://127.0.0.1:{port}");
    let daemon =
        Daemon::start_with(&["--config", services.to_str().unwrap(), "--listen", &tcp, "--allow-plain-tcp"]);
    let before = running_pids(&daemon);
    let text = std::fs::read_to_string(&services).unwrap();
    std::fs::write(&services, format!("{text}\n[services.broken]\ncommand = \"/no/such/program\"\n"))
        .unwrap();
    let out = daemon.cli(&["reexec"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("successor would refuse the config file") && stderr.contains("/no/such/program"),
        "{stderr}"
    );
    assert_eq!(running_pids(&daemon), before);
    let info = daemon.cli(&["ls", "--json"]).output().unwrap();
    assert!(info.status.success());
    std::fs::write(&services, text).unwrap();
    assert_eq!(reexec(&daemon)["generation"], 1);
    assert_eq!(running_pids(&daemon), before);
    // The TCP socket carried over: a client still gets in (as `anonymous`).
    let over_tcp = daemon.cli(&["whoami", "--addr", &tcp]).output().unwrap();
    assert!(over_tcp.status.success(), "{}", String::from_utf8_lossy(&over_tcp.stderr));
    assert!(String::from_utf8_lossy(&over_tcp.stdout).contains("anonymous"));
}

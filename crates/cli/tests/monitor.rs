//! `switchboard monitor` against the real daemon: it prints the calls,
//! notifications, broadcasts and publications its pattern matches, and only
//! those; while it runs, direct channels to the services it watches are
//! withdrawn, so calls that went direct show up too; it needs `admin`.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod support;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::{Daemon, Guard};
use switchboard::{Bus, CallError, MonitorEvent};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_shows_what_its_pattern_matches_and_no_call_bypasses_it() {
    let daemon = Daemon::start();
    let _shop = Guard(daemon.responder(&["shop.echo", "--echo", "-q"]));
    let _other = Guard(daemon.responder(&["other.echo", "--echo", "-q"]));
    let caller = daemon.bus().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while caller.direct_instance("shop").is_none() {
        caller.call("shop.echo", "warm").await.unwrap();
        assert!(Instant::now() < deadline, "no direct channel to shop");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let mut monitor = Guard(
        daemon
            .cli(&["monitor", "shop.>", "--json", "--count", "10"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut said = BufReader::new(monitor.0.stderr.take().unwrap()).lines();
    assert!(said.next().unwrap().unwrap().starts_with("monitoring shop.>"));
    // The direct channel is withdrawn: the calls go through the daemon.
    let deadline = Instant::now() + Duration::from_secs(10);
    while caller.direct_instance("shop").is_some() {
        assert!(Instant::now() < deadline, "the direct channel to shop was not withdrawn");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for n in 0..5 {
        caller.call("shop.echo", format!("c{n}")).await.unwrap();
        caller.call("other.echo", "unwatched").await.unwrap();
    }
    assert_eq!(caller.direct_instance("shop"), None, "no new direct channel while monitored");
    for _ in 0..2 {
        caller.notify("shop.echo", "n").await.unwrap();
    }
    for n in 0..3 {
        caller.publish("shop.events", format!("p{n}")).await.unwrap();
        caller.publish("other.events", "unwatched").await.unwrap();
    }

    let stdout = monitor.0.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout).lines().map(|line| line.unwrap()).collect::<Vec<String>>()
    })
    .await
    .unwrap();
    let events: Vec<MonitorEvent> = lines.iter().map(|line| serde_json::from_str(line).unwrap()).collect();
    let seen: Vec<(&str, &str)> = events.iter().map(|e| (e.kind.as_str(), e.target.as_str())).collect();
    assert_eq!(seen.iter().filter(|s| **s == ("call", "shop.echo")).count(), 5, "{seen:?}");
    assert_eq!(seen.iter().filter(|s| **s == ("notify", "shop.echo")).count(), 2, "{seen:?}");
    assert_eq!(seen.iter().filter(|s| **s == ("publish", "shop.events")).count(), 3, "{seen:?}");
    assert_eq!(events.len(), 10, "nothing the pattern does not match: {seen:?}");
    let me = caller.whoami().await.unwrap();
    for event in &events {
        assert_eq!((event.session, event.principal.as_str()), (me.session, me.principal.as_str()));
        assert_eq!(event.trace_id.len(), 32, "each carries its trace id: {event:?}");
    }
    assert!(events.iter().filter(|e| e.kind == "call").all(|e| e.instance != 0 && e.bytes == 2));
    assert!(support::wait_exit(&mut monitor.0, Duration::from_secs(5)).is_some_and(|s| s.success()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitoring_needs_the_admin_permission() {
    let token = "watcher-token-0123456789abcdef";
    let (daemon, _work) = Daemon::start_with_config(&format!("[security]\ntokens = {{ watcher = \"{token}\" }}\n[[policy]]\nprincipal = \"token:watcher\"\nallow = [\"metrics\"]\n"), &[]);
    let watcher = Bus::connect_with_token(&daemon.addr, token).await.unwrap();
    let err = watcher.monitor(">", 16).await.unwrap_err();
    assert!(matches!(&err, CallError::PermissionDenied(why) if why.contains("admin")), "{err}");
    let own = daemon.bus().await;
    let err = own.monitor("not a pattern", 16).await.unwrap_err();
    assert!(matches!(err, CallError::BadArguments(_)), "{err}");
    assert!(own.monitor(">", 16).await.is_ok());
}

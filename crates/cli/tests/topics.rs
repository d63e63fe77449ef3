//! Publish/subscribe end to end: wildcards, retained values, headers and
//! publisher identity, and slow subscribers that lose messages visibly.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod support;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use rustix::process::Signal;
use support::{Daemon, Guard};
use switchboard::{Headers, Item, PublishOptions, Subscription, Topic, TopicPattern};

async fn next_message(sub: &mut Subscription) -> switchboard::Message {
    match tokio::time::timeout(Duration::from_secs(5), sub.next()).await {
        Ok(Some(Item::Message(m))) => m,
        other => panic!("expected a message, got {other:?}"),
    }
}

async fn nothing_more(sub: &mut Subscription) {
    let extra = tokio::time::timeout(Duration::from_millis(200), sub.next()).await;
    assert!(extra.is_err(), "unexpected item: {extra:?}");
}

#[tokio::test]
async fn wildcards_route_to_the_right_subscribers() {
    let daemon = Daemon::start();
    let bus = daemon.bus().await;
    let mut one = bus.subscribe("orders.*").await.unwrap();
    let mut rest = bus.subscribe("orders.>").await.unwrap();
    let mut exact = bus.subscribe("orders.eu.created").await.unwrap();
    let publisher = daemon.bus().await;
    for topic in ["orders.created", "orders.eu.created", "invoices.created", "orders"] {
        publisher.publish(topic, topic.to_owned()).await.unwrap();
    }
    assert_eq!(next_message(&mut one).await.topic.as_str(), "orders.created");
    assert_eq!(next_message(&mut rest).await.topic.as_str(), "orders.created");
    assert_eq!(next_message(&mut rest).await.topic.as_str(), "orders.eu.created");
    assert_eq!(next_message(&mut exact).await.topic.as_str(), "orders.eu.created");
    nothing_more(&mut one).await;
    nothing_more(&mut rest).await;
    nothing_more(&mut exact).await;
}

#[tokio::test]
async fn a_late_subscriber_gets_the_retained_value_first() {
    let daemon = Daemon::start();
    let publisher = daemon.bus().await;
    let retain = PublishOptions { retain: true, ..Default::default() };
    let topic = Topic::parse("db.primary").unwrap();
    publisher.publish_with(topic.clone(), "host-a", retain.clone()).await.unwrap();
    publisher.publish_with(topic.clone(), "host-b", retain.clone()).await.unwrap();
    publisher.publish("db.replica", "not retained").await.unwrap();

    let late = daemon.bus().await;
    let mut sub = late.subscribe("db.*").await.unwrap();
    let first = next_message(&mut sub).await;
    assert_eq!(
        (first.topic.as_str(), &first.payload[..], first.retained),
        ("db.primary", &b"host-b"[..], true)
    );
    nothing_more(&mut sub).await;
    // Live messages follow, marked as such.
    publisher.publish("db.primary", "host-c").await.unwrap();
    let live = next_message(&mut sub).await;
    assert_eq!((&live.payload[..], live.retained), (&b"host-c"[..], false));

    // An empty retained publication clears the value.
    publisher.publish_with(topic, "", retain).await.unwrap();
    let mut later = late.subscribe("db.primary").await.unwrap();
    nothing_more(&mut later).await;
}

#[tokio::test]
async fn headers_and_the_verified_publisher_travel_with_messages_and_calls() {
    let daemon = Daemon::start();
    let bus = daemon.bus().await;
    let mut sub = bus.subscribe("audit.>").await.unwrap();
    let headers = Headers::from_pairs([("trace-id", "t-42"), ("lang", "fr")]).unwrap();
    let options = PublishOptions { retain: false, headers: headers.clone() };
    bus.publish_with(Topic::parse("audit.login").unwrap(), "x", options).await.unwrap();
    let message = next_message(&mut sub).await;
    assert_eq!(message.headers.get("trace-id"), Some("t-42"));
    assert_eq!(message.publisher.pid, std::process::id());

    let _svc = bus
        .serve("who")
        .unwrap()
        .method("asked", |req| async move {
            let trace = req.headers.get("trace-id").unwrap_or("none").to_owned();
            Ok(switchboard::encode(&format!("{trace} from {}", req.caller.pid)).unwrap())
        })
        .start()
        .await
        .unwrap();
    // From another process: the CLI, whose pid the callee must see.
    // Off the runtime's thread: this process is also the callee.
    let mut cli = daemon.cli(&["call", "who.asked", "-H", "trace-id=t-7"]);
    let out = tokio::task::spawn_blocking(move || cli.output()).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("\"t-7 from "), "{text}");
    assert!(
        !text.contains(&format!("from {}\"", std::process::id())),
        "caller must be the CLI process: {text}"
    );
}

#[tokio::test]
async fn a_stalled_subscriber_loses_messages_visibly_and_does_not_stall_the_publisher() {
    let daemon = Daemon::start();
    // A subscriber in another process, frozen with SIGSTOP while we publish.
    let mut child = daemon
        .cli(&["sub", "load.>", "--json"])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(daemon.dir.path().join("sub.err")).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let child = Guard(child);
    // And one that keeps up, in this process.
    let fast_bus = daemon.bus().await;
    let mut fast = fast_bus.subscribe_with(TopicPattern::parse("load.>").unwrap(), 1_000_000).await.unwrap();
    let bus = daemon.bus().await;
    // Wait until the CLI subscriber is registered with the daemon.
    for _ in 0..100 {
        if bus.topics().await.unwrap().subscriptions.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    support::signal_pid(child.0.id(), Signal::STOP);

    const TOTAL: u64 = 60_000;
    let payload = bytes::Bytes::from(vec![b'x'; 64]);
    let publish = async {
        for _ in 0..TOTAL {
            bus.publish("load.tick", payload.clone()).await.unwrap();
        }
    };
    // The publisher finishes while a subscriber is frozen (a hang guard, not a timing).
    tokio::time::timeout(Duration::from_secs(60), publish).await.expect("publisher was blocked");

    // The fast subscriber got everything (or was told what it missed).
    let (mut got, mut missed) = (0u64, 0u64);
    while got + missed < TOTAL {
        match tokio::time::timeout(Duration::from_secs(10), fast.next()).await.unwrap().unwrap() {
            Item::Message(_) => got += 1,
            Item::Lagged(n) => missed += n,
        }
    }
    println!("fast subscriber: {got} received, {missed} missed");

    // The frozen one resumes: every message is either received or reported missed.
    support::signal_pid(child.0.id(), Signal::CONT);
    let counts = tokio::task::spawn_blocking(move || {
        let (mut got, mut missed) = (0u64, 0u64);
        for line in BufReader::new(stdout).lines() {
            let value: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
            match value.get("lagged") {
                Some(n) => missed += n.as_u64().unwrap(),
                None => got += 1,
            }
            if got + missed >= TOTAL {
                break;
            }
        }
        (got, missed)
    });
    let (got, missed) = tokio::time::timeout(Duration::from_secs(60), counts).await.unwrap().unwrap();
    println!("stalled subscriber: {got} received, {missed} missed, of {TOTAL}");
    assert_eq!(got + missed, TOTAL, "a message was lost without being reported");
    assert!(missed > 0, "the stalled subscriber should have lagged");

    // `ls` shows the loss.
    let topics = bus.topics().await.unwrap();
    let stalled = topics.subscriptions.iter().find(|s| s.client == "switchboard-sub").unwrap();
    assert_eq!(stalled.missed, missed);
}

#[tokio::test]
async fn a_subscriber_that_does_not_read_is_told_how_many_it_missed() {
    let daemon = Daemon::start();
    let bus = daemon.bus().await;
    let mut slow = bus.subscribe_with(TopicPattern::parse("tick").unwrap(), 10).await.unwrap();
    let publisher = daemon.bus().await;
    for i in 0..100u32 {
        publisher.publish("tick", i.to_string()).await.unwrap();
    }
    publisher.daemon_info().await.unwrap(); // everything published has been routed
    let mut seen = Vec::new();
    let mut lagged = 0;
    while seen.len() as u64 + lagged < 100 {
        match tokio::time::timeout(Duration::from_secs(5), slow.next()).await.unwrap().unwrap() {
            Item::Message(m) => seen.push(String::from_utf8(m.payload.to_vec()).unwrap()),
            Item::Lagged(n) => lagged += n,
        }
    }
    assert_eq!(lagged, 90);
    assert_eq!(seen.first().map(String::as_str), Some("90"), "the newest are kept");
    // The client reported its drops to the daemon.
    let mut reported = 0;
    for _ in 0..50 {
        reported = bus.topics().await.unwrap().subscriptions[0].missed;
        if reported == 90 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(reported, 90);
}

#[test]
fn pub_and_sub_from_the_cli() {
    let daemon = Daemon::start();
    let out = daemon.cli(&["pub", "config.level", r#"{"level":3}"#, "--retain"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = daemon.cli(&["sub", "config.*", "--count", "1"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), r#"config.level {"level":3}"#);
    let out = daemon.cli(&["pub", "bad.*", "1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("wildcards"));
    let out = daemon.cli(&["ls"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 topics keep a retained value"));
}

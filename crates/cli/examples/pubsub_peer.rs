//! A process at either end of the fan-out tests (`crates/cli/tests/fanout.rs`).
//!
//! - `pubsub_peer subscribe TOPIC EXPECTED`: subscribes, prints `ready`,
//!   receives until EXPECTED messages are received or reported missed (or
//!   nothing comes for 2 s), then prints `received R missed M last_ns NS`.
//! - `pubsub_peer publish TOPIC COUNT SIZE RATE`: prints `ready`, waits for
//!   a line on stdin, publishes COUNT messages of SIZE bytes — at RATE a
//!   second, in 1 ms steps (0: as fast as it can) — makes sure they left,
//!   and prints `published COUNT start_ns NS end_ns NS`.
//!
//! Times are on the system-wide monotonic clock, so both ends compare.
#![forbid(unsafe_code)]

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Context;
use switchboard::{Bus, Bytes, Item, PublishOptions, Topic};

fn now_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

fn ready() -> anyhow::Result<()> {
    println!("ready");
    Ok(std::io::stdout().flush()?)
}

async fn subscribe(bus: &Bus, topic: &str, expected: u64) -> anyhow::Result<()> {
    let mut subscription = bus.subscribe_with(topic.parse()?, 1 << 20).await?;
    ready()?;
    let (mut received, mut missed, mut last_ns) = (0u64, 0u64, 0u64);
    while received + missed < expected {
        match tokio::time::timeout(Duration::from_secs(2), subscription.next()).await {
            Ok(Some(Item::Message(_))) => {
                received += 1;
                last_ns = now_ns();
            }
            Ok(Some(Item::Lagged(n))) => missed += n,
            Ok(None) | Err(_) => break,
        }
    }
    println!("received {received} missed {missed} last_ns {last_ns}");
    Ok(())
}

async fn publish(bus: &Bus, topic: &str, count: u64, size: usize, rate: u64) -> anyhow::Result<()> {
    let topic = Topic::parse(topic)?;
    let payload = Bytes::from(vec![7u8; size]);
    ready()?;
    std::io::stdin().read_line(&mut String::new())?;
    let start_ns = now_ns();
    let started = Instant::now();
    for sent in 0..count {
        if rate > 0 && sent % (rate / 1000).max(1) == 0 {
            // Keep to the schedule: message `sent` is due at sent / rate s.
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        bus.publish_with(topic.clone(), payload.clone(), PublishOptions::default()).await?;
    }
    bus.daemon_info().await?; // everything left this process
    println!("published {count} start_ns {start_ns} end_ns {}", now_ns());
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |index: usize| -> anyhow::Result<u64> {
        args.get(index).context("a number argument")?.parse().context("a number")
    };
    let topic = args.get(1).context("TOPIC")?;
    let bus = Bus::connect_default().await.context("connect")?;
    match args.first().map(String::as_str) {
        Some("subscribe") => subscribe(&bus, topic, number(2)?).await,
        Some("publish") => publish(&bus, topic, number(2)?, number(3)? as usize, number(4)?).await,
        _ => anyhow::bail!("usage: pubsub_peer subscribe TOPIC EXPECTED | publish TOPIC COUNT SIZE RATE"),
    }
}

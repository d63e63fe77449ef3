//! Publish/subscribe workloads: a publisher process, N subscriber
//! processes, and the daemon between them.
//!
//! Throughput: the publisher sends `count` messages as fast as it can; each
//! subscriber counts what it actually receives (and what it is told it
//! missed). Rate = messages received by all subscribers ÷ (last receive −
//! first publish), with both ends timestamped on `CLOCK_MONOTONIC`, which
//! every process shares. Fan-out latency: the publisher paces messages
//! carrying their send time; each subscriber records receive − send.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use switchboard::{Bus, Item, TopicPattern};

use crate::stats::Sample;

const TOPIC: &str = "bench.pubsub";
/// A subscriber that hears nothing for this long after a message has
/// received all it will (a lossy peer never reaches its expected count; the
/// rate is taken up to the last message, so this wait does not count).
const IDLE: Duration = Duration::from_millis(500);
/// How long a subscriber waits for the first message.
const FIRST: Duration = Duration::from_secs(10);

/// How long a subscriber that has `received` messages waits for the next.
pub fn patience(received: u64) -> Duration {
    if received == 0 {
        FIRST
    } else {
        IDLE
    }
}

/// Nanoseconds on the system-wide monotonic clock.
pub fn now_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// What a subscriber process reports.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SubReport {
    pub received: u64,
    pub missed: u64,
    pub last_ns: u64,
    /// Receive − send, in nanoseconds (latency mode only).
    pub latencies_ns: Vec<u64>,
}

/// Child: subscribe, say ready, receive until `expected` are accounted for
/// or the stream goes idle, then print a JSON report.
pub fn subscriber(addr: &str, expected: u64, latency: bool) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let bus = Bus::connect(addr).await?;
        let pattern = TopicPattern::parse(TOPIC)?;
        let mut sub = bus.subscribe_with(pattern, 1 << 20).await?;
        println!("ready");
        std::io::stdout().flush()?;
        let mut report = SubReport::default();
        while report.received + report.missed < expected {
            match tokio::time::timeout(patience(report.received + report.missed), sub.next()).await {
                Ok(Some(Item::Message(m))) => {
                    report.received += 1;
                    report.last_ns = now_ns();
                    if latency {
                        let sent = m
                            .payload
                            .get(..8)
                            .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
                        report.latencies_ns.push(report.last_ns.saturating_sub(sent));
                    }
                }
                Ok(Some(Item::Lagged(n))) => report.missed += n,
                Ok(None) | Err(_) => break,
            }
        }
        println!("{}", serde_json::to_string(&report)?);
        Ok(())
    })
}

/// Child: connect, say ready, wait for a line on stdin, publish `count`
/// messages of `size` bytes (paced `gap_us` apart if non-zero), print the
/// start time.
pub fn publisher(addr: &str, count: u64, size: usize, gap_us: u64) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let bus = Bus::connect(addr).await?;
        println!("ready");
        std::io::stdout().flush()?;
        let mut go = String::new();
        std::io::stdin().read_line(&mut go)?;
        let topic = switchboard::Topic::parse(TOPIC)?;
        let options = switchboard::PublishOptions::default();
        let filler = Bytes::from(vec![7u8; size]);
        let start = now_ns();
        for _ in 0..count {
            let payload = if gap_us > 0 {
                let mut stamped = vec![0u8; size.max(8)];
                stamped[..8].copy_from_slice(&now_ns().to_le_bytes());
                Bytes::from(stamped)
            } else {
                filler.clone()
            };
            bus.publish_with(topic.clone(), payload, options.clone()).await?;
            if gap_us > 0 {
                tokio::time::sleep(Duration::from_micros(gap_us)).await;
            }
        }
        // Make sure everything left this process before reporting.
        bus.daemon_info().await?;
        println!("{start}");
        Ok(())
    })
}

/// A child started by [`spawn_child`], with its output after "ready".
pub type Spawned = (std::process::Child, BufReader<std::process::ChildStdout>);

/// Starts `self ARGS...` with piped stdin and stdout, and waits for its
/// "ready".
pub fn spawn_child(args: &[String]) -> anyhow::Result<Spawned> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut out = BufReader::new(child.stdout.take().context("child stdout")?);
    let mut line = String::new();
    out.read_line(&mut line)?;
    anyhow::ensure!(line.trim() == "ready", "{args:?} did not start: {line:?}");
    Ok((child, out))
}

/// Outcome of one pub/sub run.
pub struct PubSubResult {
    pub sample: Sample,
    pub published: u64,
    pub received: u64,
}

/// Which system a pub/sub run measures.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum System {
    Switchboard,
    Nats,
    Zmq,
}

/// One run: `subscribers` subscriber processes, one publisher process.
pub fn run(
    addr: &str,
    subscribers: usize,
    count: u64,
    size: usize,
    paced_gap_us: u64,
) -> anyhow::Result<PubSubResult> {
    run_on(System::Switchboard, addr, subscribers, count, size, paced_gap_us)
}

/// The same run on `system` (`addr` is its address).
pub fn run_on(
    system: System,
    addr: &str,
    subscribers: usize,
    count: u64,
    size: usize,
    paced_gap_us: u64,
) -> anyhow::Result<PubSubResult> {
    let latency = paced_gap_us > 0;
    let mut subs = Vec::new();
    for _ in 0..subscribers {
        let args = match system {
            System::Switchboard => {
                vec!["child-sb-sub".into(), addr.into(), count.to_string(), latency.to_string()]
            }
            System::Nats => vec!["child-nats-sub".into(), addr.into(), count.to_string()],
            System::Zmq => vec!["child-zmq-sub".into(), addr.into(), count.to_string()],
        };
        subs.push(spawn_child(&args)?);
    }
    let pub_args = match system {
        System::Switchboard => {
            vec![
                "child-sb-pub".into(),
                addr.into(),
                count.to_string(),
                size.to_string(),
                paced_gap_us.to_string(),
            ]
        }
        System::Nats => vec!["child-nats-pub".into(), addr.into(), count.to_string(), size.to_string()],
        System::Zmq => vec!["child-zmq-pub".into(), addr.into(), count.to_string(), size.to_string()],
    };
    let (mut publisher, mut pub_out) = spawn_child(&pub_args)?;
    publisher.stdin.take().context("publisher stdin")?.write_all(b"go\n")?;
    let mut start = String::new();
    pub_out.read_line(&mut start)?;
    let start: u64 = start.trim().parse().context("publisher start time")?;
    let _ = publisher.wait();

    let mut received = 0;
    let mut last = start;
    let mut latencies = Vec::new();
    for (mut child, mut out) in subs {
        let mut line = String::new();
        out.read_line(&mut line)?;
        let report: SubReport = serde_json::from_str(line.trim()).context("subscriber report")?;
        let _ = child.wait();
        received += report.received;
        last = last.max(report.last_ns);
        latencies.extend(report.latencies_ns.into_iter().map(Duration::from_nanos));
    }
    let elapsed = Duration::from_nanos(last.saturating_sub(start)).max(Duration::from_micros(1));
    let mut sample = if latency { Sample::latency(latencies) } else { Sample::rate(0.0) };
    sample.rate = received as f64 / elapsed.as_secs_f64();
    Ok(PubSubResult { sample, published: count * subscribers as u64, received })
}

//! `switchboard-bench blob-fanout`: a 1 MiB publication to 4 subscriber
//! processes as a blob through the daemon, against iceoryx2's
//! publish-subscribe with loaned samples (`--features iceoryx2`, see
//! `peers/iceoryx2.rs`). On both sides the publisher writes all 1 MiB
//! ([`fill`]) and every subscriber checksums all of it ([`checksum`]); the
//! latency of one publication is from the start of the write to the last
//! subscriber's checksum, on `CLOCK_MONOTONIC`, which every process shares.
//! A second figure starts before the publisher gets its buffer (a fresh
//! memory file for a blob, a loan from a mapped pool for iceoryx2).
//! Publications are paced [`GAP`] apart, so none waits for another.

use std::io::{BufRead, Write};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use switchboard::{Bus, Bytes, Item, PublishOptions, Topic, TopicPattern};

use crate::pubsub::{now_ns, spawn_child};
use crate::stats::{median, Sample};

pub const SIZE: usize = 1 << 20;
pub const SUBSCRIBERS: usize = 4;
/// Between two publications: far longer than one takes to be checksummed.
pub const GAP: Duration = Duration::from_millis(10);
const TOPIC: &str = "bench.blob-fanout";
/// Where the stamps sit in a payload: sequence, buffer asked, write started.
const STAMPS: usize = 24;

/// Writes every byte of `buf` (a pattern of `seq`), then the stamps.
pub fn fill(buf: &mut [u8], seq: u64, asked_ns: u64, write_ns: u64) {
    for (i, byte) in buf.iter_mut().enumerate() {
        *byte = pattern(i, seq);
    }
    stamp(buf, seq, asked_ns, write_ns);
}

/// Byte `i` of publication `seq`.
pub fn pattern(i: usize, seq: u64) -> u8 {
    (i as u64 ^ seq) as u8
}

pub fn stamp(buf: &mut [u8], seq: u64, asked_ns: u64, write_ns: u64) {
    for (slot, value) in buf[..STAMPS].chunks_exact_mut(8).zip([seq, asked_ns, write_ns]) {
        slot.copy_from_slice(&value.to_le_bytes());
    }
}

fn stamps(bytes: &[u8]) -> [u64; 3] {
    let mut out = [0; 3];
    for (value, slot) in out.iter_mut().zip(bytes[..STAMPS].chunks_exact(8)) {
        *value = u64::from_le_bytes(slot.try_into().unwrap_or([0; 8]));
    }
    out
}

/// Reads every byte.
pub fn checksum(bytes: &[u8]) -> u64 {
    bytes
        .chunks_exact(8)
        .fold(0u64, |sum, word| sum.rotate_left(1) ^ u64::from_le_bytes(word.try_into().unwrap_or([0; 8])))
}

/// What a subscriber reports: for each publication, (seq, asked, write
/// started, checksummed), and the checksums' xor (so none is optimised away).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Report {
    pub seen: Vec<[u64; 4]>,
    pub sums: u64,
}

impl Report {
    pub fn record(&mut self, payload: &[u8]) {
        let sum = checksum(payload);
        let done = now_ns();
        let [seq, asked, write] = stamps(payload);
        self.sums ^= sum;
        self.seen.push([seq, asked, write, done]);
    }
}

/// Child: subscribe through the daemon at `addr`, say ready, take `count`
/// blobs, print the report.
pub fn sb_subscriber(addr: &str, count: usize) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let bus = Bus::connect(addr).await?;
        let mut subscription = bus.subscribe_with(TopicPattern::parse(TOPIC)?, 64).await?;
        bus.whoami().await?;
        println!("ready");
        std::io::stdout().flush()?;
        let mut report = Report::default();
        while report.seen.len() < count {
            match tokio::time::timeout(Duration::from_secs(10), subscription.next()).await {
                Ok(Some(Item::Message(message))) => report.record(&message.payload),
                Ok(Some(Item::Lagged(_))) => continue,
                Ok(None) | Err(_) => break,
            }
        }
        println!("{}", serde_json::to_string(&report)?);
        Ok(())
    })
}

/// The two latencies of each publication: (from the write, from asking
/// for the buffer), in µs, over every subscriber's report; `Err` if one
/// missed some.
pub fn latencies(reports: &[Report], count: usize) -> anyhow::Result<(Sample, Sample)> {
    let mut last = vec![[0u64; 3]; count];
    for report in reports {
        anyhow::ensure!(report.seen.len() == count, "a subscriber got {} of {count}", report.seen.len());
        for [seq, asked, write, done] in &report.seen {
            let entry = last.get_mut(*seq as usize).context("a sequence out of range")?;
            *entry = [*asked, *write, entry[2].max(*done)];
        }
    }
    let from = |index: usize| {
        Sample::latency(last.iter().map(|t| Duration::from_nanos(t[2].saturating_sub(t[index]))).collect())
    };
    Ok((from(1), from(0)))
}

/// Starts `SUBSCRIBERS` children with `args` and waits for their ready.
pub fn subscribers(args: &[String]) -> anyhow::Result<Vec<crate::pubsub::Spawned>> {
    (0..SUBSCRIBERS).map(|_| spawn_child(args)).collect()
}

/// Collects every subscriber's report.
pub fn reports(children: Vec<crate::pubsub::Spawned>) -> anyhow::Result<Vec<Report>> {
    let mut reports = Vec::new();
    for (mut child, mut out) in children {
        let mut line = String::new();
        out.read_line(&mut line)?;
        let _ = child.wait();
        reports.push(serde_json::from_str(&line).with_context(|| format!("a subscriber said {line:?}"))?);
    }
    Ok(reports)
}

/// One run through the daemon at `addr`: the two latency samples.
fn through_switchboard(addr: &str, count: usize) -> anyhow::Result<(Sample, Sample)> {
    let args: Vec<String> = ["child-blob-sub", addr, &count.to_string()].map(str::to_owned).to_vec();
    let children = subscribers(&args)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let bus = Bus::connect(addr).await?;
        let topic = Topic::parse(TOPIC)?;
        for seq in 0..count as u64 {
            let asked = now_ns();
            let mut blob = bus.blob(SIZE)?;
            fill(&mut blob, seq, asked, now_ns());
            bus.publish_with(topic.clone(), Bytes::from(blob.seal()?), PublishOptions::default()).await?;
            tokio::time::sleep(GAP).await;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    latencies(&reports(children)?, count)
}

pub fn run(repeats: usize, quick: bool) -> anyhow::Result<()> {
    let count = if quick { 20 } else { 300 };
    let dir = std::env::temp_dir().join(format!("switchboard-bench-blob-fanout-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let socket = dir.join("bus.sock");
    let data = dir.join("data");
    let path = |p: &std::path::Path| p.to_str().unwrap_or_default().to_owned();
    let daemon = crate::children::spawn(&["child-daemon", &path(&socket), &path(&data)])?;
    let addr = format!("unix:{}", socket.display());
    // Per side: the samples from the write, and from asking for the buffer.
    let (mut ours, mut theirs): ([Vec<Sample>; 2], [Vec<Sample>; 2]) = Default::default();
    for _ in 0..repeats {
        let (write, asked) = through_switchboard(&addr, count)?;
        ours[0].push(write);
        ours[1].push(asked);
        if let Some((write, asked)) = crate::peers::iceoryx2::run(count)? {
            theirs[0].push(write);
            theirs[1].push(asked);
        }
    }
    drop(daemon);
    let _ = std::fs::remove_dir_all(&dir);
    let p50 = |samples: &[Sample]| median(&mut samples.iter().map(|s| s.p50_us).collect::<Vec<_>>());
    let p99 = |samples: &[Sample]| median(&mut samples.iter().map(|s| s.p99_us).collect::<Vec<_>>());
    println!(
        "1 MiB to {SUBSCRIBERS} subscriber processes, written and checksummed whole: {count} publications {GAP:?} apart, median of {repeats} runs"
    );
    println!("{:<58} {:>10} {:>10}", "case (latency to the last checksum)", "p50 µs", "p99 µs");
    let mut rows = vec![
        ("blob through the daemon, from the start of the write", &ours[0]),
        ("blob through the daemon, from asking for the buffer", &ours[1]),
    ];
    if !theirs[0].is_empty() {
        rows.push(("iceoryx2 loaned sample, from the start of the write", &theirs[0]));
        rows.push(("iceoryx2 loaned sample, from asking for the buffer", &theirs[1]));
    }
    for (name, samples) in rows {
        println!("{name:<58} {:>10.1} {:>10.1}", p50(samples), p99(samples));
    }
    if theirs[0].is_empty() {
        println!("iceoryx2: not built (cargo run --release -p switchboard-bench --features iceoryx2 -- blob-fanout)");
    } else {
        println!(
            "blob ÷ iceoryx2 p50, from the write: {:.2} (goal ≤ 1.5); from asking for the buffer: {:.2}",
            p50(&ours[0]) / p50(&theirs[0]),
            p50(&ours[1]) / p50(&theirs[1])
        );
    }
    Ok(())
}

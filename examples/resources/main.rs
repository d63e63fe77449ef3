//! A resource monitor: publishes this machine's memory and load every
//! second on `sys.resources` (retained, so a newcomer sees the latest at
//! once) and answers `resources.current` calls.
//!
//! ```text
//! resources            # demo: monitor, a watcher printing 3 updates, and a call
//! resources monitor    # publish and serve until Ctrl-C
//! resources watch      # print updates as they come
//! ```
#![forbid(unsafe_code)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use switchboard::{contract, Bus, Item, PublishOptions, Reject, Topic};

const USAGE: &str = "usage: resources [demo | monitor | watch]";
const TOPIC: &str = "sys.resources";

/// One reading of the machine.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    pub mem_total_kib: u64,
    pub mem_available_kib: u64,
    pub load1: f64,
    pub load5: f64,
    pub load15: f64,
    pub taken_at_ms: u64,
}

#[contract(service = "resources")]
pub trait Resources {
    /// This machine's memory and load right now.
    async fn current(&self) -> Result<Snapshot, Reject>;
}

fn meminfo_kib(meminfo: &str, key: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Reads /proc (Linux).
fn read_snapshot() -> Result<Snapshot, Reject> {
    let meminfo =
        std::fs::read_to_string("/proc/meminfo").map_err(|e| Reject::new(format!("/proc/meminfo: {e}")))?;
    let loadavg =
        std::fs::read_to_string("/proc/loadavg").map_err(|e| Reject::new(format!("/proc/loadavg: {e}")))?;
    let mut loads = loadavg.split_whitespace().map(|v| v.parse::<f64>().unwrap_or(f64::NAN));
    let taken_at_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    Ok(Snapshot {
        mem_total_kib: meminfo_kib(&meminfo, "MemTotal:").unwrap_or(0),
        mem_available_kib: meminfo_kib(&meminfo, "MemAvailable:").unwrap_or(0),
        load1: loads.next().unwrap_or(f64::NAN),
        load5: loads.next().unwrap_or(f64::NAN),
        load15: loads.next().unwrap_or(f64::NAN),
        taken_at_ms,
    })
}

struct Monitor;

impl Resources for Monitor {
    async fn current(&self) -> Result<Snapshot, Reject> {
        read_snapshot()
    }
}

/// Serves `resources.current` and publishes a snapshot every `interval`.
async fn monitor(
    bus: &Bus,
    interval: Duration,
) -> anyhow::Result<(switchboard::Service, tokio::task::JoinHandle<()>)> {
    let service = ResourcesServer::builder(bus, Monitor).start().await?;
    let publisher = bus.clone();
    let topic = Topic::parse(TOPIC)?;
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            let Ok(snapshot) = read_snapshot() else {
                continue;
            };
            let Ok(payload) = switchboard::encode(&snapshot) else {
                continue;
            };
            let options = PublishOptions { retain: true, ..Default::default() };
            if publisher.publish_with(topic.clone(), payload, options).await.is_err() {
                return;
            }
        }
    });
    Ok((service, task))
}

fn describe(s: &Snapshot) -> String {
    format!(
        "memory {} MiB available of {} MiB, load {:.2} {:.2} {:.2}",
        s.mem_available_kib / 1024,
        s.mem_total_kib / 1024,
        s.load1,
        s.load5,
        s.load15
    )
}

async fn watch(bus: &Bus, count: Option<usize>) -> anyhow::Result<()> {
    let mut updates = bus.subscribe(TOPIC).await?;
    let mut seen = 0;
    while count.is_none_or(|n| seen < n) {
        match updates.next().await {
            Some(Item::Message(m)) => {
                let snapshot: Snapshot = switchboard::decode(&m.payload)?;
                println!("{}: {}", m.topic, describe(&snapshot));
                seen += 1;
            }
            Some(Item::Lagged(n)) => println!("(missed {n} updates)"),
            None => anyhow::bail!("the connection to the daemon closed"),
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let role = switchboard_examples::role(USAGE, &["demo", "monitor", "watch"]);
    let bus = switchboard_examples::connect(&format!("resources-{role}")).await?;
    match role.as_str() {
        "monitor" => {
            let _running = monitor(&bus, Duration::from_secs(1)).await?;
            println!("publishing {TOPIC} every second and serving resources.current (Ctrl-C to stop)");
            switchboard_examples::ready();
            switchboard_examples::until_interrupted().await;
        }
        "watch" => watch(&bus, None).await?,
        _ => {
            let (_service, _task) = monitor(&bus, Duration::from_millis(200)).await?;
            let watcher = switchboard_examples::connect("resources-watch").await?;
            watch(&watcher, Some(3)).await?;
            let now = ResourcesClient::new(&watcher).current().await?;
            println!("resources.current: {}", describe(&now));
        }
    }
    Ok(())
}

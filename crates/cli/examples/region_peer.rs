//! A process at the other end of region tests (`crates/cli/tests/regions.rs`).
//!
//! - `region_peer hold NAME SIZE`: opens region NAME writable (creating it
//!   with SIZE bytes), takes its lock, fills the first half with 0xAA (a
//!   write left half done), prints `locked SEQUENCE` and waits to be killed.
//! - `region_peer watch NAME CHANGES`: opens NAME read-only, prints
//!   `watching SEQUENCE`, then for each of CHANGES announced changes prints
//!   `SEQUENCE FIRST_BYTE UNIFORM` (UNIFORM: every byte of the copy is the
//!   first byte), and exits.
//! - `region_peer escalate NAME`: opens NAME read-only, then tries to reopen
//!   its memory file writable through /proc/self/fd; prints `denied` or
//!   `reopened` (the latter is a hole).
#![forbid(unsafe_code)]

use anyhow::Context;
use switchboard::Bus;

async fn hold(bus: &Bus, name: &str, size: usize) -> anyhow::Result<()> {
    let region = bus.region(name, size).await?;
    let mut guard = region.lock()?;
    let half = guard.len() / 2;
    guard[..half].fill(0xAA);
    println!("locked {}", region.sequence());
    loop {
        std::thread::sleep(std::time::Duration::from_secs(60));
    }
}

async fn watch(bus: &Bus, name: &str, changes: usize) -> anyhow::Result<()> {
    let region = bus.region_reader(name).await?;
    let mut seen = region.sequence() & !1;
    println!("watching {seen}");
    let mut copy = vec![0; region.len()];
    for _ in 0..changes {
        seen = region.changed(seen).await?;
        let sequence = region.read_into(&mut copy)?;
        let first = copy[0];
        println!("{sequence} {first} {}", copy.iter().all(|b| *b == first));
    }
    Ok(())
}

/// Tries to reopen the region's read-only descriptor writable.
async fn escalate(bus: &Bus, name: &str) -> anyhow::Result<()> {
    let _region = bus.region_reader(name).await?;
    let mut found = false;
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let path = entry?.path();
        let is_region = std::fs::read_link(&path)
            .is_ok_and(|target| target.to_string_lossy().contains("switchboard-region"));
        if is_region {
            found = true;
            let writable = std::fs::OpenOptions::new().read(true).write(true).open(&path);
            println!("{}", if writable.is_ok() { "reopened" } else { "denied" });
        }
    }
    anyhow::ensure!(found, "no region descriptor in /proc/self/fd");
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bus = Bus::connect_default().await.context("connect")?;
    let number = |index: usize| -> anyhow::Result<usize> {
        args.get(index).context("a number argument")?.parse().context("a number")
    };
    match args.first().map(String::as_str) {
        Some("hold") => hold(&bus, args.get(1).context("NAME")?, number(2)?).await,
        Some("watch") => watch(&bus, args.get(1).context("NAME")?, number(2)?).await,
        Some("escalate") => escalate(&bus, args.get(1).context("NAME")?).await,
        _ => anyhow::bail!("usage: region_peer hold NAME SIZE | watch NAME CHANGES | escalate NAME"),
    }
}

//! A process at the other end of blob tests (`crates/cli/tests/blobs.rs`).
//!
//! - `blob_peer serve SERVICE`: serves `SERVICE.digest` (answers
//!   `LEN DIGEST BLOB` for the request: its length, digest, and whether it
//!   arrived as a blob) and `SERVICE.make` (the request is a decimal length;
//!   the reply is a blob of that many patterned bytes).
//! - `blob_peer subscribe TOPIC`: prints `subscribed`, then for the first
//!   message on TOPIC `LEN DIGEST DEV INO` (the memory file it arrived in,
//!   `- -` if it came as bytes), and exits.
//! - `blob_peer drain TOPIC`: prints `subscribed FDS` (its open descriptors),
//!   counts messages until one is `end`, then prints `received N lagged M
//!   fds FDS`.
//! - `blob_peer publish TOPIC LEN`: publishes one blob of LEN patterned
//!   bytes, makes sure it left (a round trip), prints `sent DIGEST` and
//!   waits to be killed.
#![forbid(unsafe_code)]

use std::os::fd::AsFd;

use anyhow::Context;
use switchboard::{Blob, Bus, Bytes};

/// The digest both ends compute: a sum of 8-byte words, order-sensitive.
fn digest(bytes: &[u8]) -> u64 {
    bytes.chunks(8).fold(0xcbf2_9ce4_8422_2325u64, |acc, chunk| {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        (acc ^ u64::from_le_bytes(word)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A blob of `len` bytes in a pattern that changes along it.
fn patterned(bus: &Bus, len: usize) -> anyhow::Result<Blob> {
    let mut blob = bus.blob(len)?;
    for (i, chunk) in blob.chunks_mut(4096).enumerate() {
        chunk.fill((i % 251) as u8);
    }
    Ok(blob.seal()?)
}

fn memory_file(payload: &Bytes) -> String {
    match Blob::of(payload) {
        Some(blob) => {
            let stat = rustix::fs::fstat(blob.fd().as_fd()).expect("fstat a blob");
            format!("{} {}", stat.st_dev, stat.st_ino)
        }
        None => "- -".to_owned(),
    }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bus = Bus::connect_default().await?;
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["serve", service] => {
            let maker = bus.clone();
            bus.serve(service)?
                .method("digest", |request| async move {
                    let blob = Blob::of(&request.payload).is_some();
                    let answer = format!("{} {} {blob}", request.payload.len(), digest(&request.payload));
                    Ok(Bytes::from(answer))
                })
                .method("make", move |request| {
                    let bus = maker.clone();
                    async move {
                        let len = std::str::from_utf8(&request.payload).ok().and_then(|t| t.parse().ok());
                        let len =
                            len.ok_or_else(|| switchboard::Reject::bad_arguments("a decimal length"))?;
                        let blob = patterned(&bus, len)
                            .map_err(|e| switchboard::Reject::bad_arguments(e.to_string()))?;
                        Ok(Bytes::from(blob))
                    }
                })
                .start()
                .await?;
            println!("serving");
            std::future::pending::<()>().await;
        }
        ["subscribe", topic] => {
            let mut subscription = bus.subscribe(topic).await?;
            println!("subscribed");
            let message = loop {
                match subscription.next().await.context("the subscription ended")? {
                    switchboard::Item::Message(message) => break message,
                    switchboard::Item::Lagged(_) => continue,
                }
            };
            println!(
                "{} {} {}",
                message.payload.len(),
                digest(&message.payload),
                memory_file(&message.payload)
            );
        }
        ["drain", topic] => {
            let mut subscription = bus.subscribe(topic).await?;
            println!("subscribed {}", open_fds());
            let (mut received, mut lagged) = (0u64, 0u64);
            loop {
                match subscription.next().await.context("the subscription ended")? {
                    switchboard::Item::Message(m) if &m.payload[..] == b"end" => break,
                    switchboard::Item::Message(_) => received += 1,
                    switchboard::Item::Lagged(missed) => lagged += missed,
                }
            }
            println!("received {received} lagged {lagged} fds {}", open_fds());
        }
        ["publish", topic, len] => {
            let blob = patterned(&bus, len.parse()?)?;
            let sum = digest(&blob);
            bus.publish(topic, blob).await?;
            bus.call("$sys.daemon.whoami", Bytes::new()).await?;
            println!("sent {sum}");
            std::future::pending::<()>().await;
        }
        _ => anyhow::bail!("usage: blob_peer serve SERVICE | subscribe TOPIC | publish TOPIC LEN"),
    }
    Ok(())
}

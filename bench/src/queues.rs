//! Durable queue workloads, and the disk they run on.
//!
//! - fsync rate: write 4 KiB + fdatasync in a loop, in the daemon's data
//!   directory — the number every durable system on this disk is bound by.
//! - confirmed puts: 16 producer connections, each keeping 64 puts of 256 B
//!   awaiting confirmation; a put counts once the daemon says it is on disk.
//! - end to end: one producer (64 in flight) and one consumer (prefetch 256)
//!   acking each message; rate of acks, latency from put to delivery.

use std::io::Write;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use switchboard::Bus;

use crate::stats::Sample;

const PRODUCERS: usize = 16;
const IN_FLIGHT: usize = 64;
const PAYLOAD: usize = 256;

/// Writes and syncs 4 KiB blocks in `dir` for about `duration`.
pub fn fsync_rate(dir: &Path, duration: Duration) -> anyhow::Result<Sample> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("fsync-probe");
    let mut file = std::fs::File::create(&path)?;
    let block = [0u8; 4096];
    let started = Instant::now();
    let mut count = 0u64;
    let mut times = Vec::new();
    while started.elapsed() < duration {
        let t = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        times.push(t.elapsed());
        count += 1;
    }
    let elapsed = started.elapsed();
    drop(file);
    let _ = std::fs::remove_file(&path);
    let mut sample = Sample::latency(times);
    sample.rate = count as f64 / elapsed.as_secs_f64();
    Ok(sample)
}

/// Whether `dir` is on a tmpfs (where fsync costs nothing and proves nothing).
pub fn on_tmpfs(dir: &Path) -> bool {
    const TMPFS_MAGIC: u64 = 0x0102_1994;
    rustix::fs::statfs(dir).is_ok_and(|s| s.f_type as u64 == TMPFS_MAGIC)
}

/// `total` confirmed puts from 16 producers × 64 in flight.
pub async fn confirmed_puts(addr: &str, queue: &str, total: usize) -> anyhow::Result<Sample> {
    let payload = Bytes::from(vec![7u8; PAYLOAD]);
    let mut producers = Vec::with_capacity(PRODUCERS);
    for _ in 0..PRODUCERS {
        producers.push(Bus::connect(addr).await?.queue(queue)?);
    }
    let producers = Rc::new(producers);
    let per_task = (total / (PRODUCERS * IN_FLIGHT)).max(1);
    crate::load::closed_loop(PRODUCERS * IN_FLIGHT, per_task, move |task| {
        let (producers, payload) = (producers.clone(), payload.clone());
        async move {
            producers[task % PRODUCERS].put(payload).await?;
            Ok(())
        }
    })
    .await
}

/// `total` messages put (64 in flight) and consumed and acked by one consumer.
pub async fn end_to_end(addr: &str, queue: &str, total: usize) -> anyhow::Result<Sample> {
    let producer = Bus::connect(addr).await?;
    let consumer_bus = Bus::connect(addr).await?;
    let mut consumer = consumer_bus.queue(queue)?.consume(256).await?;
    let handle = Rc::new(producer.queue(queue)?);
    let local = tokio::task::LocalSet::new();
    let started = Instant::now();
    let (total, producers) = crate::load::spawn_producers(&local, total, move |payload| {
        let handle = handle.clone();
        async move { handle.put(payload).await.map(drop).map_err(Into::into) }
    });
    let acker = local.spawn_local(async move {
        let mut latencies = Vec::with_capacity(total);
        let mut acks = tokio::task::JoinSet::new();
        while latencies.len() < total {
            let delivery = tokio::time::timeout(Duration::from_secs(30), consumer.next())
                .await
                .map_err(|_| anyhow::anyhow!("no delivery for 30 s after {} messages", latencies.len()))?
                .ok_or_else(|| anyhow::anyhow!("consumer closed"))?;
            latencies.push(crate::load::since_stamp(&delivery.payload));
            // Acks are pipelined like puts: each returns once it is on disk.
            acks.spawn_local(delivery.ack());
            while acks.len() > 256 {
                acks.join_next().await;
            }
        }
        while acks.join_next().await.is_some() {}
        Ok::<_, anyhow::Error>(latencies)
    });
    let latencies = local
        .run_until(async {
            for task in producers {
                task.await??;
            }
            acker.await?
        })
        .await?;
    let elapsed = started.elapsed();
    let mut sample = Sample::latency(latencies);
    sample.rate = total as f64 / elapsed.as_secs_f64();
    Ok(sample)
}

/// Records per durable commit in the store comparison (what one group
/// commit carries when 64 puts are waiting).
const BATCH: usize = 64;

fn message(id: u64) -> switchboard_daemon::queues::record::StoredMessage {
    switchboard_daemon::queues::record::StoredMessage {
        queue: "compare".into(),
        id,
        priority: 0,
        expires_at_ms: 0,
        put_at_ms: 0,
        attempts: 0,
        dedup_id: String::new(),
        headers: Bytes::new(),
        payload: Bytes::from(vec![7u8; PAYLOAD]),
    }
}

/// The queue store as the daemon uses it: `total` puts, `BATCH` per commit.
pub fn store_segment_log(dir: &Path, total: usize) -> anyhow::Result<Sample> {
    use switchboard_daemon::queues::{record::Record, store::Store};
    let dir = dir.join("compare-log");
    let _ = std::fs::remove_dir_all(&dir);
    let (mut store, _) = Store::open(&dir, 64 * 1024 * 1024)?;
    let started = Instant::now();
    let mut times = Vec::new();
    for batch in 0..(total / BATCH) {
        let records: Vec<Record> =
            (0..BATCH).map(|i| Record::Put(message((batch * BATCH + i) as u64 + 1))).collect();
        let t = Instant::now();
        store.append(&records)?;
        times.push(t.elapsed());
    }
    let elapsed = started.elapsed();
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    let mut sample = Sample::latency(times);
    sample.rate = (total / BATCH * BATCH) as f64 / elapsed.as_secs_f64();
    Ok(sample)
}

/// The same on redb: one write transaction (durability Immediate) per batch.
pub fn store_redb(dir: &Path, total: usize) -> anyhow::Result<Sample> {
    const TABLE: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("messages");
    std::fs::create_dir_all(dir)?;
    let path = dir.join("compare.redb");
    let _ = std::fs::remove_file(&path);
    let db = redb::Database::create(&path)?;
    let payload = vec![7u8; PAYLOAD];
    let started = Instant::now();
    let mut times = Vec::new();
    for batch in 0..(total / BATCH) {
        let t = Instant::now();
        let txn = db.begin_write()?;
        {
            let mut table = txn.open_table(TABLE)?;
            for i in 0..BATCH {
                table.insert((batch * BATCH + i) as u64, payload.as_slice())?;
            }
        }
        txn.commit()?;
        times.push(t.elapsed());
    }
    let elapsed = started.elapsed();
    drop(db);
    let _ = std::fs::remove_file(&path);
    let mut sample = Sample::latency(times);
    sample.rate = (total / BATCH * BATCH) as f64 / elapsed.as_secs_f64();
    Ok(sample)
}

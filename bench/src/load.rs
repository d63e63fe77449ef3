//! Closed-loop load: many tasks, each doing operations one after another,
//! so a fixed number are always in flight. Latencies per operation and the
//! overall rate come back as one [`Sample`].

use std::future::Future;
use std::time::Instant;

use crate::stats::Sample;

/// Runs `tasks` loops of `per_task` operations on one thread; `op(task)`
/// performs one operation for loop number `task`.
pub async fn closed_loop<F, Fut>(tasks: usize, per_task: usize, op: F) -> anyhow::Result<Sample>
where
    F: Fn(usize) -> Fut + Clone + 'static,
    Fut: Future<Output = anyhow::Result<()>> + 'static,
{
    let local = tokio::task::LocalSet::new();
    let started = Instant::now();
    let mut handles = Vec::with_capacity(tasks);
    for task in 0..tasks {
        let op = op.clone();
        handles.push(local.spawn_local(async move {
            let mut latencies = Vec::with_capacity(per_task);
            for _ in 0..per_task {
                let t = Instant::now();
                op(task).await?;
                latencies.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut latencies = Vec::with_capacity(tasks * per_task);
    local
        .run_until(async {
            for handle in handles {
                latencies.extend(handle.await??);
            }
            Ok::<_, anyhow::Error>(())
        })
        .await?;
    let elapsed = started.elapsed();
    let count = latencies.len();
    let mut sample = Sample::latency(latencies);
    sample.rate = count as f64 / elapsed.as_secs_f64();
    Ok(sample)
}

/// Producers in the put → consume → ack cases, each awaiting every put.
pub const PRODUCERS: usize = 64;

/// Starts [`PRODUCERS`] tasks on `local`, each calling `put` with a fresh
/// [`stamped_payload`] `total / PRODUCERS` times, one after another. Returns
/// the number of puts in all (`total` rounded down to whole tasks, at least
/// one each) and the tasks.
pub fn spawn_producers<F, Fut>(
    local: &tokio::task::LocalSet,
    total: usize,
    put: F,
) -> (usize, Vec<tokio::task::JoinHandle<anyhow::Result<()>>>)
where
    F: Fn(Vec<u8>) -> Fut + Clone + 'static,
    Fut: Future<Output = anyhow::Result<()>> + 'static,
{
    let per_task = (total / PRODUCERS).max(1);
    let tasks = (0..PRODUCERS)
        .map(|_| {
            let put = put.clone();
            local.spawn_local(async move {
                for _ in 0..per_task {
                    put(stamped_payload()).await?;
                }
                Ok(())
            })
        })
        .collect();
    (per_task * PRODUCERS, tasks)
}

/// A 256 B payload whose first 8 bytes are the send time (for put → delivery latency).
pub fn stamped_payload() -> Vec<u8> {
    let mut payload = vec![7u8; 256];
    payload[..8].copy_from_slice(&crate::pubsub::now_ns().to_le_bytes());
    payload
}

/// How long ago a [`stamped_payload`] was made.
pub fn since_stamp(payload: &[u8]) -> std::time::Duration {
    let sent = payload.get(..8).and_then(|b| b.try_into().ok()).map_or(0, u64::from_le_bytes);
    std::time::Duration::from_nanos(crate::pubsub::now_ns().saturating_sub(sent))
}

/// The next delivery of a consumer, or an error naming `what` once 30 s
/// pass without one (so a stalled peer fails the run instead of hanging it).
pub async fn next_delivery<S, T, E>(stream: &mut S, what: &str, seen: usize) -> anyhow::Result<T>
where
    S: futures_util::Stream<Item = Result<T, E>> + Unpin,
    E: std::fmt::Display,
{
    use futures_util::StreamExt;
    match tokio::time::timeout(std::time::Duration::from_secs(30), stream.next()).await {
        Err(_) => anyhow::bail!("no {what} delivery for 30 s after {seen}"),
        Ok(None) => anyhow::bail!("the {what} consumer closed"),
        Ok(Some(item)) => item.map_err(|err| anyhow::anyhow!("{what}: {err}")),
    }
}

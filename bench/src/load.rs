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

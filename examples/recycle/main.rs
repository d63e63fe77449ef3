//! A controller tells every instance of a worker service to recycle — stop
//! its work loop and start a fresh one — and learns who answered.
//!
//! ```text
//! recycle              # demo: three workers and a controller, in one process
//! recycle worker NAME  # one worker, until Ctrl-C (run several)
//! recycle controller   # broadcast `recycle` to every worker and print the answers
//! ```
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchboard::{contract, Bus, Reject};
use tokio::task::JoinHandle;

const USAGE: &str = "usage: recycle [demo | worker NAME | controller]";

/// What a worker reports after recycling.
#[derive(Debug, Serialize, Deserialize)]
pub struct Recycled {
    pub worker: String,
    /// The generation of the loop now running.
    pub generation: u32,
    /// Jobs the previous loop finished.
    pub jobs_done: u64,
}

#[contract(service = "worker")]
pub trait Worker {
    /// Stops the current work loop and starts a fresh one.
    async fn recycle(&self, reason: String) -> Result<Recycled, Reject>;
}

/// A worker: a loop doing "jobs", replaced on every recycle.
struct WorkLoop {
    name: String,
    current: Mutex<(u32, Arc<AtomicU64>, JoinHandle<()>)>,
}

fn start_loop(jobs: Arc<AtomicU64>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            jobs.fetch_add(1, Ordering::Relaxed);
        }
    })
}

impl WorkLoop {
    fn new(name: &str) -> Self {
        let jobs = Arc::new(AtomicU64::new(0));
        Self { name: name.to_owned(), current: Mutex::new((1, jobs.clone(), start_loop(jobs))) }
    }
}

impl Worker for WorkLoop {
    async fn recycle(&self, reason: String) -> Result<Recycled, Reject> {
        let jobs = Arc::new(AtomicU64::new(0));
        let mut current = self.current.lock().map_err(|_| Reject::new("worker state poisoned"))?;
        current.2.abort();
        let done = current.1.load(Ordering::Relaxed);
        *current = (current.0 + 1, jobs.clone(), start_loop(jobs));
        println!("worker {}: recycled ({reason}); generation {}", self.name, current.0);
        Ok(Recycled { worker: self.name.clone(), generation: current.0, jobs_done: done })
    }
}

async fn worker(name: &str) -> anyhow::Result<switchboard::Service> {
    let bus = switchboard_examples::connect(&format!("worker-{name}")).await?;
    Ok(WorkerServer::builder(&bus, WorkLoop::new(name)).start().await?)
}

async fn controller(bus: &Bus) -> anyhow::Result<()> {
    let client = WorkerClient::new(bus).with_timeout(Duration::from_secs(5));
    let answers = client.recycle_broadcast("new configuration".to_owned()).await?;
    let total = answers.len();
    let mut recycled = 0;
    for (instance, answer) in answers {
        match answer {
            Ok(r) => {
                recycled += 1;
                println!(
                    "instance {instance}: worker {} recycled: generation {}, {} jobs done before",
                    r.worker, r.generation, r.jobs_done
                );
            }
            Err(err) => println!("instance {instance}: failed: {err}"),
        }
    }
    println!("{recycled} of {total} workers recycled");
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match switchboard_examples::role(USAGE, &["demo", "worker", "controller"]).as_str() {
        "worker" => {
            let name = std::env::args().nth(2).unwrap_or_else(|| std::process::id().to_string());
            let _service = worker(&name).await?;
            println!("worker {name} serving worker.recycle (Ctrl-C to stop)");
            switchboard_examples::until_interrupted().await;
        }
        "controller" => controller(&switchboard_examples::connect("recycle-controller").await?).await?,
        _ => {
            let mut workers = Vec::new();
            for name in ["w1", "w2", "w3"] {
                workers.push(worker(name).await?);
            }
            tokio::time::sleep(Duration::from_millis(200)).await; // let them work a little
            controller(&switchboard_examples::connect("recycle-controller").await?).await?;
        }
    }
    Ok(())
}

//! Model-based crash test of durable queues (issue 12): random declare /
//! put (some with producer ids, some retried, some expiring at once) / get
//! and ack / nack / purge on several queues, with tiny segments so the log
//! rolls and compacts all the time, and graceful restarts and `kill -9` in
//! between — checked after every step against an in-memory model: no
//! acknowledged message is delivered again, no confirmed put is lost, every
//! queue's depth equals the model's.
//!
//! Seeded and bounded: `SWITCHBOARD_MODEL_STEPS` (default 2,000) and
//! `SWITCHBOARD_MODEL_SEED` (default fixed) choose the run; a failure
//! prints the seed and the step.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rustix::process::Signal;
use support::Daemon;
use switchboard::{Bus, PutOptions, QueueOptions};

const QUEUES: [&str; 3] = ["alpha", "beta", "gamma"];

/// xorshift64*: enough randomness for choosing steps, reproducible by seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What must be in each queue, by payload.
#[derive(Default)]
struct Model {
    queues: BTreeMap<String, BTreeSet<String>>,
    /// Producer id → (queue, payload stored under it).
    producer_ids: BTreeMap<String, (String, String)>,
    /// Every payload whose ack was confirmed.
    acked: BTreeSet<String>,
    /// Payloads put with a 1 ms time to live: they move to `<queue>.dlq`
    /// at the next expiry sweep, unless a purge of their queue comes first,
    /// so the model cannot say where they are until one is delivered.
    expiring: BTreeSet<String>,
    /// How many of `expiring` each queue put.
    expiring_per_queue: BTreeMap<String, u64>,
    next_payload: u64,
}

impl Model {
    fn queue(&mut self, name: &str) -> &mut BTreeSet<String> {
        self.queues.entry(name.to_owned()).or_default()
    }

    fn add_expiring(&mut self, queue: &str, payload: String) {
        *self.expiring_per_queue.entry(queue.to_owned()).or_default() += 1;
        self.expiring.insert(payload);
    }

    /// An expiring payload was delivered: it is no longer uncertain.
    fn settle_expiring(&mut self, payload: &str) {
        if self.expiring.remove(payload) {
            // Payloads are `QUEUE-N`, and queue names have no `-`.
            let queue = payload.split('-').next().unwrap_or_default();
            if let Some(count) = self.expiring_per_queue.get_mut(queue) {
                *count = count.saturating_sub(1);
            }
        }
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

async fn depths(bus: &Bus) -> BTreeMap<String, u64> {
    let infos = bus.queues().await.unwrap();
    infos.into_iter().map(|q| (q.queue, q.depth + q.in_flight)).collect()
}

struct Run {
    daemon: Daemon,
    bus: Bus,
    model: Model,
    rng: Rng,
    step: u64,
    seed: u64,
}

impl Run {
    fn fail(&self, what: String) -> ! {
        panic!("seed {} step {}: {what}", self.seed, self.step)
    }

    async fn put(&mut self, queue: &str) {
        let payload = format!("{queue}-{}", self.model.next_payload);
        self.model.next_payload += 1;
        let mut options = PutOptions::default();
        let kind = self.rng.below(10);
        // A retry of an earlier producer id of this queue, when there is one
        // (the queues' duplicate window outlasts any run).
        let ids: Vec<&String> =
            self.model.producer_ids.iter().filter(|(_, (q, _))| q == queue).map(|(id, _)| id).collect();
        let retry =
            (kind == 0 && !ids.is_empty()).then(|| ids[self.rng.below(ids.len() as u64) as usize].clone());
        if let Some(id) = &retry {
            options.id = Some(id.clone());
        } else if kind < 3 {
            options.id = Some(format!("pid-{payload}"));
        }
        let expiring = kind == 9;
        if expiring {
            options.ttl = Some(Duration::from_millis(1));
        }
        let put = self.bus.queue(queue).unwrap().put_with(payload.clone(), options.clone()).await;
        if let Err(err) = put {
            self.fail(format!("put {payload}: {err}"));
        }
        if retry.is_some() {
            return; // a duplicate: nothing new is stored
        }
        if let Some(id) = options.id {
            self.model.producer_ids.insert(id, (queue.to_owned(), payload.clone()));
        }
        if expiring {
            self.model.add_expiring(queue, payload);
        } else {
            self.model.queue(queue).insert(payload);
        }
    }

    /// Takes up to `count` messages, acking (or, with `nack`, returning)
    /// each; every one must be in the model. Waits for as many as the model
    /// is sure of; with `wait`, also for whatever else comes within it.
    async fn take(&mut self, queue: &str, count: usize, nack: bool, wait: Option<Duration>) {
        let expected = self.model.queue(queue).len().min(count);
        if expected == 0 && wait.is_none() {
            return;
        }
        // Bounded credit: a long drain must ack well within the visibility timeout.
        let mut consumer = self.bus.queue(queue).unwrap().consume(count.min(64) as u32).await.unwrap();
        for n in 0..count {
            let limit = if n < expected { Duration::from_secs(10) } else { wait.unwrap_or_default() };
            let delivery = match tokio::time::timeout(limit, consumer.next()).await {
                Ok(Some(delivery)) => delivery,
                _ if n >= expected => break,
                other => self.fail(format!("expected {expected} deliveries from {queue}, got {other:?}")),
            };
            let payload = String::from_utf8(delivery.payload.to_vec()).unwrap();
            if self.model.acked.contains(&payload) {
                self.fail(format!("{payload} was delivered again after its ack was confirmed"));
            }
            if !self.model.queue(queue).contains(&payload) && !self.model.expiring.contains(&payload) {
                self.fail(format!("{payload} delivered from {queue}, where the model does not have it"));
            }
            if nack {
                delivery.nack(Duration::ZERO).await.unwrap();
                continue;
            }
            if let Err(err) = delivery.ack().await {
                self.fail(format!("ack of {payload}: {err}"));
            }
            self.model.queue(queue).remove(&payload);
            self.model.settle_expiring(&payload);
            self.model.acked.insert(payload);
        }
    }

    async fn restart(&mut self, signal: Signal) {
        self.daemon.signal(signal);
        if self.daemon.wait_exit(Duration::from_secs(10)).is_none() {
            self.fail("the daemon did not exit".into());
        }
        self.daemon.restart();
        self.bus = self.daemon.bus().await;
    }

    /// Every queue's depth is the model's, give or take the expiring
    /// messages of that queue (in it or in its dead-letter queue).
    async fn check(&mut self) {
        let depths = depths(&self.bus).await;
        for (queue, want) in &self.model.queues {
            let have = depths.get(queue).copied().unwrap_or(0);
            let want = want.len() as u64;
            let uncertain = self.expiring_of(queue.trim_end_matches(".dlq"));
            if have < want || have > want + uncertain {
                self.fail(format!("{queue}: depth {have}, model {want} (+ up to {uncertain} expiring)"));
            }
        }
    }

    fn expiring_of(&self, queue: &str) -> u64 {
        self.model.expiring_per_queue.get(queue).copied().unwrap_or(0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_match_their_model_across_restarts_and_kill_9() {
    let steps = env_u64("SWITCHBOARD_MODEL_STEPS", 2_000);
    let seed = env_u64("SWITCHBOARD_MODEL_SEED", 0x5eed_0f5b_0a4d).max(1);
    let daemon = Daemon::start_with(&["--queue-segment-bytes", "4096"]);
    let bus = daemon.bus().await;
    let mut run = Run { daemon, bus, model: Model::default(), rng: Rng(seed), step: 0, seed };
    let options = QueueOptions { max_attempts: 0, dedup_window_ms: 24 * 3_600_000, ..Default::default() };
    for queue in QUEUES {
        run.bus.queue(queue).unwrap().declare(options.clone()).await.unwrap();
        run.model.queue(queue);
    }
    let (mut kills, mut restarts) = (0, 0);
    for step in 0..steps {
        run.step = step;
        let queue = QUEUES[run.rng.below(QUEUES.len() as u64) as usize];
        match run.rng.below(100) {
            0..=44 => run.put(queue).await,
            45..=69 => {
                let count = 1 + run.rng.below(4) as usize;
                run.take(queue, count, false, None).await;
            }
            70..=79 => run.take(queue, 1, true, None).await,
            80..=84 => {
                let dlq = format!("{queue}.dlq");
                let count = 1 + run.rng.below(4) as usize;
                // Expired messages are uncertain until seen: take what comes soon.
                run.take(&dlq, count, false, Some(Duration::from_millis(20))).await;
            }
            85..=86 => {
                run.bus.queue(queue).unwrap().purge().await.unwrap();
                let purged = std::mem::take(run.model.queue(queue));
                run.model.acked.extend(purged);
                // Expiring ones still in the queue went with it; those
                // already dead-lettered did not: they stay uncertain.
            }
            87..=89 => run.bus.queue(queue).unwrap().declare(options.clone()).await.unwrap(),
            90..=95 => {}
            96..=97 => {
                run.restart(Signal::TERM).await;
                restarts += 1;
            }
            _ => {
                run.restart(Signal::KILL).await;
                kills += 1;
            }
        }
        run.check().await;
    }
    // Let every expiring message reach its dead-letter queue, then drain all.
    run.restart(Signal::KILL).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for queue in QUEUES {
        for name in [queue.to_owned(), format!("{queue}.dlq")] {
            run.take(&name, 100_000, false, Some(Duration::from_millis(500))).await;
            let missing = run.model.queue(&name).len();
            assert_eq!(missing, 0, "seed {seed}: {missing} confirmed messages of {name} never delivered");
        }
    }
    let left: u64 = depths(&run.bus).await.values().sum();
    assert_eq!(left, 0, "seed {seed}: messages left that the model does not have");
    println!(
        "{steps} steps (seed {seed}): {} acked, {kills} kill -9, {restarts} graceful restarts",
        run.model.acked.len()
    );
    assert!(kills + restarts > 0 || steps < 100, "the run never restarted the daemon");
}

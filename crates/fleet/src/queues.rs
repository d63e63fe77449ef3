//! Replicated queues on JetStream: the queues `[fleet] queues` names live
//! in a JetStream stream (`sbq.NAME`, work-queue retention, `queue_replicas`
//! copies) instead of this host's log, shared by producers and consumers on
//! every host. The router hands their operations here (after the policy);
//! this module answers the sessions itself.
//!
//! - A put is confirmed (`Reply` with the stream sequence as the message id)
//!   only once JetStream acknowledged it; a producer id becomes
//!   `Nats-Msg-Id`, so a retried put within two minutes is not stored twice.
//!   Priorities and per-message TTL have no JetStream 2.9 counterpart and are
//!   refused.
//! - Every host pulls from one durable consumer per queue, as much as its
//!   consumers have credit for; each delivery gets a tag with the top bit
//!   set. An ack is confirmed only after JetStream confirmed it (double ack),
//!   so a consumer never sees an ack succeed that JetStream did not take; a
//!   nack, a cancelled consumer or a closed session returns what it held.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, AckKind};
use bytes::Bytes;
use futures_util::StreamExt;
use switchboard_daemon::host::{RemoteQueueOp, RouterHandle, REMOTE_TAG};
use switchboard_proto::{ErrorCode, Frame, Headers, QueueDelivery, SessionId};
use tokio::sync::{mpsc, Notify};

use crate::bridge::lock;
use crate::queue_plan::{Plan, CONSUMER};
use crate::wire;

mod admin;

/// How long a pull waits for messages before it asks again.
const PULL_WAIT: Duration = Duration::from_secs(1);

type ConsumerKey = (SessionId, u32);

struct Consuming {
    queue: String,
    prefetch: usize,
    stopped: AtomicBool,
    wake: Notify,
    task: Mutex<Option<tokio::task::AbortHandle>>,
}

pub struct FleetQueues {
    js: jetstream::Context,
    router: RouterHandle,
    /// What a queue of `[fleet] queues` is on JetStream.
    config_plan: Plan,
    /// The queues `[fleet] queues` names (and their `.dlq`): kept for good.
    configured: HashSet<String>,
    /// Every queue kept now: the configured ones, those declared here and
    /// those found on JetStream.
    kept: Mutex<BTreeSet<String>>,
    /// Each queue's durable consumer, once its stream exists.
    pulls: Mutex<HashMap<String, jetstream::consumer::Consumer<pull::Config>>>,
    consumers: Mutex<HashMap<ConsumerKey, Arc<Consuming>>>,
    held: Mutex<HashMap<u64, (ConsumerKey, jetstream::Message)>>,
    next_tag: AtomicU64,
    /// Its lookout and dead-letter watchers, ended by `stop`.
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
}

/// The stream of queue `name`: its name in NATS terms (no dots) and subject.
/// A dead-letter queue's stream name ends with [`DLQ_MARK`].
pub fn stream_of(name: &str) -> (String, String) {
    let mark = if name.ends_with(".dlq") { DLQ_MARK } else { "" };
    let stream = format!("SBQ_{}_{:08x}{mark}", name.replace('.', "_"), crc32fast::hash(name.as_bytes()));
    (stream, format!("sbq.{name}"))
}

const DLQ_MARK: &str = "_DLQ";
/// How often a dead letter's move is tried (every 500 ms).
const DEAD_LETTER_TRIES: u32 = 40;

/// What JetStream says when a message ran out of deliveries.
#[derive(serde::Deserialize)]
struct MaxDeliveries {
    stream_seq: u64,
    deliveries: u64,
}

impl FleetQueues {
    /// Takes `names` from the router and keeps them until `stop`; from then
    /// on also the fleet queues declared here or found on JetStream.
    pub fn start(nats: async_nats::Client, router: RouterHandle, joining: &crate::Joining) -> Arc<Self> {
        let names = &joining.queues;
        let config_plan = Plan::of_config(joining);
        let mut configured: HashSet<String> = names.iter().cloned().collect();
        if config_plan.max_attempts > 0 {
            configured.extend(names.iter().map(|name| format!("{name}.dlq")));
        }
        let queues = Arc::new(Self {
            js: jetstream::new(nats),
            router: router.clone(),
            kept: Mutex::new(configured.iter().cloned().collect()),
            configured: configured.clone(),
            config_plan,
            pulls: Mutex::new(HashMap::new()),
            consumers: Mutex::new(HashMap::new()),
            held: Mutex::new(HashMap::new()),
            next_tag: AtomicU64::new(1),
            tasks: Mutex::new(Vec::new()),
        });
        let (app, mut ops) = mpsc::unbounded_channel();
        if queues.config_plan.max_attempts > 0 {
            for name in names {
                queues.watch_dead_letters(name);
            }
        }
        for name in &configured {
            let plan = match name.ends_with(".dlq") {
                true => queues.config_plan.for_dead_letters(),
                false => queues.config_plan.clone(),
            };
            tokio::spawn(queues.clone().ensure(name.clone(), plan));
        }
        router.attach_remote_queues(configured, app);
        queues.own(tokio::spawn(queues.clone().discover()));
        let serving = queues.clone();
        tokio::spawn(async move {
            while let Some(op) = ops.recv().await {
                let queues = serving.clone();
                tokio::spawn(async move { queues.apply(op).await });
            }
        });
        queues
    }

    fn own(&self, task: tokio::task::JoinHandle<()>) {
        lock(&self.tasks).push(task.abort_handle());
    }

    fn watch_dead_letters(self: &Arc<Self>, name: &str) {
        self.own(tokio::spawn(self.clone().dead_letters(name.to_owned())));
    }

    pub fn stop(&self) {
        for task in std::mem::take(&mut *lock(&self.tasks)) {
            task.abort();
        }
        self.router.detach_remote_queues();
        for (_, consuming) in std::mem::take(&mut *lock(&self.consumers)) {
            if let Some(task) = lock(&consuming.task).take() {
                task.abort();
            }
        }
    }

    /// Creates (or finds) the queue's stream and durable consumer, retrying
    /// while NATS cannot.
    async fn ensure(self: Arc<Self>, name: String, plan: Plan) {
        let (stream_name, subject) = stream_of(&name);
        loop {
            match self.create(&stream_name, &subject, &plan).await {
                Ok(pull) => {
                    tracing::info!(queue = name, stream = stream_name, "fleet: queue on JetStream");
                    lock(&self.pulls).insert(name, pull);
                    return;
                }
                Err(err) => {
                    tracing::warn!(queue = name, "fleet: cannot set up the queue on JetStream yet: {err}");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        }
    }

    /// Moves messages that ran out of deliveries to `NAME.dlq`, with why:
    /// one host of the fleet takes each JetStream advisory (a queue group),
    /// and the dead letter's `Nats-Msg-Id` makes a second move a no-op.
    async fn dead_letters(self: Arc<Self>, name: String) {
        let (stream_name, _) = stream_of(&name);
        let advisory = format!("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream_name}.switchboard");
        let mut advisories = loop {
            match self.js.client().queue_subscribe(advisory.clone(), format!("sb.dlq.{name}")).await {
                Ok(advisories) => break advisories,
                Err(err) => {
                    tracing::warn!(queue = name, "fleet: cannot watch for dead letters yet: {err}");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        };
        while let Some(message) = advisories.next().await {
            let Ok(advisory) = serde_json::from_slice::<MaxDeliveries>(&message.payload) else { continue };
            // The advisory comes once: a move that fails (the dead-letter
            // stream not there yet, a server changing leaders) is tried again.
            for attempt in 1..=DEAD_LETTER_TRIES {
                match self.dead_letter(&name, &stream_name, &advisory).await {
                    Ok(()) => break,
                    Err(err) if attempt == DEAD_LETTER_TRIES => {
                        tracing::error!(
                            queue = name,
                            seq = advisory.stream_seq,
                            "fleet: cannot dead-letter: {err}"
                        );
                    }
                    Err(err) => {
                        tracing::debug!(
                            queue = name,
                            seq = advisory.stream_seq,
                            "fleet: dead-lettering again: {err}"
                        );
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        }
    }

    async fn dead_letter(
        &self,
        name: &str,
        stream_name: &str,
        dead: &MaxDeliveries,
    ) -> Result<(), async_nats::Error> {
        let stream = self.js.get_stream(stream_name).await?;
        let message = stream.get_raw_message(dead.stream_seq).await?;
        let mut headers = message.headers.clone();
        headers.insert("Nats-Msg-Id", format!("dlq-{stream_name}-{}", dead.stream_seq).as_str());
        for (key, value) in [
            ("x-dead-reason", "max attempts".to_owned()),
            ("x-dead-attempts", dead.deliveries.to_string()),
            ("x-dead-from", name.to_owned()),
        ] {
            headers.insert(format!("{}{key}", wire::HEADER_PREFIX).as_str(), value.as_str());
        }
        let (_, subject) = stream_of(&format!("{name}.dlq"));
        self.js.publish_with_headers(subject, headers, message.payload).await?.await?;
        stream.delete_message(dead.stream_seq).await?;
        tracing::info!(queue = name, seq = dead.stream_seq, "fleet: message dead-lettered to {name}.dlq");
        Ok(())
    }

    async fn create(
        &self,
        stream_name: &str,
        subject: &str,
        plan: &Plan,
    ) -> Result<jetstream::consumer::Consumer<pull::Config>, async_nats::Error> {
        let stream = self.js.get_or_create_stream(plan.stream(stream_name, subject)).await?;
        Ok(stream.get_or_create_consumer(CONSUMER, plan.consumer()).await?)
    }

    async fn apply(self: Arc<Self>, op: RemoteQueueOp) {
        match op {
            RemoteQueueOp::Put { session, req, queue, priority, ttl_ms, dedup_id, headers, payload } => {
                let answer = self.put(&queue, priority, ttl_ms, &dedup_id, &headers, payload).await;
                self.answer(session, req, answer.map(|id| Bytes::copy_from_slice(&id.to_le_bytes())));
            }
            RemoteQueueOp::Consume { session, consumer, queue, prefetch } => {
                self.consume((session, consumer), queue, prefetch as usize);
            }
            RemoteQueueOp::Stop { session, consumer } => {
                if let Some(consuming) = lock(&self.consumers).get(&(session, consumer)) {
                    consuming.stopped.store(true, Ordering::Relaxed);
                }
            }
            RemoteQueueOp::Cancel { session, consumer } => {
                self.release(|key| key == (session, consumer)).await
            }
            RemoteQueueOp::SessionClosed { session } => self.release(|key| key.0 == session).await,
            RemoteQueueOp::Admin { session, req, admin } => {
                let answer = self.admin(admin).await;
                self.answer(session, req, answer);
            }
            RemoteQueueOp::Ack { session, req, tag } => {
                let answer = match self.take(session, tag) {
                    Some((key, message)) => {
                        let acked = message.double_ack().await.map_err(|err| {
                            (ErrorCode::StorageFailed, format!("JetStream did not confirm the ack: {err}"))
                        });
                        self.woken(key);
                        acked.map(|()| Bytes::new())
                    }
                    None => Err((ErrorCode::StaleDelivery, stale(tag))),
                };
                self.answer(session, req, answer);
            }
            RemoteQueueOp::Nack { session, req, tag, delay_ms } => {
                let answer = match self.take(session, tag) {
                    Some((key, message)) => {
                        let delay = (delay_ms > 0).then(|| Duration::from_millis(u64::from(delay_ms)));
                        let returned = message.ack_with(AckKind::Nak(delay)).await;
                        self.woken(key);
                        returned
                            .map(|()| Bytes::new())
                            .map_err(|err| (ErrorCode::StorageFailed, err.to_string()))
                    }
                    None => Err((ErrorCode::StaleDelivery, stale(tag))),
                };
                self.answer(session, req, answer);
            }
        }
    }

    async fn put(
        &self,
        queue: &str,
        priority: u8,
        ttl_ms: u32,
        dedup_id: &str,
        headers: &Headers,
        payload: Bytes,
    ) -> Result<u64, (ErrorCode, String)> {
        if priority != 0 {
            let why = format!("the fleet queue {queue} keeps no priorities (JetStream 2.9 has none)");
            return Err((ErrorCode::BadRequest, why));
        }
        if ttl_ms != 0 {
            let why = format!("the fleet queue {queue} keeps no per-message TTL (JetStream 2.9 has none)");
            return Err((ErrorCode::BadRequest, why));
        }
        let mut map = wire::user_headers_map(headers);
        if !dedup_id.is_empty() {
            map.insert("Nats-Msg-Id", dedup_id);
        }
        let failed = |err: &dyn std::fmt::Display| {
            (ErrorCode::StorageFailed, format!("JetStream did not confirm the put to {queue}: {err}"))
        };
        let (_, subject) = stream_of(queue);
        let pending =
            self.js.publish_with_headers(subject, map, payload).await.map_err(|err| failed(&err))?;
        let ack = pending.await.map_err(|err| failed(&err))?;
        Ok(ack.sequence)
    }

    fn consume(self: &Arc<Self>, key: ConsumerKey, queue: String, prefetch: usize) {
        let consuming = Arc::new(Consuming {
            queue,
            prefetch,
            stopped: AtomicBool::new(false),
            wake: Notify::new(),
            task: Mutex::new(None),
        });
        let task = tokio::spawn(self.clone().pull(key, consuming.clone()));
        *lock(&consuming.task) = Some(task.abort_handle());
        lock(&self.consumers).insert(key, consuming);
    }

    /// Pulls for one consumer as long as it has credit.
    async fn pull(self: Arc<Self>, key: ConsumerKey, consuming: Arc<Consuming>) {
        loop {
            let holding = lock(&self.held).values().filter(|(held_by, _)| *held_by == key).count();
            let credit = consuming.prefetch.saturating_sub(holding);
            let pull = lock(&self.pulls).get(&consuming.queue).cloned();
            let Some(pull) = pull.filter(|_| credit > 0 && !consuming.stopped.load(Ordering::Relaxed)) else {
                tokio::select! {
                    () = consuming.wake.notified() => {}
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
                continue;
            };
            let batch = pull.fetch().max_messages(credit).expires(PULL_WAIT).messages().await;
            let mut batch = match batch {
                Ok(batch) => batch,
                Err(err) => {
                    tracing::warn!(queue = consuming.queue, "fleet: cannot pull: {err}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            // A pull whose server died mid-way may never end by itself; what
            // it would still have brought is given again after the ack wait.
            let drained = tokio::time::timeout(PULL_WAIT * 3, async {
                while let Some(Ok(message)) = batch.next().await {
                    self.deliver(key, message);
                }
            });
            if drained.await.is_err() {
                tracing::debug!(queue = consuming.queue, "fleet: a pull outlived its wait; pulling again");
            }
        }
    }

    fn deliver(&self, key: ConsumerKey, message: jetstream::Message) {
        let Ok(info) = message.info() else { return };
        let (id, attempt) = (info.stream_sequence, u32::try_from(info.delivered).unwrap_or(u32::MAX));
        let tag = REMOTE_TAG | self.next_tag.fetch_add(1, Ordering::Relaxed);
        let headers = wire::user_headers(message.headers.as_ref());
        let headers = Headers::from_pairs(headers).unwrap_or_default();
        let delivery = QueueDelivery {
            consumer: key.1,
            tag,
            id,
            attempt,
            priority: 0,
            headers,
            payload: message.payload.clone(),
        };
        lock(&self.held).insert(tag, (key, message));
        self.router.deliver(key.0, &Frame::QueueDelivery(delivery));
    }

    /// The delivery `tag` if `session` holds it.
    fn take(&self, session: SessionId, tag: u64) -> Option<(ConsumerKey, jetstream::Message)> {
        let mut held = lock(&self.held);
        match held.get(&tag) {
            Some((key, _)) if key.0 == session => held.remove(&tag),
            _ => None,
        }
    }

    fn woken(&self, key: ConsumerKey) {
        if let Some(consuming) = lock(&self.consumers).get(&key) {
            consuming.wake.notify_one();
        }
    }

    /// Ends the consumers `which` selects; what they held returns at once.
    async fn release(&self, which: impl Fn(ConsumerKey) -> bool) {
        let gone: Vec<Arc<Consuming>> = {
            let mut consumers = lock(&self.consumers);
            let keys: Vec<ConsumerKey> = consumers.keys().copied().filter(|key| which(*key)).collect();
            keys.iter().filter_map(|key| consumers.remove(key)).collect()
        };
        for consuming in gone {
            if let Some(task) = lock(&consuming.task).take() {
                task.abort();
            }
        }
        let returned: Vec<jetstream::Message> = {
            let mut held = lock(&self.held);
            let tags: Vec<u64> =
                held.iter().filter(|(_, (key, _))| which(*key)).map(|(tag, _)| *tag).collect();
            tags.iter().filter_map(|tag| held.remove(tag)).map(|(_, message)| message).collect()
        };
        for message in returned {
            let _ = message.ack_with(AckKind::Nak(None)).await;
        }
    }

    fn answer(&self, session: SessionId, req: u32, answer: Result<Bytes, (ErrorCode, String)>) {
        let frame = match answer {
            Ok(payload) => Frame::Reply { id: req, payload },
            Err((code, message)) => Frame::Error { id: req, code, message },
        };
        self.router.deliver(session, &frame);
    }
}

fn stale(tag: u64) -> String {
    format!("delivery {tag} is not outstanding (already acknowledged, returned to the queue, or its consumer is gone)")
}

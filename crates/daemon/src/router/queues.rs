//! Durable queues on the router: puts, consumers, acks, dead letters, and
//! the `$sys.queues.*` management calls.
//!
//! Every change that must survive a crash becomes records for the
//! group-commit writer; its reply is sent only when the writer reports the
//! records on disk (`queue_completed`). Deliveries go to consumers with
//! credit (prefetch minus what they hold), round-robin.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use switchboard_proto::sys::{
    self, PeekedMessage, QueueDeclare, QueueInfo, QueueOptions, QueuePeek, QueueRef,
};
use switchboard_proto::{
    ErrorCode, Frame, Headers, QueueDelivery, QueueName, QueuePut, SessionId, MAX_PRODUCER_ID,
};

use super::Router;
use crate::policy::Op;
use crate::queues::queue::{Admitted, ConsumerKey, Next, Queue};
use crate::queues::record::{Record, StoredMessage};
use crate::queues::store::Recovered;
use crate::queues::writer::{Completed, Writer};

/// What to do when a commit completes.
pub enum Done {
    /// A put; `duplicate` holds the producer id when it repeats an earlier
    /// put stored as `id`, confirmed only if that one reached the disk.
    Put {
        session: SessionId,
        req: u32,
        queue: String,
        id: u64,
        dropped: Vec<u64>,
        duplicate: Option<String>,
    },
    Ack {
        session: SessionId,
        req: u32,
        queue: String,
        id: u64,
    },
    DeadLettered {
        from: String,
        id: u64,
        to: String,
        new_id: u64,
    },
    Declared {
        session: SessionId,
        req: u32,
    },
    Purged {
        session: SessionId,
        req: u32,
        queue: String,
        ids: Vec<u64>,
    },
    Nothing,
}

struct Consumer {
    queue: String,
    prefetch: u32,
}

/// Snapshots of a queue's counters, for rates.
#[derive(Default)]
struct History(VecDeque<(Instant, u64, u64)>);

/// All queue state the router keeps.
pub struct QueueState {
    queues: HashMap<String, Queue>,
    consumers: HashMap<ConsumerKey, Consumer>,
    /// Delivery tag → queue it came from.
    tags: HashMap<u64, String>,
    history: HashMap<String, History>,
    next_id: u64,
    next_tag: u64,
    writer: Writer<Done>,
    auto_create: bool,
    max_queues: usize,
    last_sweep: Instant,
    /// Where each queue's next round-robin turn starts.
    cursors: HashMap<String, usize>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn options_bytes(options: &QueueOptions) -> Bytes {
    Bytes::from(sys::encode(options))
}

/// The records that remove a message: its Ack, and a Seen record if its
/// producer id must keep suppressing duplicates after it is gone.
fn removal(queue: &Queue, id: u64) -> Vec<Record> {
    let mut records = vec![Record::Ack { queue: queue.name.clone(), id }];
    if let Some((dedup_id, until_ms)) = queue.dedup_of(id).filter(|(_, until)| *until > now_ms()) {
        records.push(Record::Seen { queue: queue.name.clone(), dedup_id, id, until_ms });
    }
    records
}

fn dead_letter_options() -> QueueOptions {
    // A dead-letter queue keeps what it gets: nothing expires or moves on.
    QueueOptions { max_attempts: 0, default_ttl_ms: 0, ..QueueOptions::default() }
}

impl QueueState {
    /// Rebuilds the queues from what the store recovered.
    pub fn new(recovered: Recovered, writer: Writer<Done>, auto_create: bool, max_queues: usize) -> Self {
        let mut queues = HashMap::new();
        for (name, options) in recovered.declares {
            let options: QueueOptions = sys::decode(&options).unwrap_or_default();
            queues.insert(name.clone(), Queue::new(name, options));
        }
        let now = now_ms();
        for message in recovered.messages {
            let queue = queues
                .entry(message.queue.clone())
                .or_insert_with(|| Queue::new(message.queue.clone(), QueueOptions::default()));
            queue.restore(message, now);
        }
        for (queue, dedup_id, id, until_ms) in recovered.seen {
            if until_ms > now {
                if let Some(queue) = queues.get_mut(&queue) {
                    queue.remember(dedup_id, id, until_ms);
                }
            }
        }
        Self {
            queues,
            consumers: HashMap::new(),
            tags: HashMap::new(),
            history: HashMap::new(),
            next_id: recovered.next_id.max(1),
            next_tag: 1,
            writer,
            auto_create,
            max_queues,
            last_sweep: Instant::now(),
            cursors: HashMap::new(),
        }
    }

    /// Every consumer and the queue it consumes from.
    pub(super) fn consumer_queues(&self) -> Vec<(ConsumerKey, String)> {
        self.consumers.iter().map(|(key, c)| (*key, c.queue.clone())).collect()
    }

    /// Messages held by all queues (for `$sys.daemon.info` and tests).
    pub fn message_count(&self) -> u64 {
        self.queues.values().map(|q| q.depth() + q.in_flight()).sum()
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Whether `name` counts against `--max-queues`: every queue but the
    /// dead-letter queue of a queue that exists (a `.dlq` name alone is not
    /// enough, or any client could create them without end).
    fn counts_toward_limit(&self, name: &str) -> bool {
        name.strip_suffix(".dlq").is_none_or(|source| !self.queues.contains_key(source))
    }

    /// Whether one more queue that counts toward the limit may be created.
    fn room_for_one_more(&self) -> Result<(), (ErrorCode, String)> {
        let counted = self.queues.keys().filter(|q| self.counts_toward_limit(q)).count();
        if counted < self.max_queues {
            return Ok(());
        }
        let message = format!(
            "the daemon holds {counted} queues, its maximum (--max-queues); \
             delete unused ones with `switchboard queue delete`"
        );
        Err((ErrorCode::Overloaded, message))
    }

    /// The queue, created (with a Declare record appended to `records`)
    /// when allowed: by first use where auto-creation is on and the limit
    /// leaves room, or as the dead-letter queue of a queue that exists.
    fn ensure(&mut self, name: &str, records: &mut Vec<Record>) -> Result<(), (ErrorCode, String)> {
        if self.queues.contains_key(name) {
            return Ok(());
        }
        let options = if !self.counts_toward_limit(name) {
            dead_letter_options()
        } else if self.auto_create {
            self.room_for_one_more()?;
            QueueOptions::default()
        } else {
            let message =
                format!("no queue named {name} (declare it first; first use may not create queues)");
            return Err((ErrorCode::NoSuchQueue, message));
        };
        records.push(Record::Declare { queue: name.to_owned(), options: options_bytes(&options) });
        self.queues.insert(name.to_owned(), Queue::new(name.to_owned(), options));
        Ok(())
    }
}

impl Router {
    pub(super) fn queue_put(&mut self, from: SessionId, put: QueuePut) {
        let QueuePut { req, priority, ttl_ms, queue, dedup_id, headers, payload } = put;
        let access = self.permit(from, Op::QueuePut, queue.as_str());
        let access =
            access.and_then(|()| if self.within_rate(from) { Ok(()) } else { Err(self.rate_refusal(from)) });
        if let Err((code, message)) = access {
            return self.send_error(from, req, code, message);
        }
        if dedup_id.len() > MAX_PRODUCER_ID {
            let message = format!(
                "producer id of {} bytes; at most {MAX_PRODUCER_ID} bytes are allowed",
                dedup_id.len()
            );
            return self.send_error(from, req, ErrorCode::BadRequest, message);
        }
        let name = queue.as_str().to_owned();
        let mut records = Vec::new();
        if let Err((code, message)) = self.queues.ensure(&name, &mut records) {
            return self.send_error(from, req, code, message);
        }
        let now = now_ms();
        let id = self.queues.take_id();
        let Some(q) = self.queues.queues.get_mut(&name) else { return };
        let ttl = if ttl_ms > 0 { u64::from(ttl_ms) } else { q.options.default_ttl_ms };
        let message = StoredMessage {
            queue: name.clone(),
            id,
            priority,
            expires_at_ms: if ttl > 0 { now.saturating_add(ttl) } else { 0 },
            put_at_ms: now,
            attempts: 0,
            dedup_id,
            // `to_wire` makes a buffer of its own; the payload is copied out
            // of the read buffer below, only if it is stored.
            headers: headers.to_wire(),
            payload,
        };
        match q.admit(&message, now) {
            Err(refused) => self.send_error(from, req, ErrorCode::QueueFull, refused.to_string()),
            Ok(Admitted::Duplicate(original)) => {
                // Confirmed after everything queued before it is on disk,
                // the original put included.
                let duplicate = Some(message.dedup_id);
                let done = Done::Put {
                    session: from,
                    req,
                    queue: name,
                    id: original,
                    dropped: Vec::new(),
                    duplicate,
                };
                self.submit(records, done);
            }
            Ok(Admitted::Store { dropped }) => {
                for id in &dropped {
                    records.extend(removal(q, *id));
                }
                let message = StoredMessage { payload: super::detached(message.payload), ..message };
                records.push(Record::Put(message.clone()));
                q.insert(message, now);
                self.submit(
                    records,
                    Done::Put { session: from, req, queue: name, id, dropped, duplicate: None },
                );
            }
        }
    }

    fn submit(&mut self, records: Vec<Record>, done: Done) {
        if !self.queues.writer.submit(records, done) {
            tracing::error!("the queue writer has stopped; queue operations cannot be confirmed");
        }
    }

    pub(super) fn queue_consume(
        &mut self,
        from: SessionId,
        req: u32,
        consumer: u32,
        prefetch: u32,
        queue: QueueName,
    ) {
        if let Err((code, message)) = self.permit(from, Op::QueueGet, queue.as_str()) {
            return self.send_error(from, req, code, message);
        }
        let name = queue.as_str().to_owned();
        let mut records = Vec::new();
        if let Err((code, message)) = self.queues.ensure(&name, &mut records) {
            return self.send_error(from, req, code, message);
        }
        if !records.is_empty() {
            self.submit(records, Done::Nothing);
        }
        let key = (from, consumer);
        if self.queues.consumers.contains_key(&key) {
            let message = format!("consumer id {consumer} is already in use on this connection");
            return self.send_error(from, req, ErrorCode::BadRequest, message);
        }
        self.queues.consumers.insert(key, Consumer { queue: name.clone(), prefetch: prefetch.max(1) });
        self.send(from, &Frame::Reply { id: req, payload: Bytes::new() });
        self.dispatch(&name);
    }

    pub(super) fn queue_cancel(&mut self, from: SessionId, req: u32, consumer: u32) {
        match self.drop_consumer((from, consumer)) {
            Some(queue) => {
                self.send(from, &Frame::Reply { id: req, payload: Bytes::new() });
                self.dispatch(&queue);
            }
            None => {
                let message = format!("this connection has no consumer {consumer}");
                self.send_error(from, req, ErrorCode::BadRequest, message);
            }
        }
    }

    /// Forgets a consumer; its deliveries return to the queue.
    pub(super) fn drop_consumer(&mut self, key: ConsumerKey) -> Option<String> {
        let consumer = self.queues.consumers.remove(&key)?;
        if let Some(queue) = self.queues.queues.get_mut(&consumer.queue) {
            queue.release_consumer(key);
        }
        Some(consumer.queue)
    }

    /// A session ended: its consumers' deliveries return to their queues.
    pub(super) fn queue_session_closed(&mut self, session: SessionId) {
        let keys: Vec<ConsumerKey> =
            self.queues.consumers.keys().copied().filter(|k| k.0 == session).collect();
        let mut touched = Vec::new();
        for key in keys {
            touched.extend(self.drop_consumer(key));
        }
        for queue in touched {
            self.dispatch(&queue);
        }
    }

    pub(super) fn queue_ack(&mut self, from: SessionId, req: u32, tag: u64) {
        let acked = self.queues.tags.remove(&tag).and_then(|name| {
            let id = self.queues.queues.get_mut(&name)?.ack(tag, (from, 0))?;
            Some((name, id))
        });
        match acked {
            Some((queue, id)) => {
                let records = self.queues.queues.get(&queue).map(|q| removal(q, id)).unwrap_or_default();
                self.submit(records, Done::Ack { session: from, req, queue: queue.clone(), id });
                self.dispatch(&queue);
            }
            None => self.send_error(from, req, ErrorCode::StaleDelivery, stale(tag)),
        }
    }

    pub(super) fn queue_nack(&mut self, from: SessionId, req: u32, tag: u64, delay_ms: u32) {
        let delay = Duration::from_millis(u64::from(delay_ms));
        let queue = self.queues.tags.remove(&tag).filter(|name| {
            self.queues
                .queues
                .get_mut(name)
                .and_then(|q| q.nack(tag, (from, 0), delay, Instant::now()))
                .is_some()
        });
        match queue {
            Some(queue) => {
                self.send(from, &Frame::Reply { id: req, payload: Bytes::new() });
                self.dispatch(&queue);
            }
            None => self.send_error(from, req, ErrorCode::StaleDelivery, stale(tag)),
        }
    }

    /// Sends ready messages to consumers with credit, round-robin.
    pub(super) fn dispatch(&mut self, name: &str) {
        let mut keys: Vec<ConsumerKey> =
            self.queues.consumers.iter().filter(|(_, c)| c.queue == name).map(|(k, _)| *k).collect();
        keys.sort_unstable();
        if keys.is_empty() {
            return;
        }
        let now = Instant::now();
        let now_ms = now_ms();
        let mut idle = 0;
        let mut turn = self.queues.cursors.get(name).copied().unwrap_or(0);
        while idle < keys.len() {
            let key = keys[turn % keys.len()];
            turn += 1;
            self.queues.cursors.insert(name.to_owned(), turn % keys.len());
            let prefetch = self.queues.consumers.get(&key).map_or(0, |c| c.prefetch) as usize;
            let Some(queue) = self.queues.queues.get_mut(name) else { return };
            if !queue.has_ready() {
                return;
            }
            if queue.held_by(key) >= prefetch {
                idle += 1;
                continue;
            }
            idle = 0;
            let tag = self.queues.next_tag;
            self.queues.next_tag += 1;
            match queue.next(tag, key, now, now_ms) {
                None => return,
                Some(Next::DeadLetter(message, reason)) => self.dead_letter(message, reason),
                Some(Next::Deliver(message)) => {
                    self.queues.tags.insert(tag, name.to_owned());
                    let attempt = Record::Attempt {
                        queue: name.to_owned(),
                        id: message.id,
                        attempts: message.attempts,
                    };
                    self.submit(vec![attempt], Done::Nothing);
                    let delivery = QueueDelivery {
                        consumer: key.1,
                        tag,
                        id: message.id,
                        attempt: message.attempts,
                        priority: message.priority,
                        headers: Headers::from_wire(message.headers).unwrap_or_default(),
                        payload: message.payload,
                    };
                    self.send(key.0, &Frame::QueueDelivery(delivery));
                }
            }
        }
    }

    /// Moves a message to its queue's dead-letter queue, with the reason.
    fn dead_letter(&mut self, message: StoredMessage, reason: &str) {
        let from = message.queue.clone();
        let to = format!("{from}.dlq");
        let mut records = Vec::new();
        let _ = self.queues.ensure(&to, &mut records);
        let new_id = self.queues.take_id();
        let original = Headers::from_wire(message.headers.clone()).unwrap_or_default();
        let mut pairs: Vec<(String, String)> =
            original.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
        pairs.push(("x-dead-reason".into(), reason.to_owned()));
        pairs.push(("x-dead-attempts".into(), message.attempts.to_string()));
        pairs.push(("x-dead-from".into(), from.clone()));
        let headers = Headers::from_pairs(pairs).unwrap_or(original);
        let dead = StoredMessage {
            queue: to.clone(),
            id: new_id,
            expires_at_ms: 0,
            attempts: 0,
            dedup_id: String::new(),
            headers: headers.to_wire(),
            ..message.clone()
        };
        records.push(Record::Put(dead.clone()));
        records.extend(self.queues.queues.get(&from).map(|q| removal(q, message.id)).unwrap_or_default());
        if let Some(dlq) = self.queues.queues.get_mut(&to) {
            dlq.insert(dead, now_ms());
        }
        tracing::info!(queue = %from, id = message.id, reason, "message dead-lettered to {to}");
        self.submit(records, Done::DeadLettered { from, id: message.id, to, new_id });
    }

    /// Applies finished commits: confirmations go out, committed messages
    /// become deliverable, removed ones are forgotten. A failed commit
    /// confirms nothing and changes nothing the disk does not say: failed
    /// puts are forgotten, failed removals leave their messages queued.
    pub fn queue_completed(&mut self, (dones, result): Completed<Done>) {
        let failed = result.err();
        let mut touched = Vec::new();
        for done in dones {
            match done {
                Done::Put { session, req, queue, id, dropped, duplicate } => {
                    self.settle_removals(&queue, &dropped, failed.is_none());
                    let Some(q) = self.queues.queues.get_mut(&queue) else { continue };
                    let outcome = match &failed {
                        None if duplicate.as_deref().is_some_and(|d| !q.stored_as(d, id)) => {
                            Err("the first put with this producer id was not stored".to_owned())
                        }
                        None => Ok(()),
                        Some(why) => Err(why.clone()),
                    };
                    match outcome {
                        Ok(()) => {
                            q.committed(id);
                            let payload = Bytes::copy_from_slice(&id.to_le_bytes());
                            self.send(session, &Frame::Reply { id: req, payload });
                        }
                        Err(why) => {
                            if duplicate.is_none() {
                                q.put_failed(id);
                            }
                            self.send_error(session, req, ErrorCode::StorageFailed, storage_failed(&why));
                        }
                    }
                    touched.push(queue);
                }
                Done::Ack { session, req, queue, id } => {
                    self.settle_removals(&queue, &[id], failed.is_none());
                    touched.push(queue);
                    self.confirm(session, req, &failed, Bytes::new());
                }
                Done::DeadLettered { from, id, to, new_id } => {
                    self.settle_removals(&from, &[id], failed.is_none());
                    if let Some(q) = self.queues.queues.get_mut(&to) {
                        if failed.is_none() {
                            q.committed(new_id)
                        } else {
                            q.put_failed(new_id)
                        }
                    }
                    touched.extend([from, to]);
                }
                Done::Declared { session, req } => self.confirm(session, req, &failed, Bytes::new()),
                Done::Purged { session, req, queue, ids } => {
                    self.settle_removals(&queue, &ids, failed.is_none());
                    touched.push(queue);
                    let count = Bytes::from(sys::encode(&(ids.len() as u64)));
                    self.confirm(session, req, &failed, count);
                }
                Done::Nothing => {}
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for queue in touched {
            self.dispatch(&queue);
        }
    }

    /// Removals are on disk (forget the messages) or failed (they stay queued).
    fn settle_removals(&mut self, queue: &str, ids: &[u64], written: bool) {
        if let Some(q) = self.queues.queues.get_mut(queue) {
            for id in ids {
                if written {
                    q.removed(*id)
                } else {
                    q.removal_failed(*id)
                }
            }
        }
    }

    /// Answers a request whose records were committed, or say why not.
    fn confirm(&mut self, session: SessionId, req: u32, failed: &Option<String>, payload: Bytes) {
        match failed {
            None => self.send(session, &Frame::Reply { id: req, payload }),
            Some(why) => self.send_error(session, req, ErrorCode::StorageFailed, storage_failed(why)),
        }
    }

    /// Timeouts, delays, expiry sweeps and rate snapshots.
    pub fn queue_tick(&mut self, now: Instant) {
        let now_ms = now_ms();
        let names: Vec<String> = self.queues.queues.keys().cloned().collect();
        let sweep = now.duration_since(self.queues.last_sweep) >= Duration::from_secs(1);
        if sweep {
            self.queues.last_sweep = now;
        }
        for name in names {
            let Some(queue) = self.queues.queues.get_mut(&name) else { continue };
            let returned = queue.tick(now, now_ms);
            if sweep {
                for message in queue.take_expired(now_ms) {
                    self.dead_letter(message, "expired");
                }
            }
            let Some(queue) = self.queues.queues.get_mut(&name) else { continue };
            if sweep {
                let history = self.queues.history.entry(name.clone()).or_default();
                history.0.push_back((now, queue.counters.put, queue.counters.acked));
                if history.0.len() > 6 {
                    history.0.pop_front();
                }
            }
            if returned > 0 || sweep || queue.has_ready() {
                self.dispatch(&name);
            }
        }
        if sweep {
            // Deliveries that timed out or whose consumer left are no
            // longer outstanding; forget their tags.
            let queues = &self.queues.queues;
            self.queues.tags.retain(|tag, name| queues.get(name).is_some_and(|q| q.is_outstanding(*tag)));
        }
    }

    /// `$sys.queues.*`. Answers now, or once the change is on disk.
    pub(super) fn queue_admin(&mut self, from: SessionId, id: u32, method: &str, payload: &Bytes) {
        let bad = |what: &str, err: rmp_serde::decode::Error| {
            (ErrorCode::BadArguments, format!("arguments of $sys.queues.{what}: {err}"))
        };
        let result: Result<Option<Vec<u8>>, (ErrorCode, String)> = match method {
            sys::QUEUES_LIST => Ok(Some(sys::encode(&self.queue_infos()))),
            sys::QUEUES_DECLARE => sys::decode::<QueueDeclare>(payload)
                .map_err(|e| bad("declare", e))
                .and_then(|d| self.declare(from, id, d).map(|()| None)),
            sys::QUEUES_PEEK => sys::decode::<QueuePeek>(payload)
                .map_err(|e| bad("peek", e))
                .and_then(|p| self.peek(&p).map(|found| Some(sys::encode(&found)))),
            sys::QUEUES_PURGE => sys::decode::<QueueRef>(payload)
                .map_err(|e| bad("purge", e))
                .and_then(|r| self.purge(from, id, &r.queue).map(|()| None)),
            sys::QUEUES_DELETE => sys::decode::<QueueRef>(payload)
                .map_err(|e| bad("delete", e))
                .and_then(|r| self.delete_queue(from, id, &r.queue).map(|()| None)),
            other => Err((
                ErrorCode::NoSuchMethod,
                format!("service {} has no method {other}", sys::QUEUES_SERVICE),
            )),
        };
        match result {
            Ok(Some(reply)) => self.send(from, &Frame::Reply { id, payload: Bytes::from(reply) }),
            Ok(None) => {}
            Err((code, message)) => self.send_error(from, id, code, message),
        }
    }

    fn declare(
        &mut self,
        from: SessionId,
        req: u32,
        declare: QueueDeclare,
    ) -> Result<(), (ErrorCode, String)> {
        let name = QueueName::parse(&declare.queue).map_err(|e| (ErrorCode::BadRequest, e.to_string()))?;
        let name = name.as_str().to_owned();
        let record = Record::Declare { queue: name.clone(), options: options_bytes(&declare.options) };
        match self.queues.queues.get_mut(&name) {
            Some(queue) => queue.options = declare.options,
            None => {
                if self.queues.counts_toward_limit(&name) {
                    self.queues.room_for_one_more()?;
                }
                self.queues.queues.insert(name.clone(), Queue::new(name.clone(), declare.options));
            }
        }
        self.submit(vec![record], Done::Declared { session: from, req });
        Ok(())
    }

    fn existing(&self, name: &str) -> Result<&Queue, (ErrorCode, String)> {
        self.queues.queues.get(name).ok_or_else(|| (ErrorCode::NoSuchQueue, format!("no queue named {name}")))
    }

    fn peek(&self, peek: &QueuePeek) -> Result<Vec<PeekedMessage>, (ErrorCode, String)> {
        let queue = self.existing(&peek.queue)?;
        Ok(queue
            .peek(peek.count as usize)
            .into_iter()
            .map(|m| PeekedMessage {
                id: m.id,
                priority: m.priority,
                attempts: m.attempts,
                put_at_ms: m.put_at_ms,
                expires_at_ms: m.expires_at_ms,
                headers: Headers::from_wire(m.headers.clone())
                    .map(|h| h.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect())
                    .unwrap_or_default(),
                payload: m.payload.to_vec(),
            })
            .collect())
    }

    fn purge(&mut self, from: SessionId, req: u32, name: &str) -> Result<(), (ErrorCode, String)> {
        self.existing(name)?;
        let Some(queue) = self.queues.queues.get_mut(name) else { return Ok(()) };
        let ids = queue.purge();
        let mut records = vec![Record::Purge { queue: name.to_owned() }];
        for id in &ids {
            records.extend(removal(queue, *id).into_iter().skip(1));
        }
        self.queues.tags.retain(|_, q| q != name);
        self.submit(records, Done::Purged { session: from, req, queue: name.to_owned(), ids });
        Ok(())
    }

    /// Deletes an empty queue nobody consumes from.
    fn delete_queue(&mut self, from: SessionId, req: u32, name: &str) -> Result<(), (ErrorCode, String)> {
        let queue = self.existing(name)?;
        let held = queue.held();
        if held > 0 {
            let message = format!("queue {name} holds {held} messages; purge it before deleting it");
            return Err((ErrorCode::BadRequest, message));
        }
        let consumers = self.queues.consumers.values().filter(|c| c.queue == name).count();
        if consumers > 0 {
            return Err((ErrorCode::BadRequest, format!("queue {name} has {consumers} consumers")));
        }
        self.queues.queues.remove(name);
        self.queues.history.remove(name);
        self.queues.cursors.remove(name);
        let record = Record::Delete { queue: name.to_owned() };
        self.submit(vec![record], Done::Declared { session: from, req });
        Ok(())
    }

    fn queue_infos(&self) -> Vec<QueueInfo> {
        let mut infos: Vec<QueueInfo> = self
            .queues
            .queues
            .values()
            .map(|q| {
                let (put_rate, ack_rate) = self.queues.history.get(&q.name).map_or((0.0, 0.0), rates);
                QueueInfo {
                    queue: q.name.clone(),
                    options: q.options.clone(),
                    depth: q.depth(),
                    in_flight: q.in_flight(),
                    bytes: q.bytes(),
                    consumers: self.queues.consumers.values().filter(|c| c.queue == q.name).count() as u32,
                    put_total: q.counters.put,
                    acked_total: q.counters.acked,
                    dead_lettered_total: q.counters.dead_lettered,
                    dropped_total: q.counters.dropped,
                    put_rate,
                    ack_rate,
                }
            })
            .collect();
        infos.sort_by(|a, b| a.queue.cmp(&b.queue));
        infos
    }

    pub fn queue_state(&self) -> &QueueState {
        &self.queues
    }
}

fn rates(history: &History) -> (f64, f64) {
    match (history.0.front(), history.0.back()) {
        (Some(first), Some(last)) if last.0 > first.0 => {
            let secs = last.0.duration_since(first.0).as_secs_f64();
            ((last.1 - first.1) as f64 / secs, (last.2 - first.2) as f64 / secs)
        }
        _ => (0.0, 0.0),
    }
}

fn stale(tag: u64) -> String {
    format!("delivery {tag} is not outstanding (already acknowledged, returned to the queue, or its consumer is gone)")
}

fn storage_failed(why: &str) -> String {
    format!("the queue store could not write ({why}); nothing was confirmed")
}

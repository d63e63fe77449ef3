//! Durable queues on the router: puts, consumers, acks, dead letters, and
//! the `$sys.queues.*` management calls.
//!
//! Every change that must survive a crash becomes records for the
//! group-commit writer; its reply is sent only when the writer reports the
//! records on disk (`queue_completed`). Deliveries go to consumers with
//! credit (prefetch minus what they hold), round-robin.

mod admin;
mod commits;
pub mod remote;
mod state;

use std::time::{Duration, Instant};

use bytes::Bytes;
use switchboard_proto::{
    ErrorCode, Frame, Headers, QueueDelivery, QueueName, QueuePut, SessionId, MAX_PRODUCER_ID,
};

use crate::policy::Op;
use crate::queues::queue::{Admitted, ConsumerKey, Next};
use crate::queues::record::{Record, StoredMessage};

use super::Router;
use remote::{RemoteQueueOp, REMOTE_TAG};
use state::{now_ms, removal, Consumer};
pub use state::{Done, QueueState};

impl Router {
    pub(super) fn queue_put(&mut self, from: SessionId, put: QueuePut) {
        let QueuePut { req, priority, ttl_ms, queue, dedup_id, headers, payload } = put;
        let access = self.allowed(from, Op::QueuePut, queue.as_str());
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
        if self.queues.remote.keeps(&name) {
            let op = RemoteQueueOp::Put {
                session: from,
                req,
                queue: name,
                priority,
                ttl_ms,
                dedup_id,
                headers,
                payload,
            };
            return self.hand_to_app(from, req, op);
        }
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
        let key = (from, consumer);
        if self.queues.consumers.contains_key(&key) || self.queues.remote.has_consumer(key) {
            let message = format!("consumer id {consumer} is already in use on this connection");
            return self.send_error(from, req, ErrorCode::BadRequest, message);
        }
        if self.queues.remote.keeps(&name) {
            let op =
                RemoteQueueOp::Consume { session: from, consumer, queue: name, prefetch: prefetch.max(1) };
            if self.queues.remote.send(op) {
                self.queues.remote.add_consumer(key);
                return self.send(from, &Frame::Reply { id: req, payload: Bytes::new() });
            }
            return self.send_error(from, req, ErrorCode::ShuttingDown, remote_gone());
        }
        let mut records = Vec::new();
        if let Err((code, message)) = self.queues.ensure(&name, &mut records) {
            return self.send_error(from, req, code, message);
        }
        if !records.is_empty() {
            self.submit(records, Done::Nothing);
        }
        if self.queues.consumers.contains_key(&key) {
            let message = format!("consumer id {consumer} is already in use on this connection");
            return self.send_error(from, req, ErrorCode::BadRequest, message);
        }
        self.queues.consumers.insert(key, Consumer { queue: name.clone(), prefetch: prefetch.max(1) });
        self.send(from, &Frame::Reply { id: req, payload: Bytes::new() });
        self.dispatch(&name);
    }

    pub(super) fn queue_cancel(&mut self, from: SessionId, req: u32, consumer: u32) {
        if self.queues.remote.remove_consumer((from, consumer)) {
            self.queues.remote.send(RemoteQueueOp::Cancel { session: from, consumer });
            return self.send(from, &Frame::Reply { id: req, payload: Bytes::new() });
        }
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

    /// No more deliveries for a consumer; it keeps what it holds. Its
    /// prefetch becomes 0, which `dispatch` never fills.
    pub(super) fn queue_stop(&mut self, from: SessionId, req: u32, consumer: u32) {
        if self.queues.remote.has_consumer((from, consumer)) {
            self.queues.remote.send(RemoteQueueOp::Stop { session: from, consumer });
            return self.send(from, &Frame::Reply { id: req, payload: Bytes::new() });
        }
        match self.queues.consumers.get_mut(&(from, consumer)) {
            Some(stopped) => {
                stopped.prefetch = 0;
                self.send(from, &Frame::Reply { id: req, payload: Bytes::new() });
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
        if self.queues.remote.session_closed(session) {
            self.queues.remote.send(RemoteQueueOp::SessionClosed { session });
        }
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
        if tag & REMOTE_TAG != 0 {
            return self.hand_to_app(from, req, RemoteQueueOp::Ack { session: from, req, tag });
        }
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
        if tag & REMOTE_TAG != 0 {
            return self.hand_to_app(from, req, RemoteQueueOp::Nack { session: from, req, tag, delay_ms });
        }
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

    /// Hands an operation to the app that keeps the queue; it answers `req`.
    fn hand_to_app(&mut self, from: SessionId, req: u32, op: RemoteQueueOp) {
        if !self.queues.remote.send(op) {
            self.send_error(from, req, ErrorCode::ShuttingDown, remote_gone());
        }
    }

    /// Hands a `$sys.queues` call to the app that keeps remote queues.
    pub(in crate::router) fn hand_to_remote_queues(
        &mut self,
        from: SessionId,
        req: u32,
        admin: remote::RemoteAdmin,
    ) {
        if !self.queues.remote.send(RemoteQueueOp::Admin { session: from, req, admin }) {
            self.send_error(from, req, ErrorCode::ShuttingDown, remote_gone());
        }
    }

    /// The app keeps `queue` from now on, or (`keep` false) no longer.
    pub fn keep_remote_queue(&mut self, queue: &str, keep: bool) {
        match keep {
            true => self.queues.remote.add(queue.to_owned()),
            false => self.queues.remote.remove(queue),
        }
    }

    /// A remote queue's app takes `names` and gets their operations.
    pub fn attach_remote_queues(
        &mut self,
        names: std::collections::HashSet<String>,
        app: tokio::sync::mpsc::UnboundedSender<RemoteQueueOp>,
    ) {
        self.queues.remote.attach(names, app);
    }

    pub fn detach_remote_queues(&mut self) {
        self.queues.remote.detach();
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
}

fn remote_gone() -> String {
    "the app that keeps this queue has stopped".to_owned()
}

pub(super) fn stale(tag: u64) -> String {
    format!("delivery {tag} is not outstanding (already acknowledged, returned to the queue, or its consumer is gone)")
}

pub(super) fn storage_failed(why: &str) -> String {
    format!("the queue store could not write ({why}); nothing was confirmed")
}

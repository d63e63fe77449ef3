//! `$sys.queues.*` (list, declare, peek, purge, delete), as `crate::router`'s `sys_calls`
//! dispatches them.

use switchboard_proto::api::SysCall;
use switchboard_proto::sys::{PeekedMessage, QueueDeclare, QueueInfo, QueuePeek};
use switchboard_proto::{ErrorCode, Headers, QueueName, SessionId};

use crate::queues::queue::Queue;
use crate::queues::record::Record;

use super::remote::RemoteAdmin;
use super::state::{options_bytes, removal, Done, History, QueueState};
use super::Router;

impl Router {
    /// The `$sys.queues` call the app that keeps remote queues answers
    /// instead of the router: a list (which it completes with its own), a
    /// fleet declaration, and anything else on a queue it keeps.
    pub(in crate::router) fn remote_admin(&self, call: &SysCall) -> Option<RemoteAdmin> {
        let remote = &self.queues.remote;
        match call {
            SysCall::QueuesList if remote.attached() => Some(RemoteAdmin::List { local: self.queue_infos() }),
            SysCall::QueuesDeclare(declare)
                if declare.fleet
                    && remote.attached()
                    && QueueName::parse(&declare.queue).is_ok()
                    && !self.queues.queues.contains_key(&declare.queue) =>
            {
                let options = declare.options.clone();
                Some(RemoteAdmin::Declare { queue: declare.queue.clone(), options })
            }
            SysCall::QueuesPeek(peek) if remote.keeps(&peek.queue) => {
                Some(RemoteAdmin::Peek { queue: peek.queue.clone(), count: peek.count })
            }
            SysCall::QueuesPurge(queue) if remote.keeps(&queue.queue) => {
                Some(RemoteAdmin::Purge { queue: queue.queue.clone() })
            }
            SysCall::QueuesDelete(queue) if remote.keeps(&queue.queue) => {
                Some(RemoteAdmin::Delete { queue: queue.queue.clone() })
            }
            _ => None,
        }
    }

    /// `$sys.queues.declare`: answered once the declaration is on disk.
    pub(in crate::router) fn declare(
        &mut self,
        from: SessionId,
        req: u32,
        declare: &QueueDeclare,
    ) -> Result<(), (ErrorCode, String)> {
        let name = QueueName::parse(&declare.queue).map_err(|e| (ErrorCode::BadRequest, e.to_string()))?;
        let name = name.as_str().to_owned();
        if declare.fleet {
            // A fleet declaration the app did not take (see `remote_admin`).
            return Err((ErrorCode::BadRequest, match self.queues.remote.attached() {
                true => format!("{name} is a queue on this host's log: delete it before declaring it --fleet"),
                false => format!("{name} cannot be a fleet queue: this daemon has joined no fleet ([fleet] in its config)"),
            }));
        }
        if self.queues.remote.keeps(&name) {
            let message = format!(
                "{name} is kept by the fleet on JetStream ([fleet] queues): it takes no local options"
            );
            return Err((ErrorCode::BadRequest, message));
        }
        let record = Record::Declare { queue: name.clone(), options: options_bytes(&declare.options) };
        match self.queues.queues.get_mut(&name) {
            Some(queue) => queue.options = declare.options.clone(),
            None => {
                if self.queues.counts_toward_limit(&name) {
                    self.queues.room_for_one_more()?;
                }
                self.queues.queues.insert(name.clone(), Queue::new(name.clone(), declare.options.clone()));
            }
        }
        self.submit(vec![record], Done::Declared { session: from, req });
        Ok(())
    }

    fn existing(&self, name: &str) -> Result<&Queue, (ErrorCode, String)> {
        self.queues.queues.get(name).ok_or_else(|| (ErrorCode::NoSuchQueue, format!("no queue named {name}")))
    }

    pub(in crate::router) fn peek(
        &self,
        peek: &QueuePeek,
    ) -> Result<Vec<PeekedMessage>, (ErrorCode, String)> {
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

    pub(in crate::router) fn purge(
        &mut self,
        from: SessionId,
        req: u32,
        name: &str,
    ) -> Result<(), (ErrorCode, String)> {
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
    pub(in crate::router) fn delete_queue(
        &mut self,
        from: SessionId,
        req: u32,
        name: &str,
    ) -> Result<(), (ErrorCode, String)> {
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

    pub(in crate::router) fn queue_infos(&self) -> Vec<QueueInfo> {
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
                    fleet: None,
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

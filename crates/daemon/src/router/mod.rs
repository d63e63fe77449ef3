//! The router: all routing state, behind one lock that is never held across
//! an `.await`.
//!
//! Sessions hand it decoded frames ([`Router::handle`]); it answers by
//! pushing frames into destination sessions' [`Outbox`]es — the only way it
//! touches a connection. It reads headers only: payloads are passed on as the
//! same `Bytes`, never copied.
//!
//! Slow destinations: for calls and notifications, [`Router::handle`]
//! returns a congested destination and the sending session waits for it to
//! drain (backpressure). For topics, the publisher never waits: messages go
//! to the subscription's bounded backlog (see [`topics`]) and the
//! subscriber's session pumps it ([`Router::pump`]) as its socket drains.

pub mod access;
mod admission;
mod blobs;
mod calls;
mod direct;
mod holds;
mod monitors;
mod pending;
mod pubsub;
pub mod queues;
mod recheck;
mod regions;
mod registry;
pub mod stats;
mod sys_calls;
#[cfg(test)]
mod tests;
pub mod topics;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use switchboard_proto::sys::{self, RegistryEvent};
use switchboard_proto::{Caller, ErrorCode, Frame, InstanceId, MethodSpec, ServiceName, SessionId, Topic};
use switchboard_transport::Outbox;
use tokio_util::sync::CancellationToken;

use crate::policy::{Op, Principal, Rules};
use crate::Limits;
pub use holds::Hold;
use pending::Pending;
pub use pending::PendingCall;
pub use registry::{Instance, Registry};
use topics::{BacklogSignal, Retained, SubId, Topics};

/// A connected client, as the router sees it.
pub struct SessionEntry {
    pub outbox: Arc<Outbox>,
    /// Ends the session's tasks (slow consumer, shutdown).
    pub kill: CancellationToken,
    /// Raised while a subscription of this session has a backlog to pump.
    pub backlog: Arc<BacklogSignal>,
    pub client_name: String,
    pub caller: Caller,
    /// Who it verifiably is, and the rules of the policy that apply to it.
    pub principal: Principal,
    pub rules: Arc<Rules>,
    /// Calls (and broadcasts) this session made that await an answer.
    pub inflight: u32,
    /// Registry watches: request ids to send events under.
    pub watches: Vec<u32>,
    pub subscriptions: Vec<SubId>,
    /// What the backlogs of all its subscriptions hold (bounded by
    /// `Limits::session_backlog_bytes`).
    pub backlogged: topics::SessionBacklog,
    /// The circuit breakers it reported open or half-open.
    pub breakers: Vec<sys::BreakerInfo>,
}

/// Payloads smaller than this are copied before the router keeps them
/// (backlogs, retained values, queue messages): a slice of a connection's
/// read buffer would keep the whole buffer (up to 256 KiB, or a large
/// frame's) alive for a few bytes.
pub(crate) const DETACH_BELOW: usize = 256 * 1024;

/// `bytes` as the router may keep it for long: small payloads in their own
/// allocation, and blobs (which fit a frame, or they are refused before)
/// copied, so that nothing kept for long holds a descriptor.
pub(crate) fn detached(bytes: Bytes) -> Bytes {
    if switchboard_transport::Blob::of(&bytes).is_some() {
        return Bytes::copy_from_slice(&bytes);
    }
    if bytes.is_empty() || bytes.len() >= DETACH_BELOW {
        bytes
    } else {
        Bytes::copy_from_slice(&bytes)
    }
}

impl SessionEntry {
    /// Queues `frame` for this session (`id`). A closed outbox means the
    /// session is going away and its cleanup handles what it was owed; one
    /// that closed at its hard limit ends the session, whatever the frame.
    pub fn push(&self, id: SessionId, frame: &Frame) {
        let pushed = self.outbox.push(frame);
        self.pushed(id, pushed);
    }

    /// Queues a frame encoded whole (see [`Outbox::push_encoded`]).
    pub fn push_encoded(&self, id: SessionId, frame: &[u8]) {
        let pushed = self.outbox.push_encoded(frame);
        self.pushed(id, pushed);
    }

    /// Disconnects the session if that push closed its outbox at the limit.
    fn pushed(&self, id: SessionId, pushed: Result<(), switchboard_transport::OutboxClosed>) {
        if pushed.is_err() && self.outbox.take_overflow() {
            tracing::warn!(
                session = id,
                principal = %self.caller.principal,
                queued = self.outbox.queued_bytes(),
                "disconnecting: more is waiting to be written to it than its limit (it stopped reading)"
            );
            self.kill.cancel();
        }
    }
}

/// What a session hands the router when it is admitted.
pub struct SessionLink {
    pub outbox: Arc<Outbox>,
    pub kill: CancellationToken,
    pub backlog: Arc<BacklogSignal>,
    pub client_name: String,
    pub uid: u32,
    pub pid: u32,
}

/// A destination whose outbox is over its threshold: the session that sent
/// to it waits for it to drain before reading more.
/// A destination the sending session waits for before it reads on.
pub struct Congested {
    pub session: SessionId,
    pub outbox: Arc<Outbox>,
    pub wait: Wait,
}

/// How long the sender waits for a [`Congested`] destination, and what then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// A callee or caller that must read what it was sent: dropped if it
    /// reads nothing for `Limits::slow_consumer`.
    Reader,
    /// A subscriber whose backlog a publication just joined: the publisher
    /// is held back up to `Limits::publish_hold`, then the subscriber lags
    /// (its backlog drops its oldest) instead.
    Subscriber,
}

/// A map on the message path: looked up for every message and every
/// subscriber, so hashed with foldhash (its keys are ids the daemon assigns
/// or topic tokens; each map is seeded on its own).
pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// A frame the session must not send; the session is closed with this reason.
#[derive(Debug, thiserror::Error)]
#[error("unexpected {0} frame from a client")]
pub struct UnexpectedFrame(pub &'static str);

/// All routing state of the daemon.
pub struct Router {
    sessions: FastMap<SessionId, SessionEntry>,
    registry: Registry,
    pending: Pending,
    /// Broadcasts in progress: (caller, caller's id) → answers still due.
    broadcasts: HashMap<(SessionId, u32), u32>,
    topics: Topics,
    queues: queues::QueueState,
    holds: holds::Holds,
    access: access::Access,
    grants: direct::Grants,
    /// Reused for topic matches, so publishing allocates nothing.
    matched: Vec<SubId>,
    /// Reused to encode a publication once for all its subscribers.
    encoded: bytes::BytesMut,
    next_session: SessionId,
    limits: Limits,
    data_dir: std::path::PathBuf,
    shutting_down: bool,
    started: Instant,
    generation: u32,
    stats: stats::Stats,
    monitors: monitors::Monitors,
    regions: regions::Regions,
    /// This host's name in the fleet, once the fleet app joined one: a
    /// call naming it (`sb-host`) stays here.
    fleet_host: Option<String>,
}

impl Router {
    pub fn new(limits: Limits, data_dir: std::path::PathBuf, queues: queues::QueueState) -> Self {
        Self {
            sessions: FastMap::default(),
            registry: Registry::default(),
            pending: Pending::default(),
            broadcasts: HashMap::new(),
            topics: Topics::default(),
            queues,
            holds: holds::Holds::default(),
            access: access::Access::default(),
            grants: direct::Grants::default(),
            matched: Vec::new(),
            encoded: bytes::BytesMut::new(),
            next_session: 0,
            limits,
            data_dir,
            shutting_down: false,
            started: Instant::now(),
            generation: 0,
            stats: stats::Stats::default(),
            monitors: monitors::Monitors::default(),
            regions: regions::Regions::default(),
            fleet_host: None,
        }
    }

    /// Takes over what a predecessor daemon handed on: how many times it
    /// re-executed, and its retained values (as many as the limit allows).
    pub fn inherit(&mut self, generation: u32, retained: Vec<(Topic, Retained)>) {
        self.generation = generation;
        let limit = self.limits.max_retained;
        let dropped = retained
            .into_iter()
            .filter(|(topic, value)| !self.topics.retain(topic, value.clone(), limit))
            .count();
        if dropped > 0 {
            tracing::warn!(dropped, "retained values over the limit were not carried over");
        }
    }

    /// How many times this daemon re-executed itself (`switchboard reexec`).
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// Admits a connection that completed its handshake as `principal`;
    /// returns its id, or why it is refused (too many connections of it).
    pub fn add_session(
        &mut self,
        link: SessionLink,
        principal: Principal,
    ) -> Result<SessionId, access::Refusal> {
        let length = principal.name.as_str().len();
        if length > switchboard_proto::MAX_PRINCIPAL_NAME {
            let message = format!(
                "principal name of {length} bytes is longer than the protocol carries ({})",
                switchboard_proto::MAX_PRINCIPAL_NAME
            );
            return Err((ErrorCode::BadRequest, message));
        }
        self.admit_principal(&principal)?;
        let SessionLink { outbox, kill, backlog, client_name, uid, pid } = link;
        self.next_session += 1;
        let session = self.next_session;
        let caller = Caller { session, uid, pid, principal: principal.name.clone() };
        let rules = access::rules_for(&self.access.policy, &principal);
        self.sessions.insert(
            session,
            SessionEntry {
                outbox,
                kill,
                backlog,
                client_name,
                caller,
                principal,
                rules,
                inflight: 0,
                watches: Vec::new(),
                subscriptions: Vec::new(),
                backlogged: topics::SessionBacklog::default(),
                breakers: Vec::new(),
            },
        );
        Ok(session)
    }

    /// Acts on one frame from `from`. Returns a congested destination the
    /// session should wait for before reading on.
    pub fn handle(&mut self, from: SessionId, frame: Frame) -> Result<Option<Congested>, UnexpectedFrame> {
        let Some(frame) = self.admit_blob(from, frame) else {
            return Ok(None);
        };
        match frame {
            Frame::Call(call) => return Ok(self.call(from, call)),
            Frame::Notify(notify) => return Ok(self.notify(from, notify)),
            Frame::Broadcast(broadcast) => return Ok(self.broadcast(from, broadcast)),
            Frame::Reply { id, payload } => self.answer(from, id, Ok(payload)),
            Frame::Error { id, code, message } => self.answer(from, id, Err((code, message))),
            Frame::Hops { id, headers } => self.hops(from, id, headers),
            Frame::Publish(publish) => return Ok(self.publish(from, publish)),
            Frame::Subscribe { req, sid, pattern } => self.subscribe(from, req, sid, pattern),
            Frame::Unsubscribe { req, sid } => self.unsubscribe(from, req, sid),
            Frame::Lagged { sid, missed } => self.client_lagged(from, sid, missed),
            Frame::QueuePut(put) => self.queue_put(from, put),
            Frame::QueueConsume { req, consumer, prefetch, queue } => {
                self.queue_consume(from, req, consumer, prefetch, queue)
            }
            Frame::QueueCancel { req, consumer } => self.queue_cancel(from, req, consumer),
            Frame::QueueStop { req, consumer } => self.queue_stop(from, req, consumer),
            Frame::QueueAck { req, tag } => self.queue_ack(from, req, tag),
            Frame::QueueNack { req, tag, delay_ms } => self.queue_nack(from, req, tag, delay_ms),
            Frame::Register { req, service, methods } => self.register(from, req, service, methods),
            Frame::Unregister { req, instance } => self.unregister(from, req, instance),
            Frame::Watch { req } => self.watch(from, req),
            Frame::Revoke { grant, .. } => self.release_grant(from, grant),
            other => return Err(UnexpectedFrame(other.kind_name())),
        }
        Ok(None)
    }

    /// Sends `frame` to session `to` (an app answering for the router:
    /// a remote queue's replies and deliveries).
    pub fn deliver_to(&self, to: SessionId, frame: &Frame) {
        self.send(to, frame);
    }

    fn send(&self, to: SessionId, frame: &Frame) {
        if let Some(session) = self.sessions.get(&to) {
            session.push(to, frame);
        }
    }

    fn send_error(&self, to: SessionId, id: u32, code: ErrorCode, message: String) {
        self.send(to, &Frame::Error { id, code, message });
    }

    /// Refuses a call before any instance was chosen, and counts it.
    fn refuse_call(&mut self, to: SessionId, id: u32, code: ErrorCode, message: String) {
        self.stats.refused(code);
        self.send_error(to, id, code, message);
    }

    fn register(&mut self, from: SessionId, req: u32, service: ServiceName, methods: Vec<MethodSpec>) {
        if service.is_reserved() && !self.is_daemon_session(from) {
            let message = format!("service name {service} is reserved for the daemon");
            return self.send_error(from, req, ErrorCode::BadRequest, message);
        }
        if let Err((code, message)) = self.permit(from, Op::Serve, service.as_str()) {
            return self.send_error(from, req, code, message);
        }
        if methods.is_empty() {
            let message = format!("registration of {service} declares no methods");
            return self.send_error(from, req, ErrorCode::BadRequest, message);
        }
        let remote = self.sessions.get(&from).is_some_and(|s| s.principal.is_fleet());
        let instance = self.registry.add_instance(service.clone(), from, methods, remote);
        self.revoke_balanced(&service);
        self.send(from, &Frame::Registered { req, instance });
        tracing::info!(session = from, %service, instance, "instance up");
        self.announce("up", instance);
    }

    fn unregister(&mut self, from: SessionId, req: u32, instance: InstanceId) {
        match self.registry.get(instance) {
            Some(i) if i.session == from => {}
            _ => {
                let message = format!("this connection has no instance {instance}");
                return self.send_error(from, req, ErrorCode::NoSuchInstance, message);
            }
        }
        self.remove_instance(instance, ErrorCode::InstanceGone, "the instance unregistered mid-call");
        self.send(from, &Frame::Reply { id: req, payload: Bytes::new() });
    }

    fn remove_instance(&mut self, instance: InstanceId, code: ErrorCode, why: &str) {
        self.announce("down", instance);
        self.revoke_instance(instance);
        let orphaned = self.pending.drain_where(|call| call.instance == instance);
        self.fail_calls(orphaned, code, why);
        if let Some(removed) = self.registry.remove(instance) {
            tracing::info!(session = removed.session, service = %removed.service, instance, "instance down");
        }
    }

    fn watch(&mut self, from: SessionId, req: u32) {
        if let Err((code, message)) = self.permit(from, Op::Call, "$sys.registry.watch") {
            return self.send_error(from, req, code, message);
        }
        if let Some(session) = self.sessions.get_mut(&from) {
            session.watches.push(req);
        }
        self.send(from, &Frame::Reply { id: req, payload: Bytes::new() });
    }

    /// Tells every watcher that `instance` came up or is going down.
    fn announce(&self, event: &str, instance: InstanceId) {
        let Some(i) = self.registry.get(instance).filter(|i| !i.service.is_reserved()) else {
            return;
        };
        let client = self.sessions.get(&i.session).map(|s| s.client_name.clone()).unwrap_or_default();
        let payload = Bytes::from(sys::encode(&RegistryEvent {
            event: event.to_owned(),
            service: i.service.to_string(),
            instance,
            methods: i.methods.iter().map(|m| m.name.to_string()).collect(),
            client,
        }));
        for (id, session) in &self.sessions {
            for req in &session.watches {
                session.push(*id, &Frame::Event { req: *req, payload: payload.clone() });
            }
        }
    }

    /// Forgets a connection: its instances go down (their callers learn at
    /// once), its subscriptions end, and calls it was waiting on are dropped.
    pub fn remove_session(&mut self, session: SessionId) {
        let (code, why) = if self.shutting_down {
            (ErrorCode::ShuttingDown, "the daemon is shutting down")
        } else {
            (ErrorCode::InstanceGone, "the instance disconnected before replying")
        };
        for instance in self.registry.of_session(session) {
            self.remove_instance(instance, code, why);
        }
        self.revoke_caller(session);
        for call in self.pending.drain_where(|call| call.caller == session) {
            self.release(&call);
        }
        self.broadcasts.retain(|(caller, _), _| *caller != session);
        self.monitors.session_closed(session);
        self.regions.session_closed(session);
        self.queue_session_closed(session);
        if let Some(entry) = self.sessions.remove(&session) {
            self.release_principal(&entry.caller.principal);
            for sub in entry.subscriptions {
                if let Some(sub) = self.topics.unsubscribe(sub) {
                    self.stats.subscription_ended(sub.pattern.as_str(), sub.delivered, sub.missed);
                }
            }
            entry.outbox.close();
        }
    }

    /// Ends a session (a slow consumer): its tasks stop and its cleanup runs.
    pub fn kill_session(&mut self, session: SessionId) {
        if let Some(entry) = self.sessions.get(&session) {
            entry.kill.cancel();
        }
    }

    /// Answers every call whose deadline has passed with `Timeout`.
    pub fn expire(&mut self, now: Instant) {
        let expired = self.pending.drain_where(|call| call.deadline <= now);
        self.fail_calls(expired, ErrorCode::Timeout, "no reply before the deadline");
        self.expire_parked(now);
        self.queue_tick(now);
    }

    /// Begins shutdown: new calls are refused, calls in flight are answered
    /// with `ShuttingDown`, every client is told goodbye and its outbox closed.
    pub fn shut_down(&mut self) {
        self.shutting_down = true;
        let all = self.pending.drain_where(|_| true);
        self.fail_calls(all, ErrorCode::ShuttingDown, "the daemon is shutting down");
        let goodbye =
            Frame::Goodbye { code: ErrorCode::ShuttingDown, message: "the daemon is shutting down".into() };
        for session in self.sessions.values() {
            let _ = session.outbox.push(&goodbye);
            session.outbox.close();
        }
    }

    /// Whether `session` is a connection of this daemon process itself (the
    /// supervisor), as the kernel's peer credentials say.
    pub fn set_fleet_host(&mut self, host: Option<String>) {
        self.fleet_host = host;
    }

    pub fn is_daemon_session(&self, session: SessionId) -> bool {
        self.sessions.get(&session).is_some_and(|s| s.principal.is_daemon())
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    pub fn sessions(&self) -> &FastMap<SessionId, SessionEntry> {
        &self.sessions
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn calls_in_flight(&self) -> usize {
        self.pending.len()
    }

    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn stats(&self) -> &stats::Stats {
        &self.stats
    }
}

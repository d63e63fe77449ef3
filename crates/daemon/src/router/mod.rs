//! The router: all routing state, behind one lock that is never held across
//! an `.await`.
//!
//! Sessions hand it decoded frames ([`Router::handle`]); it answers by
//! pushing frames into the destination session's [`Outbox`] — the only way it
//! touches a connection. It reads headers only: payloads are passed on as the
//! same `Bytes`, never copied.
//!
//! Slow destinations: [`Router::handle`] returns the destination's outbox
//! when it is congested, and the calling session waits for it to drain
//! before reading more (backpressure), so no queue grows without bound.

mod pending;
mod registry;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use switchboard_proto::sys::{self, RegistryEvent};
use switchboard_proto::{
    Call, Caller, ErrorCode, Frame, InstanceId, MethodName, Notify, Request, ServiceName, SessionId,
};
use switchboard_transport::Outbox;
use tokio_util::sync::CancellationToken;

use crate::Limits;
use pending::Pending;
pub use pending::PendingCall;
pub use registry::{Instance, Registry};

/// Bytes a `Request` frame adds around its payload, beyond the method name.
const REQUEST_OVERHEAD: usize = 1 + 4 + 4 + 8 + 8 + 4 + 4 + 1;

/// A connected client, as the router sees it.
pub struct SessionEntry {
    pub outbox: Arc<Outbox>,
    /// Ends the session's tasks (slow consumer, shutdown).
    pub kill: CancellationToken,
    pub client_name: String,
    pub caller: Caller,
    /// Calls this session made that await a reply.
    pub inflight: u32,
    /// Registry watches: request ids to send events under.
    pub watches: Vec<u32>,
}

/// A destination whose outbox is over its threshold: the session that sent
/// to it waits for it to drain before reading more.
pub type Congested = (SessionId, Arc<Outbox>);

/// A frame the session must not send; the session is closed with this reason.
#[derive(Debug, thiserror::Error)]
#[error("unexpected {0} frame from a client")]
pub struct UnexpectedFrame(pub &'static str);

/// All routing state of the daemon.
pub struct Router {
    sessions: HashMap<SessionId, SessionEntry>,
    registry: Registry,
    pending: Pending,
    next_session: SessionId,
    limits: Limits,
    shutting_down: bool,
    started: Instant,
}

impl Router {
    pub fn new(limits: Limits) -> Self {
        Self {
            sessions: HashMap::new(),
            registry: Registry::default(),
            pending: Pending::default(),
            next_session: 0,
            limits,
            shutting_down: false,
            started: Instant::now(),
        }
    }

    /// Admits a connection that completed its handshake; returns its id.
    pub fn add_session(
        &mut self,
        outbox: Arc<Outbox>,
        kill: CancellationToken,
        client_name: String,
        uid: u32,
        pid: u32,
    ) -> SessionId {
        self.next_session += 1;
        let session = self.next_session;
        let caller = Caller { session, uid, pid };
        self.sessions.insert(
            session,
            SessionEntry {
                outbox,
                kill,
                client_name,
                caller,
                inflight: 0,
                watches: Vec::new(),
            },
        );
        session
    }

    /// Acts on one frame from `from`. Returns a congested destination the
    /// session should wait for before reading on.
    pub fn handle(
        &mut self,
        from: SessionId,
        frame: Frame,
    ) -> Result<Option<Congested>, UnexpectedFrame> {
        match frame {
            Frame::Call(call) => return Ok(self.call(from, call)),
            Frame::Notify(notify) => return Ok(self.notify(from, notify)),
            Frame::Reply { id, payload } => self.answer(from, id, Ok(payload)),
            Frame::Error { id, code, message } => self.answer(from, id, Err((code, message))),
            Frame::Register {
                req,
                service,
                methods,
            } => self.register(from, req, service, methods),
            Frame::Unregister { req, instance } => self.unregister(from, req, instance),
            Frame::Watch { req } => self.watch(from, req),
            other => return Err(UnexpectedFrame(other.kind_name())),
        }
        Ok(None)
    }

    fn send(&self, to: SessionId, frame: &Frame) {
        if let Some(session) = self.sessions.get(&to) {
            // A closed outbox means the session is going away; its cleanup
            // handles everything it was owed.
            let _ = session.outbox.push(frame);
        }
    }

    fn send_error(&self, to: SessionId, id: u32, code: ErrorCode, message: String) {
        self.send(to, &Frame::Error { id, code, message });
    }

    fn call(&mut self, from: SessionId, call: Call) -> Option<Congested> {
        let Call {
            id,
            timeout_ms,
            instance,
            service,
            method,
            payload,
        } = call;
        if self.shutting_down {
            self.send_error(
                from,
                id,
                ErrorCode::ShuttingDown,
                "the daemon is shutting down".into(),
            );
            return None;
        }
        if service.is_reserved() {
            match crate::admin::call(self, &service, &method, &payload) {
                Ok(reply) => self.send(from, &Frame::Reply { id, payload: reply }),
                Err((code, message)) => self.send_error(from, id, code, message),
            }
            return None;
        }
        let caller = self.sessions.get(&from)?;
        if caller.inflight >= self.limits.max_inflight {
            let message = format!(
                "this connection already has {} calls in flight (the limit)",
                self.limits.max_inflight
            );
            self.send_error(from, id, ErrorCode::Overloaded, message);
            return None;
        }
        if payload.len() + REQUEST_OVERHEAD + method.as_bytes().len()
            > self.limits.max_frame as usize
        {
            let message = format!(
                "payload of {} bytes does not fit the maximum frame of {} bytes",
                payload.len(),
                self.limits.max_frame
            );
            self.send_error(from, id, ErrorCode::PayloadTooLarge, message);
            return None;
        }
        let chosen = match self.registry.choose(&service, &method, instance) {
            Ok(chosen) => chosen,
            Err((code, message)) => {
                self.send_error(from, id, code, message);
                return None;
            }
        };
        let caller = caller.caller;
        let timeout = Duration::from_millis(u64::from(timeout_ms));
        let deadline = Instant::now() + timeout;
        let daemon_id = self.pending.insert(PendingCall {
            caller: from,
            caller_id: id,
            instance: chosen,
            deadline,
        });
        let callee = self.registry.get_mut(chosen)?;
        callee.outstanding += 1;
        callee.delivered += 1;
        let callee_session = callee.session;
        if let Some(session) = self.sessions.get_mut(&from) {
            session.inflight += 1;
        }
        let request = Frame::Request(Request {
            id: daemon_id,
            timeout_ms,
            instance: chosen,
            caller,
            method,
            payload,
        });
        self.deliver(callee_session, &request)
    }

    fn notify(&mut self, from: SessionId, notify: Notify) -> Option<Congested> {
        let Notify {
            instance,
            service,
            method,
            payload,
        } = notify;
        if self.shutting_down || service.is_reserved() {
            return None;
        }
        let chosen = match self.registry.choose(&service, &method, instance) {
            Ok(chosen) => chosen,
            Err((_, why)) => {
                tracing::debug!(session = from, "notification dropped: {why}");
                return None;
            }
        };
        let caller = self.sessions.get(&from)?.caller;
        let callee = self.registry.get_mut(chosen)?;
        callee.delivered += 1;
        let callee_session = callee.session;
        let request = Frame::Request(Request {
            id: 0,
            timeout_ms: 0,
            instance: chosen,
            caller,
            method,
            payload,
        });
        self.deliver(callee_session, &request)
    }

    fn deliver(&self, to: SessionId, frame: &Frame) -> Option<Congested> {
        let session = self.sessions.get(&to)?;
        let _ = session.outbox.push(frame);
        session
            .outbox
            .is_congested()
            .then(|| (to, session.outbox.clone()))
    }

    /// A reply or error from a callee: forward it to the caller.
    fn answer(&mut self, from: SessionId, id: u32, result: Result<Bytes, (ErrorCode, String)>) {
        // Only the session serving the call may answer it.
        let owner = self
            .pending
            .get(id)
            .and_then(|call| self.registry.get(call.instance))
            .map(|instance| instance.session);
        if owner != Some(from) {
            tracing::debug!(
                session = from,
                id,
                "answer to an unknown or expired call dropped"
            );
            return;
        }
        let Some(call) = self.finish(id) else { return };
        let frame = match result {
            Ok(payload) => Frame::Reply {
                id: call.caller_id,
                payload,
            },
            Err((code, message)) => Frame::Error {
                id: call.caller_id,
                code,
                message,
            },
        };
        self.send(call.caller, &frame);
    }

    /// Removes a pending call and its counts.
    fn finish(&mut self, id: u32) -> Option<PendingCall> {
        let call = self.pending.remove(id)?;
        self.release(&call);
        Some(call)
    }

    fn release(&mut self, call: &PendingCall) {
        if let Some(instance) = self.registry.get_mut(call.instance) {
            instance.outstanding = instance.outstanding.saturating_sub(1);
        }
        if let Some(session) = self.sessions.get_mut(&call.caller) {
            session.inflight = session.inflight.saturating_sub(1);
        }
    }

    fn fail_calls(&mut self, calls: Vec<PendingCall>, code: ErrorCode, why: &str) {
        for call in calls {
            self.release(&call);
            self.send_error(call.caller, call.caller_id, code, why.to_owned());
        }
    }

    fn register(
        &mut self,
        from: SessionId,
        req: u32,
        service: ServiceName,
        methods: Vec<MethodName>,
    ) {
        if service.is_reserved() {
            let message = format!("service name {service} is reserved for the daemon");
            return self.send_error(from, req, ErrorCode::BadRequest, message);
        }
        if methods.is_empty() {
            let message = format!("registration of {service} declares no methods");
            return self.send_error(from, req, ErrorCode::BadRequest, message);
        }
        let instance = self.registry.add(service.clone(), from, methods);
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
        self.remove_instance(
            instance,
            ErrorCode::InstanceGone,
            "the instance unregistered mid-call",
        );
        self.send(
            from,
            &Frame::Reply {
                id: req,
                payload: Bytes::new(),
            },
        );
    }

    fn remove_instance(&mut self, instance: InstanceId, code: ErrorCode, why: &str) {
        self.announce("down", instance);
        let orphaned = self.pending.drain_where(|call| call.instance == instance);
        self.fail_calls(orphaned, code, why);
        if let Some(removed) = self.registry.remove(instance) {
            tracing::info!(session = removed.session, service = %removed.service, instance, "instance down");
        }
    }

    fn watch(&mut self, from: SessionId, req: u32) {
        if let Some(session) = self.sessions.get_mut(&from) {
            session.watches.push(req);
        }
        self.send(
            from,
            &Frame::Reply {
                id: req,
                payload: Bytes::new(),
            },
        );
    }

    /// Tells every watcher that `instance` came up or is going down.
    fn announce(&self, event: &str, instance: InstanceId) {
        let Some(i) = self.registry.get(instance) else {
            return;
        };
        let client = self
            .sessions
            .get(&i.session)
            .map(|s| s.client_name.clone())
            .unwrap_or_default();
        let payload = Bytes::from(sys::encode(&RegistryEvent {
            event: event.to_owned(),
            service: i.service.to_string(),
            instance,
            methods: i.methods.iter().map(ToString::to_string).collect(),
            client,
        }));
        for session in self.sessions.values() {
            for req in &session.watches {
                let _ = session.outbox.push(&Frame::Event {
                    req: *req,
                    payload: payload.clone(),
                });
            }
        }
    }

    /// Forgets a connection: its instances go down (their callers learn at
    /// once), and calls it was waiting on are dropped.
    pub fn remove_session(&mut self, session: SessionId) {
        let (code, why) = if self.shutting_down {
            (ErrorCode::ShuttingDown, "the daemon is shutting down")
        } else {
            (
                ErrorCode::InstanceGone,
                "the instance disconnected before replying",
            )
        };
        for instance in self.registry.of_session(session) {
            self.remove_instance(instance, code, why);
        }
        for call in self.pending.drain_where(|call| call.caller == session) {
            self.release(&call);
        }
        if let Some(entry) = self.sessions.remove(&session) {
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
    }

    /// Begins shutdown: new calls are refused, calls in flight are answered
    /// with `ShuttingDown`, every client is told goodbye and its outbox closed.
    pub fn shut_down(&mut self) {
        self.shutting_down = true;
        let all = self.pending.drain_where(|_| true);
        self.fail_calls(all, ErrorCode::ShuttingDown, "the daemon is shutting down");
        let goodbye = Frame::Goodbye {
            code: ErrorCode::ShuttingDown,
            message: "the daemon is shutting down".into(),
        };
        for session in self.sessions.values() {
            let _ = session.outbox.push(&goodbye);
            session.outbox.close();
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn sessions(&self) -> &HashMap<SessionId, SessionEntry> {
        &self.sessions
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn calls_in_flight(&self) -> usize {
        self.pending.len()
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}

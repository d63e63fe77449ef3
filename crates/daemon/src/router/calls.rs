//! Calls, notifications and broadcasts: choosing instances, forwarding
//! requests, and routing every answer (or its absence) back to the caller.

use std::time::{Duration, Instant};

use bytes::Bytes;
use switchboard_proto::api::SysCall;
use switchboard_proto::{
    Broadcast, Call, ErrorCode, Frame, Headers, InstanceId, MethodName, Notify, Request, ServiceName,
    SessionId,
};

use super::pending::CountedAs;
use super::{Congested, PendingCall, Router};
use crate::policy::Op;

/// An answer as the callee (or the daemon on its behalf) gave it.
pub(super) type Outcome = Result<Bytes, (ErrorCode, String)>;

impl Router {
    pub(super) fn call(&mut self, from: SessionId, call: Call) -> Option<Congested> {
        if call.service.is_reserved() {
            if let Some(decoded) = SysCall::decode(call.service.as_str(), call.method.as_str(), &call.payload)
            {
                return self.sys_call(from, &call, decoded);
            }
        }
        if let Err((code, message)) = self.allowed_call(from, &call.service, &call.method, &call.payload) {
            self.refuse_call(from, call.id, code, message);
            return None;
        }
        let call = self.check_hold(from, call)?;
        self.route_call(from, call)
    }

    /// Routes a call already allowed (policy, rate) and past any hold.
    pub(super) fn route_call(&mut self, from: SessionId, call: Call) -> Option<Congested> {
        let Call { id, timeout_ms, instance, service, method, headers, payload } = call;
        let chosen = self
            .admit(from, &method, &headers, &payload)
            .and_then(|()| self.choose_placed(&service, &method, instance, &headers))
            .and_then(|chosen| {
                let callee = self.registry.get(chosen).map_or(0, |i| i.session);
                self.reaches(callee, &payload).map(|()| chosen)
            });
        let chosen = match chosen {
            Ok(chosen) => chosen,
            Err((code, message)) => {
                self.refuse_call(from, id, code, message);
                return None;
            }
        };
        if let Some(session) = self.sessions.get_mut(&from) {
            session.inflight += 1;
        }
        self.monitor_call("call", from, &service, &method, chosen, &headers, payload.len());
        let now = Instant::now();
        let deadline = now + Duration::from_millis(u64::from(timeout_ms));
        let counted = Some(CountedAs { slot: self.stats.slot(&service, &method), started: now });
        let call = PendingCall {
            caller: from,
            caller_id: id,
            instance: chosen,
            deadline,
            broadcast: false,
            counted,
        };
        self.forward(call, timeout_ms, method, headers, payload)
    }

    /// The instance for a call or notification: the one asked for, else on
    /// the host its `sb-host` names (here, or the fleet's stand-in), else
    /// the registry's choice (this host's instances first).
    fn choose_placed(
        &mut self,
        service: &ServiceName,
        method: &MethodName,
        instance: InstanceId,
        headers: &Headers,
    ) -> Result<InstanceId, (ErrorCode, String)> {
        match headers.get(switchboard_proto::fleet::HOST_HEADER) {
            None => self.registry.choose(service, method, instance),
            Some(host) if Some(host) == self.fleet_host.as_deref() => {
                self.registry.choose_here(service, method)
            }
            Some(_) => self.registry.choose_remote(service, method),
        }
    }

    /// Records a pending call and sends its `Request` to the instance.
    pub(super) fn forward(
        &mut self,
        call: PendingCall,
        timeout_ms: u32,
        method: MethodName,
        headers: Headers,
        payload: Bytes,
    ) -> Option<Congested> {
        let caller = self.sessions.get(&call.caller)?.caller.clone();
        let instance = call.instance;
        let id = self.pending.insert(call);
        let callee = self.registry.get_mut(instance)?;
        callee.outstanding += 1;
        callee.delivered += 1;
        let to = callee.session;
        let request = Request { id, timeout_ms, instance, caller, method, headers, payload };
        self.deliver(to, &Frame::Request(request))
    }

    pub(super) fn notify(&mut self, from: SessionId, notify: Notify) -> Option<Congested> {
        let Notify { all, instance, service, method, headers, payload } = notify;
        let reserved = service.is_reserved() && !self.registry.has(&service);
        if self.shutting_down || reserved || (method.is_reserved() && !self.is_daemon_session(from)) {
            return None;
        }
        if let Err((code, message)) = self.allowed(from, Op::Notify, &format!("{service}.{method}")) {
            // A notification has no reply: the refusal goes back under id 0.
            self.send_error(from, 0, code, message);
            return None;
        }
        let targets = if all {
            let fleet = headers.get(switchboard_proto::fleet::FLEET_HEADER).is_some();
            self.registry.serving_where(&service, &method, fleet)
        } else {
            self.choose_placed(&service, &method, instance, &headers).map(|chosen| vec![chosen])
        };
        let targets = match targets {
            Ok(targets) => targets,
            Err((_, why)) => {
                tracing::debug!(session = from, "notification dropped: {why}");
                return None;
            }
        };
        let caller = self.sessions.get(&from)?.caller.clone();
        let single = if all { 0 } else { targets.first().copied().unwrap_or(0) };
        self.monitor_call("notify", from, &service, &method, single, &headers, payload.len());
        let mut congested = None;
        for instance in targets {
            let Some(to) = self.registry.get(instance).map(|i| i.session) else {
                continue;
            };
            if let Err((code, message)) = self.reaches(to, &payload) {
                self.send_error(from, 0, code, message);
                continue;
            }
            if let Some(callee) = self.registry.get_mut(instance) {
                callee.delivered += 1;
            }
            let request = Request {
                id: 0,
                timeout_ms: 0,
                instance,
                caller: caller.clone(),
                method: method.clone(),
                headers: headers.clone(),
                payload: payload.clone(),
            };
            congested = self.deliver(to, &Frame::Request(request)).or(congested);
        }
        congested
    }

    pub(super) fn broadcast(&mut self, from: SessionId, broadcast: Broadcast) -> Option<Congested> {
        let Broadcast { id, timeout_ms, service, method, headers, payload } = broadcast;
        let targets = self
            .allowed_call(from, &service, &method, &payload)
            .and_then(|()| self.admit(from, &method, &headers, &payload))
            .and_then(|()| {
                let fleet = headers.get(switchboard_proto::fleet::FLEET_HEADER).is_some();
                self.registry.serving_where(&service, &method, fleet)
            });
        let targets = match targets {
            Ok(targets) => targets,
            Err((code, message)) => {
                self.refuse_call(from, id, code, message);
                return None;
            }
        };
        self.send(from, &Frame::BroadcastStart { id, instances: targets.clone() });
        self.monitor_call("broadcast", from, &service, &method, 0, &headers, payload.len());
        if let Some(session) = self.sessions.get_mut(&from) {
            session.inflight += 1;
        }
        self.broadcasts.insert((from, id), targets.len() as u32);
        let now = Instant::now();
        let deadline = now + Duration::from_millis(u64::from(timeout_ms));
        let mut congested = None;
        let counted = Some(CountedAs { slot: self.stats.slot(&service, &method), started: now });
        for instance in targets {
            let call =
                PendingCall { caller: from, caller_id: id, instance, deadline, broadcast: true, counted };
            let callee = self.registry.get(instance).map_or(0, |i| i.session);
            if let Err(refused) = self.reaches(callee, &payload) {
                self.complete(call, Err(refused));
                continue;
            }
            congested = self
                .forward(call, timeout_ms, method.clone(), headers.clone(), payload.clone())
                .or(congested);
        }
        congested
    }

    pub(super) fn deliver(&self, to: SessionId, frame: &Frame) -> Option<Congested> {
        let session = self.sessions.get(&to)?;
        session.push(to, frame);
        let outbox = session.outbox.clone();
        session.outbox.is_congested().then_some(Congested { session: to, outbox, wait: super::Wait::Reader })
    }

    /// A reply or error from a callee: forward it to the caller.
    pub(super) fn answer(&mut self, from: SessionId, id: u32, outcome: Outcome) {
        if !self.serves(from, id) {
            tracing::debug!(session = from, id, "answer to an unknown or expired call dropped");
            return;
        }
        if let Some(call) = self.pending.remove(id) {
            self.complete(call, outcome);
        }
    }

    /// A callee's hop records, just before its answer: forward them to the
    /// caller as they are (a broadcast's caller gets none: its answers are
    /// gathered per instance).
    pub(super) fn hops(&mut self, from: SessionId, id: u32, headers: Headers) {
        if !self.serves(from, id) {
            return;
        }
        if let Some(call) = self.pending.get(id).filter(|call| !call.broadcast) {
            self.send(call.caller, &Frame::Hops { id: call.caller_id, headers });
        }
    }

    /// Whether session `from` serves pending call `id` (only it may answer).
    fn serves(&self, from: SessionId, id: u32) -> bool {
        let owner = self.pending.get(id).and_then(|call| self.registry.get(call.instance));
        owner.is_some_and(|instance| instance.session == from)
    }

    /// Delivers the outcome of one pending call and releases its counts.
    fn complete(&mut self, call: PendingCall, mut outcome: Outcome) {
        if let Ok(payload) = &outcome {
            if let Err(refused) = self.reaches(call.caller, payload) {
                outcome = Err(refused);
            }
        }
        if let Some(counted) = call.counted {
            let error = outcome.as_ref().err().map(|(code, _)| *code);
            self.stats.answered(counted.slot, error, counted.started);
        }
        if let Some(instance) = self.registry.get_mut(call.instance) {
            instance.outstanding = instance.outstanding.saturating_sub(1);
        }
        if !call.broadcast {
            self.release_inflight(call.caller);
            let frame = match outcome {
                Ok(payload) => Frame::Reply { id: call.caller_id, payload },
                Err((code, message)) => Frame::Error { id: call.caller_id, code, message },
            };
            return self.send(call.caller, &frame);
        }
        let (code, payload) = match outcome {
            Ok(payload) => (None, payload),
            Err((code, message)) => (Some(code), Bytes::from(message)),
        };
        let result = Frame::BroadcastResult { id: call.caller_id, instance: call.instance, code, payload };
        self.send(call.caller, &result);
        let key = (call.caller, call.caller_id);
        if let Some(remaining) = self.broadcasts.get_mut(&key) {
            *remaining = remaining.saturating_sub(1);
            if *remaining == 0 {
                self.broadcasts.remove(&key);
                self.release_inflight(call.caller);
            }
        }
    }

    fn release_inflight(&mut self, caller: SessionId) {
        if let Some(session) = self.sessions.get_mut(&caller) {
            session.inflight = session.inflight.saturating_sub(1);
        }
    }

    /// Drops a pending call whose caller is gone.
    pub(super) fn release(&mut self, call: &PendingCall) {
        if let Some(instance) = self.registry.get_mut(call.instance) {
            instance.outstanding = instance.outstanding.saturating_sub(1);
        }
    }

    pub(super) fn fail_calls(&mut self, calls: Vec<PendingCall>, code: ErrorCode, why: &str) {
        for call in calls {
            self.complete(call, Err((code, why.to_owned())));
        }
    }
}

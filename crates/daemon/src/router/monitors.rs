//! Monitors (`switchboard monitor`): connections with the `admin` permission
//! that asked to see every call, notification, broadcast and publication
//! matching a pattern, as `Event`s under the id of the call that started
//! them. While a monitor watches a service, no direct channel to it is
//! granted and those open are withdrawn, so nothing it asked to see can
//! bypass the daemon.
//!
//! When nobody monitors, a message costs one emptiness check here.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use switchboard_proto::api::SysError;
use switchboard_proto::sys::{self, MonitorEvent, MonitorRequest};
use switchboard_proto::trace::{TraceParent, TRACEPARENT};
use switchboard_proto::{
    ErrorCode, Frame, Headers, InstanceId, MethodName, ServiceName, SessionId, Topic, TopicPattern,
};

use super::Router;

/// Monitors one connection may run at once.
const MAX_MONITORS_PER_SESSION: usize = 16;

#[derive(Debug)]
struct Monitor {
    session: SessionId,
    req: u32,
    pattern: TopicPattern,
}

#[derive(Debug, Default)]
pub struct Monitors(Vec<Monitor>);

impl Monitors {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Forgets a closed connection's monitors.
    pub fn session_closed(&mut self, session: SessionId) {
        self.0.retain(|m| m.session != session);
    }

    fn watching<'a>(&'a self, target: &'a Topic) -> impl Iterator<Item = &'a Monitor> + 'a {
        self.0.iter().filter(move |m| m.pattern.matches(target))
    }
}

/// What one message is, for [`Router::monitored`].
pub(super) struct Seen<'a> {
    pub kind: &'static str,
    pub target: &'a str,
    pub from: SessionId,
    pub instance: InstanceId,
    pub headers: &'a Headers,
    pub bytes: usize,
}

impl Router {
    /// Starts a monitor for `from` (the call `req`), withdrawing the direct
    /// channels to every service it watches.
    pub(super) fn start_monitor(
        &mut self,
        from: SessionId,
        req: u32,
        request: &MonitorRequest,
    ) -> Result<(), SysError> {
        let text = if request.pattern.is_empty() { ">" } else { request.pattern.as_str() };
        let pattern = TopicPattern::parse(text)
            .map_err(|err| (ErrorCode::BadArguments, format!("monitor pattern {text:?}: {err}")))?;
        if self.monitors.0.iter().filter(|m| m.session == from).count() >= MAX_MONITORS_PER_SESSION {
            return Err((
                ErrorCode::Overloaded,
                format!("this connection already runs {MAX_MONITORS_PER_SESSION} monitors"),
            ));
        }
        self.monitors.0.push(Monitor { session: from, req, pattern });
        let watched: Vec<InstanceId> = self
            .registry
            .services()
            .into_iter()
            .filter(|(service, _)| self.monitor_watches(service))
            .flat_map(|(_, instances)| instances.into_iter().map(|(id, _)| id))
            .collect();
        let message = "a monitor is watching this service: its calls go through the daemon";
        self.revoke_where(|_, grant| watched.contains(&grant.instance), ErrorCode::ServicePaused, message);
        Ok(())
    }

    /// Whether a monitor watches any method of `service` (then it gets no
    /// direct channel).
    pub(super) fn monitor_watches(&self, service: &ServiceName) -> bool {
        if self.monitors.is_empty() {
            return false;
        }
        let methods: Vec<String> = self
            .registry
            .instances_of(service)
            .into_iter()
            .filter_map(|id| self.registry.get(id))
            .flat_map(|instance| instance.methods.iter().map(|m| format!("{service}.{}", m.name)))
            .collect();
        methods
            .iter()
            .filter_map(|target| Topic::parse(target).ok())
            .any(|target| self.monitors.watching(&target).next().is_some())
    }

    /// Tells the monitors about a call, notification or broadcast.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn monitor_call(
        &self,
        kind: &'static str,
        from: SessionId,
        service: &ServiceName,
        method: &MethodName,
        instance: InstanceId,
        headers: &Headers,
        bytes: usize,
    ) {
        if self.monitors.is_empty() {
            return;
        }
        let target = format!("{service}.{method}");
        self.monitored(&Seen { kind, target: &target, from, instance, headers, bytes });
    }

    /// Tells the monitors that match about one message.
    pub(super) fn monitored(&self, seen: &Seen<'_>) {
        if self.monitors.is_empty() {
            return;
        }
        // `$` targets (the daemon's own services) are not topics: unwatched.
        let Ok(target) = Topic::parse(seen.target) else { return };
        let mut watching = self.monitors.watching(&target).peekable();
        if watching.peek().is_none() {
            return;
        }
        let sender = self.sessions.get(&seen.from).map(|s| &s.caller);
        let trace_id = seen
            .headers
            .get(TRACEPARENT)
            .and_then(TraceParent::parse)
            .map(|trace| trace.trace_id_hex())
            .unwrap_or_default();
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0));
        let event = MonitorEvent {
            kind: seen.kind.to_owned(),
            target: seen.target.to_owned(),
            principal: sender.map(|c| c.principal.to_string()).unwrap_or_default(),
            session: seen.from,
            pid: sender.map(|c| c.pid).filter(|pid| *pid != 0),
            instance: seen.instance,
            bytes: seen.bytes as u64,
            trace_id,
            at_ms,
        };
        let payload = Bytes::from(sys::encode(&event));
        for monitor in watching {
            self.send(monitor.session, &Frame::Event { req: monitor.req, payload: payload.clone() });
        }
    }
}

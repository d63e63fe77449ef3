//! The one admission path: every operation a connection asks for passes
//! here before anything is looked up or routed. First the policy (may this
//! principal do this to that?), then its message rate; calls and
//! broadcasts, and calls parked while their service starts, then meet the
//! call limits (shutdown, reserved methods, calls in flight, frame size).
//! A refusal is the typed error to send; nothing here sends it.
//!
//! Connections are admitted by the same rules at the door: the handshake
//! budget and the connection limit (`crate::listen`), then the
//! principal's connection limit (`Router::add_session`).

use std::time::Instant;

use bytes::Bytes;
use switchboard_proto::api::SysCall;
use switchboard_proto::stats;
use switchboard_proto::supervision as sup;
use switchboard_proto::sys::{self, QueueDeclare, QueueRef};
use switchboard_proto::{sizes, ErrorCode, Headers, MethodName, ServiceName, SessionId};

use super::access::{Bucket, Refusal};
use super::Router;
use crate::policy::{Op, Principal};

impl Router {
    /// Policy and rate for `op` on `target` (a notification, a publication,
    /// a queue operation).
    pub(super) fn allowed(&mut self, from: SessionId, op: Op, target: &str) -> Result<(), Refusal> {
        let unrestricted = self.sessions.get(&from).is_some_and(|s| s.rules.unrestricted());
        if !unrestricted {
            self.permit(from, op, target)?;
        }
        self.spend_rate(from)
    }

    /// Policy and rate for a call or broadcast to `service.method`.
    pub(super) fn allowed_call(
        &mut self,
        from: SessionId,
        service: &ServiceName,
        method: &MethodName,
        payload: &Bytes,
    ) -> Result<(), Refusal> {
        self.permit_call(from, service, method, payload)?;
        self.spend_rate(from)
    }

    /// The limits in front of a call or broadcast about to be forwarded
    /// (parked ones too, before they wait): shutting down, reserved
    /// methods, calls in flight, and the size of the `Request` it makes.
    pub(super) fn admit(
        &self,
        from: SessionId,
        method: &MethodName,
        headers: &Headers,
        payload: &Bytes,
    ) -> Result<(), (ErrorCode, String)> {
        if self.shutting_down {
            return Err((ErrorCode::ShuttingDown, "the daemon is shutting down".into()));
        }
        if method.is_reserved() && !self.is_daemon_session(from) {
            return Err((ErrorCode::NoSuchMethod, format!("method {method} is reserved for the daemon")));
        }
        let inflight = self.sessions.get(&from).map_or(0, |s| s.inflight);
        if inflight >= self.limits.max_inflight {
            let message = format!(
                "this connection already has {} calls in flight (the limit)",
                self.limits.max_inflight
            );
            return Err((ErrorCode::Overloaded, message));
        }
        let principal = self.sessions.get(&from).map(|s| s.caller.principal.clone()).unwrap_or_default();
        let size = sizes::request_len(&principal, method, headers, payload.len());
        // A blob travels beside its frame (its limits are checked on arrival).
        if size > self.limits.max_frame as usize && switchboard_transport::Blob::of(payload).is_none() {
            let message = format!(
                "payload of {} bytes does not fit the maximum frame of {} bytes",
                payload.len(),
                self.limits.max_frame
            );
            return Err((ErrorCode::PayloadTooLarge, message));
        }
        Ok(())
    }

    /// Whether `from` may do `op` on `target`.
    /// (Policy alone: subscriptions, consumers and watches are not messages
    /// and spend no rate.)
    pub(super) fn permit(&self, from: SessionId, op: Op, target: &str) -> Result<(), Refusal> {
        let Some(session) = self.sessions.get(&from) else {
            return Err((ErrorCode::PermissionDenied, "unknown connection".into()));
        };
        if session.rules.permits(op, target) {
            return Ok(());
        }
        let principal = &session.caller.principal;
        tracing::info!(session = from, %principal, "permission denied: {op} {target}");
        Err(denied(principal, op, target))
    }

    /// Whether the policy lets `principal` do `op` on `target`, asked
    /// without a session (an app answering for a one-way operation, which
    /// the daemon refuses without a reply).
    pub fn permits_principal(&self, principal: &Principal, op: Op, target: &str) -> Result<(), Refusal> {
        if principal.is_daemon() || self.access.policy.rules_for(principal).permits(op, target) {
            return Ok(());
        }
        Err(denied(&principal.name, op, target))
    }

    /// The check in front of a call to `service.method`, with the daemon's
    /// own services mapped to what they do.
    fn permit_call(
        &self,
        from: SessionId,
        service: &ServiceName,
        method: &MethodName,
        payload: &Bytes,
    ) -> Result<(), Refusal> {
        if self.sessions.get(&from).is_some_and(|s| s.rules.unrestricted()) {
            return Ok(());
        }
        let supervised = || sys::decode::<sup::ServiceRef>(payload).map(|s| s.service).unwrap_or_default();
        match (service.as_str(), method.as_str()) {
            (sup::SERVICES_SERVICE, sup::ATTACH | sup::PROGRESS | sup::LOG) => Ok(()),
            (sup::SERVICES_SERVICE, sup::RELOAD | sup::REEXEC) => self.permit(from, Op::Admin, ""),
            (
                sup::SERVICES_SERVICE,
                sup::START | sup::STOP | sup::RESTART | sup::PAUSE | sup::CONTINUE | sup::CONTROL,
            ) => self.permit(from, Op::Control, &supervised()),
            (stats::METRICS_SERVICE, _) => self.permit(from, Op::Metrics, ""),
            _ => self.permit(from, Op::Call, &format!("{service}.{method}")),
        }
    }

    /// Policy and rate for a `$sys` call the router answers itself; `call`
    /// is `None` when it did not decode (it is then checked as a plain call,
    /// and the caller told what was wrong with it).
    pub(super) fn admit_sys(
        &mut self,
        from: SessionId,
        service: &ServiceName,
        method: &MethodName,
        call: Option<&SysCall>,
    ) -> Result<(), Refusal> {
        if !self.sessions.get(&from).is_some_and(|s| s.rules.unrestricted()) {
            match call {
                // A direct channel is checked per method it reaches; a breaker
                // report is about the caller itself.
                // So is a report of the calls its own instances served.
                Some(
                    SysCall::DaemonWhoami
                    | SysCall::DaemonDirect(_)
                    | SysCall::DaemonReportBreakers(_)
                    | SysCall::DaemonReportCalls(_),
                ) => {}
                Some(SysCall::DaemonStats) => self.permit(from, Op::Metrics, "")?,
                Some(SysCall::DaemonMonitor(_)) => self.permit(from, Op::Admin, "")?,
                Some(
                    SysCall::QueuesDeclare(QueueDeclare { queue, .. })
                    | SysCall::QueuesDelete(QueueRef { queue }),
                ) => {
                    self.permit(from, Op::QueueDeclare, queue)?;
                }
                Some(SysCall::QueuesPeek(peek)) => self.permit(from, Op::QueueGet, &peek.queue)?,
                Some(SysCall::QueuesPurge(_)) => self.permit(from, Op::Admin, "")?,
                Some(SysCall::RegionsOpen(open)) => {
                    let op = if open.write { Op::RegionWrite } else { Op::RegionRead };
                    // A writer may read what it writes.
                    if !(op == Op::RegionRead && self.permit(from, Op::RegionWrite, &open.name).is_ok()) {
                        self.permit(from, op, &open.name)?;
                    }
                }
                Some(SysCall::RegionsChanged(region)) => self.permit(from, Op::RegionWrite, &region.name)?,
                _ => self.permit(from, Op::Call, &format!("{service}.{method}"))?,
            }
        }
        self.spend_rate(from)
    }

    /// Spends one message of the sender's principal rate, or refuses.
    fn spend_rate(&mut self, from: SessionId) -> Result<(), Refusal> {
        let rate = self.access.security.messages_per_second;
        let Some(session) = self.sessions.get(&from) else { return Ok(()) };
        if rate == 0 || session.principal.daemon_user {
            return Ok(());
        }
        let burst = f64::from(self.access.security.burst.max(1));
        let now = Instant::now();
        let principal = session.caller.principal.clone();
        let bucket =
            self.access.buckets.entry(principal.clone()).or_insert(Bucket { tokens: burst, at: now });
        bucket.tokens =
            (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * f64::from(rate)).min(burst);
        bucket.at = now;
        if bucket.tokens < 1.0 {
            return Err((
                ErrorCode::Overloaded,
                format!("{principal} is over its rate of {rate} messages/s"),
            ));
        }
        bucket.tokens -= 1.0;
        Ok(())
    }
}

/// The refusal of `op` on `target` to `principal`.
fn denied(principal: &impl std::fmt::Display, op: Op, target: &str) -> Refusal {
    let what = if op == Op::Admin { "administer the daemon".to_owned() } else { format!("{op} {target}") };
    (ErrorCode::PermissionDenied, format!("{principal} may not {what}"))
}

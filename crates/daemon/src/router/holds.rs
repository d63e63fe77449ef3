//! Calls to supervised services that cannot be served right now.
//!
//! The supervisor tells the router which of its services are starting,
//! paused or failed. A call to a starting service waits here (up to its
//! deadline) until the service is Running; a call to a paused or failed one
//! is answered at once with a typed error. Only the daemon's own connection
//! (the supervisor's controls) passes a hold.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use switchboard_proto::{Call, ErrorCode, Frame, ServiceName, SessionId};

use super::Router;

/// Why calls to a service do not go through now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Starting or restarting: calls wait for it to become Running.
    Starting,
    Paused,
    Failed,
}

/// A call waiting for its service to finish starting.
pub(super) struct Parked {
    from: SessionId,
    call: Call,
    deadline: Instant,
}

#[derive(Default)]
pub(super) struct Holds {
    holds: HashMap<ServiceName, Hold>,
    parked: Vec<Parked>,
}

impl Router {
    /// Sets (or with `None` lifts) the hold on a service. Lifting a
    /// `Starting` hold sends the calls that waited for it.
    pub fn set_hold(&mut self, service: &ServiceName, hold: Option<Hold>) {
        let previous = match hold {
            Some(hold) => self.holds.holds.insert(service.clone(), hold),
            None => self.holds.holds.remove(service),
        };
        if let Some(hold) = hold {
            let code = match hold {
                Hold::Starting => ErrorCode::InstanceGone,
                Hold::Paused => ErrorCode::ServicePaused,
                Hold::Failed => ErrorCode::ServiceFailed,
            };
            self.revoke_service(service, code, &format!("service {service} is {hold:?}"));
        }
        if previous == Some(Hold::Starting) && hold != Some(Hold::Starting) {
            let (waiting, rest) =
                std::mem::take(&mut self.holds.parked).into_iter().partition(|p| &p.call.service == service);
            self.holds.parked = rest;
            for Parked { from, mut call, deadline } in waiting {
                self.unpark(from);
                call.timeout_ms = remaining_ms(deadline);
                // Already checked against the policy and the rate when it came.
                self.route_call(from, call);
            }
        }
    }

    /// The hold on `service`, if any.
    pub(super) fn hold_of(&self, service: &ServiceName) -> Option<Hold> {
        self.holds.holds.get(service).copied()
    }

    /// Lets a call through (`Some`), or parks or refuses it (`None`).
    pub(super) fn check_hold(&mut self, from: SessionId, call: Call) -> Option<Call> {
        if self.holds.holds.is_empty() || self.is_daemon_session(from) {
            return Some(call);
        }
        let hold = self.holds.holds.get(&call.service).copied();
        let (code, state) = match hold {
            None => return Some(call),
            Some(Hold::Starting) => {
                // Parked calls are admitted like any other and count as in
                // flight while they wait, and the parked set is bounded.
                let admitted = self.admit(from, &call.method, &call.headers, &call.payload).and_then(|()| {
                    if self.holds.parked.len() < self.limits.max_parked {
                        return Ok(());
                    }
                    let message = format!(
                        "{} calls already wait for starting services (the limit)",
                        self.limits.max_parked
                    );
                    Err((ErrorCode::Overloaded, message))
                });
                if let Err((code, message)) = admitted {
                    self.refuse_call(from, call.id, code, message);
                    return None;
                }
                if let Some(session) = self.sessions.get_mut(&from) {
                    session.inflight += 1;
                }
                let deadline = Instant::now() + Duration::from_millis(u64::from(call.timeout_ms));
                self.holds.parked.push(Parked { from, call, deadline });
                return None;
            }
            Some(Hold::Paused) => (ErrorCode::ServicePaused, "is paused; continue it first"),
            Some(Hold::Failed) => {
                (ErrorCode::ServiceFailed, "failed and its restart policy gave up; start it again")
            }
        };
        self.refuse_call(from, call.id, code, format!("service {} {state}", call.service));
        None
    }

    /// Answers parked calls whose deadline passed, and forgets those of
    /// callers that left.
    pub(super) fn expire_parked(&mut self, now: Instant) {
        if self.holds.parked.is_empty() {
            return;
        }
        let (expired, rest) = std::mem::take(&mut self.holds.parked)
            .into_iter()
            .filter(|p| self.sessions.contains_key(&p.from))
            .partition(|p| p.deadline <= now);
        self.holds.parked = rest;
        for Parked { from, call, .. } in expired {
            self.unpark(from);
            let message = format!("service {} was still starting at the deadline", call.service);
            self.send(from, &Frame::Error { id: call.id, code: ErrorCode::Timeout, message });
        }
    }
}

impl Router {
    /// A parked call of `from` leaves the parked set: it no longer counts
    /// as in flight there (routing it counts it again).
    fn unpark(&mut self, from: SessionId) {
        if let Some(session) = self.sessions.get_mut(&from) {
            session.inflight = session.inflight.saturating_sub(1);
        }
    }
}

fn remaining_ms(deadline: Instant) -> u32 {
    let left = deadline.saturating_duration_since(Instant::now()).as_micros().div_ceil(1000);
    u32::try_from(left).unwrap_or(u32::MAX).max(1)
}

//! Direct channels (see `switchboard_proto::direct`): granting a caller its
//! own socket to one instance, and withdrawing the grant when the reasons
//! it was given no longer hold.
//!
//! A grant is only given when the daemon would route every call on it to
//! that instance anyway: the service has one instance (with more, the
//! daemon balances calls across them), the caller may call every method it
//! serves, the service is not held (starting, paused, failed), no rate limit
//! applies to the caller, and both ends are local processes the kernel
//! vouches for. Whenever one of those stops holding — a second instance, a
//! hold, a policy reload, either end leaving — both ends get a `Revoke`.
//! This module must never let a grant outlive its reason: every change to
//! holds, policy, registrations or sessions passes through here.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use switchboard_proto::direct::{DirectGrant, DirectRequest, GRANT_METHOD};
use switchboard_proto::{sys, ErrorCode, Frame, Headers, InstanceId, MethodName, ServiceName, SessionId};

use super::access::Refusal;
use super::{Congested, PendingCall, Router};
use crate::policy::Op;

/// The method a grant is forwarded to the instance as (a valid name).
fn grant_method() -> MethodName {
    MethodName::parse(GRANT_METHOD).unwrap_or_else(|_| unreachable!("{GRANT_METHOD} is a valid method name"))
}

/// Grants one caller connection may hold at once.
const MAX_GRANTS_PER_SESSION: usize = 64;

/// A granted channel: who may call which instance past the daemon.
pub(super) struct Grant {
    pub caller: SessionId,
    pub instance: InstanceId,
}

#[derive(Default)]
pub(super) struct Grants {
    grants: HashMap<u64, Grant>,
    next: u64,
}

impl Router {
    /// `$sys.daemon.direct`: checks the request, then forwards it to the
    /// chosen instance as a `__direct` call carrying a fresh ticket. The
    /// instance's answer (the grant plus its address) goes back to the
    /// caller like any reply.
    pub(super) fn grant_direct(
        &mut self,
        from: SessionId,
        id: u32,
        timeout_ms: u32,
        request: &DirectRequest,
    ) -> Option<Congested> {
        let mut offer = match self.check_grant(from, request) {
            Ok(offer) => offer,
            Err((code, message)) => {
                tracing::debug!(session = from, "direct channel refused: {message}");
                self.send_error(from, id, code, message);
                return None;
            }
        };
        self.grants.next += 1;
        offer.grant = self.grants.next;
        let instance = offer.instance;
        self.grants.grants.insert(offer.grant, Grant { caller: from, instance });
        if let Some(session) = self.sessions.get_mut(&from) {
            session.inflight += 1;
        }
        let deadline = Instant::now() + Duration::from_millis(u64::from(timeout_ms));
        let call =
            PendingCall { caller: from, caller_id: id, instance, deadline, broadcast: false, counted: None };
        let payload = Bytes::from(sys::encode(&offer));
        self.forward(call, timeout_ms, grant_method(), Headers::new(), payload)
    }

    /// Whether `from` may have a direct channel to the service it names;
    /// the grant to offer the instance chosen for it (without its id).
    fn check_grant(&mut self, from: SessionId, request: &DirectRequest) -> Result<DirectGrant, Refusal> {
        let refuse = |why: String| Err((ErrorCode::PermissionDenied, format!("no direct channel: {why}")));
        let service = ServiceName::parse(&request.service)
            .map_err(|err| (ErrorCode::BadRequest, format!("direct request: {err}")))?;
        if self.shutting_down {
            return Err((ErrorCode::ShuttingDown, "the daemon is shutting down".into()));
        }
        if !self.access.security.direct_calls {
            return refuse("this daemon routes every call (security.direct_calls = false)".into());
        }
        if service.is_reserved() {
            return refuse(format!("{service} is served by the daemon itself"));
        }
        let Some(caller) = self.sessions.get(&from) else {
            return refuse("unknown connection".into());
        };
        if caller.caller.pid == 0 {
            return refuse("only local callers with known process ids get one".into());
        }
        if self.access.security.messages_per_second > 0 && !caller.principal.daemon_user {
            return refuse(format!(
                "{} is rate limited, so its calls go through the daemon",
                caller.principal.name
            ));
        }
        if self.grants.grants.values().filter(|g| g.caller == from).count() >= MAX_GRANTS_PER_SESSION {
            return Err((
                ErrorCode::Overloaded,
                format!("this connection already holds {MAX_GRANTS_PER_SESSION} direct channels"),
            ));
        }
        if let Some(hold) = self.hold_of(&service) {
            return refuse(format!("service {service} is {hold:?}"));
        }
        if self.monitor_watches(&service) {
            return refuse(format!("a monitor is watching {service}: its calls go through the daemon"));
        }
        if self.registry.local_instances_of(&service).len() > 1 {
            return refuse(format!(
                "service {service} has several instances, which the daemon balances calls across"
            ));
        }
        let instance = self.registry.choose_any(&service, request.instance)?;
        self.grant_still_holds(from, instance).map_err(|why| (ErrorCode::PermissionDenied, why))?;
        let callee = self.registry.get(instance).and_then(|i| self.sessions.get(&i.session));
        let (pid, uid, instance_max_blob) = callee
            .map(|s| (s.caller.pid, s.caller.uid, s.rules.max_blob))
            .ok_or((ErrorCode::InstanceGone, format!("instance {instance} is gone")))?;
        let caller_max_blob = self.sessions.get(&from).map_or(0, |s| s.rules.max_blob);
        let ticket = super::access::new_secret()
            .map_err(|err| (ErrorCode::Overloaded, format!("no randomness for a ticket: {err}")))?;
        Ok(DirectGrant {
            grant: 0,
            ticket,
            service: service.to_string(),
            instance,
            pid,
            uid,
            address: String::new(),
            caller_max_blob,
            instance_max_blob,
        })
    }

    /// The part of a grant's reasons that can change while it lives: the
    /// caller may call every method of the instance, which is a local process.
    fn grant_still_holds(&self, caller: SessionId, instance: InstanceId) -> Result<(), String> {
        let (Some(session), Some(target)) = (self.sessions.get(&caller), self.registry.get(instance)) else {
            return Err("one end is gone".into());
        };
        let callee_pid = self.sessions.get(&target.session).map_or(0, |s| s.caller.pid);
        if callee_pid == 0 || self.is_daemon_session(target.session) {
            return Err(format!("instance {instance} is not a local process"));
        }
        if !session.rules.unrestricted() {
            // Reserved methods (`__control`) are refused on a channel
            // whatever the policy, so they need no grant.
            for method in target.methods.iter().filter(|m| !m.name.is_reserved()) {
                let name = format!("{}.{}", target.service, method.name);
                if !session.rules.permits(Op::Call, &name) {
                    return Err(format!("{} may not call {name}", session.caller.principal));
                }
            }
        }
        Ok(())
    }

    /// How many callers hold a grant to `instance` (for `switchboard ls`).
    /// Direct channels open now.
    pub fn direct_channels(&self) -> usize {
        self.grants.grants.len()
    }

    pub fn direct_channels_to(&self, instance: InstanceId) -> u32 {
        let count = self.grants.grants.values().filter(|g| g.instance == instance).count();
        u32::try_from(count).unwrap_or(u32::MAX)
    }

    /// Withdraws every grant `revoked` picks, telling both ends.
    pub(super) fn revoke_where(
        &mut self,
        revoked: impl Fn(u64, &Grant) -> bool,
        code: ErrorCode,
        message: &str,
    ) {
        let picked: Vec<u64> =
            self.grants.grants.iter().filter(|(id, g)| revoked(**id, g)).map(|(id, _)| *id).collect();
        for id in picked {
            let Some(grant) = self.grants.grants.remove(&id) else { continue };
            let frame = Frame::Revoke { grant: id, code, message: message.to_owned() };
            self.send(grant.caller, &frame);
            if let Some(instance) = self.registry.get(grant.instance) {
                self.send(instance.session, &frame);
            }
            tracing::debug!(
                grant = id,
                caller = grant.caller,
                instance = grant.instance,
                "direct channel revoked: {message}"
            );
        }
    }

    /// The caller is done with its channel: forget the grant, and tell the
    /// instance (its end may still be open). Only the grant's caller may.
    pub(super) fn release_grant(&mut self, from: SessionId, grant: u64) {
        let message = "the caller closed the channel";
        self.revoke_where(|id, g| id == grant && g.caller == from, ErrorCode::ShuttingDown, message);
    }

    /// A service was held (paused, failed, restarting): its callers go
    /// through the daemon again, which answers for it.
    pub(super) fn revoke_service(&mut self, service: &ServiceName, code: ErrorCode, message: &str) {
        let instances = self.registry.instances_of(service);
        self.revoke_where(|_, g| instances.contains(&g.instance), code, message);
    }

    /// A second instance of `service` came up here: calls are balanced
    /// again. (A stand-in for other hosts' is no second instance: it takes
    /// only what no instance here can.)
    pub(super) fn revoke_balanced(&mut self, service: &ServiceName) {
        if self.registry.local_instances_of(service).len() > 1 {
            let message = format!("service {service} has several instances now; the daemon balances calls");
            self.revoke_service(service, ErrorCode::Overloaded, &message);
        }
    }

    /// An instance or a session is going away.
    pub(super) fn revoke_instance(&mut self, instance: InstanceId) {
        self.revoke_where(|_, g| g.instance == instance, ErrorCode::InstanceGone, "the instance is gone");
    }

    pub(super) fn revoke_caller(&mut self, session: SessionId) {
        self.revoke_where(|_, g| g.caller == session, ErrorCode::InstanceGone, "the caller is gone");
    }

    /// After a policy reload: grants whose caller may no longer call every
    /// method (or may no longer have one at all) are withdrawn.
    pub(super) fn recheck_grants(&mut self) {
        let disabled = !self.access.security.direct_calls || self.access.security.messages_per_second > 0;
        let failing: Vec<u64> = self
            .grants
            .grants
            .iter()
            .filter(|(_, g)| disabled || self.grant_still_holds(g.caller, g.instance).is_err())
            .map(|(id, _)| *id)
            .collect();
        self.revoke_where(|id, _| failing.contains(&id), ErrorCode::PermissionDenied, "the policy changed");
    }
}

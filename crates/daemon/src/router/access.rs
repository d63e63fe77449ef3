//! Who gets in and what they may do: authenticating a connection into a
//! [`Principal`], the policy check in front of every operation, the
//! per-principal connection limit and message rate.
//!
//! A refusal is a `permission_denied` error naming the operation and the
//! principal; it is logged and never closes the connection. The check comes
//! before any lookup, so a refusal never reveals whether a service exists.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use switchboard_proto::direct::DAEMON_DIRECT;
use switchboard_proto::supervision as sup;
use switchboard_proto::sys::{self, QueueRef};
use switchboard_proto::{ErrorCode, MethodName, PrincipalName, ServiceName, SessionId};
use switchboard_transport::PeerCred;

use super::Router;
use crate::policy::{Op, Policy, Principal, Rules, Security};

/// A refusal: the error code and message to send.
pub type Refusal = (ErrorCode, String);

/// A supervised instance, as its secret identifies it.
#[derive(Debug, Clone)]
pub struct InstanceIdentity {
    pub service: String,
    pub instance: u32,
    /// The instance's session (it is started with `setsid`, so this is its
    /// first pid): only processes of that session may use the secret. A
    /// process of another session cannot join it (`setsid` makes only new
    /// sessions, `setpgid` moves only within one), so a sibling that read
    /// the secret from `/proc/PID/environ` still cannot present it.
    pub session: u32,
}

/// A peer on the local socket, looked up before the router is locked (the
/// user and group files, its session in /proc).
pub struct LocalPeer {
    cred: PeerCred,
    os: Principal,
    session: Option<u32>,
}

impl LocalPeer {
    pub fn identify(cred: PeerCred) -> Self {
        Self {
            cred,
            os: Principal::local(cred.uid, cred.gid, rustix::process::geteuid().as_raw()),
            session: cred.pid.and_then(session_of),
        }
    }
}

/// Everything access decisions need, owned by the router.
#[derive(Default)]
pub struct Access {
    pub policy: Policy,
    pub security: Security,
    secrets: HashMap<String, InstanceIdentity>,
    connections: HashMap<PrincipalName, usize>,
    buckets: HashMap<PrincipalName, Bucket>,
}

/// A token bucket: `rate` tokens a second, at most `burst` saved up.
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Router {
    /// Replaces the policy and security settings (at start and on reload);
    /// every connection's rules are gathered again.
    pub fn set_policy(&mut self, policy: Policy, security: Security) {
        self.access.policy = policy;
        self.access.security = security;
        for session in self.sessions.values_mut() {
            session.rules = rules_for(&self.access.policy, &session.principal);
        }
        self.recheck_grants();
        self.recheck_held();
    }

    pub fn register_secret(&mut self, secret: String, identity: InstanceIdentity) {
        self.access.secrets.insert(secret, identity);
    }

    pub fn forget_secret(&mut self, secret: &str) {
        self.access.secrets.remove(secret);
    }

    /// Who a new connection is: its OS identity, or the service whose secret
    /// it presents from inside that service's session, or the token it
    /// presents, or its verified TLS certificate. A wrong credential refuses
    /// the connection. Does no I/O: the caller looked the peer up first.
    pub fn authenticate(
        &self,
        peer: Option<LocalPeer>,
        certificate: Option<&str>,
        credential: &str,
    ) -> Result<Principal, Refusal> {
        let denied = |message: String| Err((ErrorCode::PermissionDenied, message));
        if let Some(secret) = credential.strip_prefix("secret:") {
            let found = self.access.secrets.iter().find(|(known, _)| constant_time_eq(known, secret));
            let Some((_, identity)) = found else {
                return denied("unknown or stale instance secret".into());
            };
            let Some(LocalPeer { cred, os, session, .. }) = peer else {
                return denied("an instance secret is only accepted on the local socket".into());
            };
            if session != Some(identity.session) {
                let pid = cred.pid.unwrap_or(0);
                return denied(format!(
                    "the secret of {}#{} was presented by pid {pid}, which is not a process of that instance",
                    identity.service, identity.instance
                ));
            }
            return Ok(Principal::service(&identity.service, identity.instance, os));
        }
        if let Some(token) = credential.strip_prefix("token:") {
            let found = self.access.security.tokens.iter().find(|(_, value)| constant_time_eq(value, token));
            return match found {
                Some((name, _)) => Ok(Principal::token(name)),
                None => denied("unknown token".into()),
            };
        }
        if !credential.is_empty() {
            return Err((ErrorCode::BadRequest, "a credential is secret:HEX or token:VALUE".into()));
        }
        if let Some(common_name) = certificate {
            return Ok(Principal::certificate(common_name));
        }
        Ok(peer.map_or_else(Principal::anonymous, |peer| peer.os))
    }

    /// Counts a connection of `principal`, refusing one over the limit.
    pub(super) fn admit_principal(&mut self, principal: &Principal) -> Result<(), Refusal> {
        let limit = self.access.security.max_connections_per_principal;
        let count = self.access.connections.entry(principal.name.clone()).or_default();
        if *count >= limit && !principal.daemon_user {
            let message = format!("{} already has {count} connections (the limit)", principal.name);
            return Err((ErrorCode::Overloaded, message));
        }
        *count += 1;
        Ok(())
    }

    pub(super) fn release_principal(&mut self, name: &PrincipalName) {
        if let Some(count) = self.access.connections.get_mut(name) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.access.connections.remove(name);
                self.access.buckets.remove(name);
            }
        }
    }

    /// Whether `from` may do `op` on `target`.
    pub(super) fn permit(&self, from: SessionId, op: Op, target: &str) -> Result<(), Refusal> {
        let Some(session) = self.sessions.get(&from) else {
            return Err((ErrorCode::PermissionDenied, "unknown connection".into()));
        };
        if session.rules.permits(op, target) {
            return Ok(());
        }
        let principal = &session.caller.principal;
        tracing::info!(session = from, %principal, "permission denied: {op} {target}");
        let what =
            if op == Op::Admin { "administer the daemon".to_owned() } else { format!("{op} {target}") };
        Err((ErrorCode::PermissionDenied, format!("{principal} may not {what}")))
    }

    /// The check in front of a call to `service.method`, with the daemon's
    /// own services mapped to what they do.
    pub(super) fn permit_call(
        &self,
        from: SessionId,
        service: &ServiceName,
        method: &MethodName,
        payload: &Bytes,
    ) -> Result<(), Refusal> {
        if self.sessions.get(&from).is_some_and(|s| s.rules.unrestricted()) {
            return Ok(());
        }
        let queue = || sys::decode::<QueueRef>(payload).map(|q| q.queue).unwrap_or_default();
        let supervised = || sys::decode::<sup::ServiceRef>(payload).map(|s| s.service).unwrap_or_default();
        match (service.as_str(), method.as_str()) {
            // A direct channel is checked against every method it reaches.
            (sys::DAEMON_SERVICE, sys::DAEMON_WHOAMI | DAEMON_DIRECT) => Ok(()),
            (sup::SERVICES_SERVICE, sup::ATTACH | sup::PROGRESS | sup::LOG) => Ok(()),
            (sys::QUEUES_SERVICE, sys::QUEUES_DECLARE | sys::QUEUES_DELETE) => {
                self.permit(from, Op::QueueDeclare, &queue())
            }
            (sys::QUEUES_SERVICE, sys::QUEUES_PEEK) => self.permit(from, Op::QueueGet, &queue()),
            (sys::QUEUES_SERVICE, sys::QUEUES_PURGE) | (sup::SERVICES_SERVICE, sup::RELOAD) => {
                self.permit(from, Op::Admin, "")
            }
            (
                sup::SERVICES_SERVICE,
                sup::START | sup::STOP | sup::RESTART | sup::PAUSE | sup::CONTINUE | sup::CONTROL,
            ) => self.permit(from, Op::Control, &supervised()),
            _ => self.permit(from, Op::Call, &format!("{service}.{method}")),
        }
    }

    /// Spends one message of the sender's principal rate; false if none is left.
    pub(super) fn within_rate(&mut self, from: SessionId) -> bool {
        let rate = self.access.security.messages_per_second;
        if rate == 0 {
            return true;
        }
        let Some(session) = self.sessions.get(&from) else { return true };
        if session.principal.daemon_user {
            return true;
        }
        let burst = f64::from(self.access.security.burst.max(1));
        let now = Instant::now();
        let bucket = self
            .access
            .buckets
            .entry(session.caller.principal.clone())
            .or_insert(Bucket { tokens: burst, at: now });
        bucket.tokens =
            (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * f64::from(rate)).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    pub(super) fn rate_refusal(&self, from: SessionId) -> Refusal {
        let principal = self.sessions.get(&from).map(|s| s.caller.principal.to_string()).unwrap_or_default();
        let rate = self.access.security.messages_per_second;
        (ErrorCode::Overloaded, format!("{principal} is over its rate of {rate} messages/s"))
    }
}

pub(super) fn rules_for(policy: &Policy, principal: &Principal) -> Arc<Rules> {
    policy.rules_for(principal)
}

/// The session of `pid`, from /proc.
fn session_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After "pid (comm) state ppid pgrp session": comm may hold spaces, so
    // split after ')'.
    stat.rsplit_once(')')?.1.split_whitespace().nth(3)?.parse().ok()
}

/// A fresh random secret from the kernel (one `getrandom` call, no file to
/// open: cheap enough under the router's lock), hex encoded.
pub fn new_secret() -> std::io::Result<String> {
    let mut bytes = [0u8; 16];
    let filled = rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty())?;
    if filled != bytes.len() {
        return Err(std::io::Error::other("the kernel returned fewer random bytes than asked"));
    }
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Compares without stopping at the first difference.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_session_is_read_from_proc() {
        let ours = session_of(std::process::id()).expect("our session");
        // Not rustix's getsid: it asserts a positive id, and a session led from
        // outside our pid namespace (CI containers) reads as 0.
        let expected = nix::unistd::getsid(None).expect("getsid").as_raw() as u32;
        assert_eq!(ours, expected);
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq("abcdef", "abcdef"));
        assert!(!constant_time_eq("abcdef", "abcdeg") && !constant_time_eq("abc", "abcdef"));
    }
}

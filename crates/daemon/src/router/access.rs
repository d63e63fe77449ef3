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

use switchboard_proto::{ErrorCode, PrincipalName};
use switchboard_transport::PeerCred;

use super::Router;
use crate::policy::{Policy, Principal, Rules, Security};

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
    pub(super) buckets: HashMap<PrincipalName, Bucket>,
}

/// A token bucket: `rate` tokens a second, at most `burst` saved up.
pub(super) struct Bucket {
    pub tokens: f64,
    pub at: Instant,
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
            return self.token_principal(token).ok_or((ErrorCode::PermissionDenied, "unknown token".into()));
        }
        if !credential.is_empty() {
            return Err((ErrorCode::BadRequest, "a credential is secret:HEX or token:VALUE".into()));
        }
        if let Some(common_name) = certificate {
            return Ok(Principal::certificate(common_name));
        }
        Ok(peer.map_or_else(Principal::anonymous, |peer| peer.os))
    }

    /// The principal a bearer token from the config stands for.
    pub fn token_principal(&self, token: &str) -> Option<Principal> {
        let found = self.access.security.tokens.iter().find(|(_, value)| constant_time_eq(value, token));
        found.map(|(name, _)| Principal::token(name))
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

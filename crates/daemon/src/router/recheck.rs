//! After a policy reload: everything a connection holds is checked again
//! against its new rules, and what is no longer allowed ends — a
//! subscription, a queue consumer, a registration, a registry watch — each
//! with an `Ended` frame saying `permission_denied` and why. A connection
//! that logged in with a token the new config no longer has is closed.
//!
//! Decides what ends (`held_now_denied`, pure over the router's state) and
//! then ends it; it never re-authenticates anyone else.

use switchboard_proto::{ErrorCode, Frame, Held, SessionId};

use super::Router;
use crate::policy::Op;

/// One thing a connection holds that its rules no longer allow.
#[derive(Debug, PartialEq, Eq)]
enum Denied {
    Subscription { sub: super::SubId, sid: u32, pattern: String },
    Consumer { consumer: u32, queue: String },
    Registration { instance: u64, service: String },
    Watch { req: u32 },
}

impl Router {
    /// Re-checks every connection after the policy changed.
    pub(super) fn recheck_held(&mut self) {
        let sessions: Vec<SessionId> = self.sessions.keys().copied().collect();
        for session in sessions {
            if let Some(token) = self.removed_token(session) {
                let message = format!("token {token} was removed from the config");
                tracing::info!(session, "closing connection: {message}");
                self.send(session, &Frame::Goodbye { code: ErrorCode::PermissionDenied, message });
                self.kill_session(session);
                continue;
            }
            for denied in self.held_now_denied(session) {
                self.end(session, denied);
            }
        }
    }

    /// The token name a session logged in with, if the config no longer has it.
    fn removed_token(&self, session: SessionId) -> Option<String> {
        let entry = self.sessions.get(&session)?;
        let name = entry.principal.name.as_str().strip_prefix("token:")?;
        (!self.access.security.tokens.contains_key(name)).then(|| name.to_owned())
    }

    /// What `session` holds that its current rules do not allow.
    fn held_now_denied(&self, session: SessionId) -> Vec<Denied> {
        let Some(entry) = self.sessions.get(&session) else { return Vec::new() };
        if entry.rules.unrestricted() || self.is_daemon_session(session) {
            return Vec::new();
        }
        let rules = &entry.rules;
        let mut denied = Vec::new();
        for sub in entry.subscriptions.iter().filter_map(|id| self.topics.get(*id).map(|s| (*id, s))) {
            let pattern = sub.1.pattern.as_str().to_owned();
            if !rules.permits(Op::Subscribe, &pattern) {
                denied.push(Denied::Subscription { sub: sub.0, sid: sub.1.sid, pattern });
            }
        }
        for ((owner, consumer), queue) in self.queues.consumer_queues() {
            if owner == session && !rules.permits(Op::QueueGet, &queue) {
                denied.push(Denied::Consumer { consumer, queue });
            }
        }
        for instance in self.registry.of_session(session) {
            let Some(service) = self.registry.get(instance).map(|i| i.service.to_string()) else { continue };
            if !rules.permits(Op::Serve, &service) {
                denied.push(Denied::Registration { instance, service });
            }
        }
        if !rules.permits(Op::Call, "$sys.registry.watch") {
            denied.extend(entry.watches.iter().map(|req| Denied::Watch { req: *req }));
        }
        denied
    }

    fn end(&mut self, session: SessionId, denied: Denied) {
        let principal =
            self.sessions.get(&session).map(|s| s.caller.principal.to_string()).unwrap_or_default();
        let (what, id, message) = match denied {
            Denied::Subscription { sub, sid, pattern } => {
                self.drop_subscription(session, sub);
                (Held::Subscription, u64::from(sid), format!("{principal} may no longer subscribe {pattern}"))
            }
            Denied::Consumer { consumer, queue } => {
                if let Some(queue) = self.drop_consumer((session, consumer)) {
                    self.dispatch(&queue);
                }
                (Held::Consumer, u64::from(consumer), format!("{principal} may no longer queue.get {queue}"))
            }
            Denied::Registration { instance, service } => {
                let why = "the instance may no longer serve (policy reload)";
                self.remove_instance(instance, ErrorCode::InstanceGone, why);
                (Held::Registration, instance, format!("{principal} may no longer serve {service}"))
            }
            Denied::Watch { req } => {
                if let Some(entry) = self.sessions.get_mut(&session) {
                    entry.watches.retain(|w| *w != req);
                }
                (Held::Watch, u64::from(req), format!("{principal} may no longer watch the registry"))
            }
        };
        tracing::info!(session, "ended after a policy reload: {message}");
        self.send(session, &Frame::Ended { what, id, code: ErrorCode::PermissionDenied, message });
    }
}

//! Topics on the router: subscribe, publish, and pumping backlogs.

use bytes::Bytes;
use switchboard_proto::{
    Caller, ErrorCode, Frame, Headers, Message, Publish, SessionId, Topic, TopicPattern,
};

use super::topics::{self, Delivery, Retained, SubId};
use super::{Congested, Router, SessionEntry, Wait};
use crate::policy::Op;

impl Router {
    pub(super) fn subscribe(&mut self, from: SessionId, req: u32, sid: u32, pattern: TopicPattern) {
        let text = pattern.to_string();
        if let Err((code, message)) = self.permit(from, Op::Subscribe, &text) {
            if !self.reads_region_events(from, &text) {
                return self.send_error(from, req, code, message);
            }
        }
        let Some(session) = self.sessions.get(&from) else {
            return;
        };
        let count = session.subscriptions.len();
        let limit = self.limits.max_subscriptions;
        let id = match self.topics.subscribe(from, sid, pattern.clone(), limit, count) {
            Ok(id) => id,
            Err(err) => {
                let code = match err {
                    topics::SubscribeError::DuplicateSid(_) => ErrorCode::BadRequest,
                    topics::SubscribeError::TooMany(_) => ErrorCode::Overloaded,
                };
                return self.send_error(from, req, code, err.to_string());
            }
        };
        if let Some(session) = self.sessions.get_mut(&from) {
            session.subscriptions.push(id);
        }
        self.send(from, &Frame::Reply { id: req, payload: Bytes::new() });
        // Retained values first, before any live message can follow.
        for (topic, value) in self.topics.retained_matching(&pattern) {
            let delivery = Delivery {
                retained: true,
                publisher: value.publisher,
                topic,
                headers: value.headers,
                payload: value.payload,
            };
            self.offer(id, delivery);
        }
    }

    pub(super) fn unsubscribe(&mut self, from: SessionId, req: u32, sid: u32) {
        let Some(id) = self.topics.find(from, sid) else {
            let message = format!("this connection has no subscription {sid}");
            return self.send_error(from, req, ErrorCode::BadRequest, message);
        };
        self.drop_subscription(from, id);
        self.send(from, &Frame::Reply { id: req, payload: Bytes::new() });
    }

    /// Ends a subscription of `from`, with what its backlog held.
    pub(super) fn drop_subscription(&mut self, from: SessionId, id: SubId) {
        let gone = self.topics.unsubscribe(id);
        if let Some(sub) = &gone {
            self.stats.subscription_ended(sub.pattern.as_str(), sub.delivered, sub.missed);
        }
        if let Some(session) = self.sessions.get_mut(&from) {
            session.subscriptions.retain(|s| *s != id);
            let freed = gone.map_or(0, |sub| sub.backlog_bytes);
            session.backlogged.release(freed);
        }
    }

    /// The client dropped messages in its own buffer; count them.
    pub(super) fn client_lagged(&mut self, from: SessionId, sid: u32, missed: u64) {
        if let Some(sub) = self.topics.find(from, sid).and_then(|id| self.topics.get_mut(id)) {
            sub.missed += missed;
        }
    }

    /// Publishes; returns a subscriber the publisher should wait for (its
    /// connection is congested and the message joined its backlog).
    pub(super) fn publish(&mut self, from: SessionId, publish: Publish) -> Option<Congested> {
        if self.shutting_down {
            return None;
        }
        let session = self.sessions.get(&from)?;
        let publisher = session.caller.clone();
        let Publish { retain, topic, headers, payload } = publish;
        if let Err((code, message)) = self.allowed(from, Op::Publish, topic.as_str()) {
            // A publication has no reply: the refusal goes back under id 0.
            self.send_error(from, 0, code, message);
            return None;
        }
        if retain {
            let kept = super::detached(payload.clone());
            let value = Retained { publisher: publisher.clone(), headers: headers.clone(), payload: kept };
            if !self.topics.retain(&topic, value, self.limits.max_retained) {
                tracing::warn!(
                    %topic,
                    "not retained: {} topics already keep a value (the limit)",
                    self.limits.max_retained
                );
            }
            if payload.is_empty() {
                return None; // clearing a retained value is not a message
            }
        }
        self.fan_out(from, publisher, topic, headers, payload)
    }

    /// Offers a publication to every matching subscription (after the
    /// publisher's checks; `from` is 0 for the daemon's own). Returns the
    /// first subscriber to wait for, if any.
    pub(super) fn fan_out(
        &mut self,
        from: SessionId,
        publisher: Caller,
        topic: Topic,
        headers: Headers,
        payload: Bytes,
    ) -> Option<Congested> {
        self.stats.published();
        if !self.monitors.is_empty() {
            let seen = super::monitors::Seen {
                kind: "publish",
                target: topic.as_str(),
                from,
                instance: 0,
                headers: &headers,
                bytes: payload.len(),
            };
            self.monitored(&seen);
        }
        let mut matched = std::mem::take(&mut self.matched);
        matched.clear();
        self.topics.matching(&topic, &mut matched);
        let delivery = Delivery { retained: false, publisher, topic, headers, payload };
        let mut wait = None;
        match matched.as_slice() {
            [] => {}
            [only] => wait = self.offer(*only, delivery),
            many => {
                // Encoded once, the subscription id patched in for each:
                // encoding and reference counting per subscriber were most
                // of a small message's cost here.
                let mut frame = std::mem::take(&mut self.encoded);
                frame.clear();
                let inline = message(0, delivery.clone()).encode_head(&mut frame).is_none();
                for id in many {
                    let congested = if inline {
                        self.offer_encoded(*id, &delivery, &mut frame)
                    } else {
                        self.offer(*id, delivery.clone())
                    };
                    wait = wait.or(congested);
                }
                self.encoded = frame;
            }
        }
        self.matched = matched;
        wait
    }

    /// Sends a message to a subscription now, or keeps it in its backlog if
    /// the connection is congested or older messages are waiting; then the
    /// subscriber is one to wait for, unless it lags.
    fn offer(&mut self, id: SubId, delivery: Delivery) -> Option<Congested> {
        let limits = self.backlog_limits();
        let max_frame = self.limits.max_frame;
        let (sub, session) = self.reachable(id, &delivery, max_frame)?;
        if sub.backlog.is_empty() && !session.outbox.is_congested() {
            sub.delivered += 1;
            session.push(sub.session, &message(sub.sid, delivery));
            None
        } else {
            topics::enqueue(sub, delivery, limits, &session.backlogged);
            backlogged(sub, session)
        }
    }

    /// [`Router::offer`] with the message already encoded whole in `frame`
    /// (with any subscription id): copied to the subscriber's outbox with
    /// its own id, or cloned into its backlog.
    fn offer_encoded(&mut self, id: SubId, delivery: &Delivery, frame: &mut [u8]) -> Option<Congested> {
        let limits = self.backlog_limits();
        let max_frame = self.limits.max_frame;
        let (sub, session) = self.reachable(id, delivery, max_frame)?;
        if sub.backlog.is_empty() && !session.outbox.is_congested() {
            sub.delivered += 1;
            frame[MESSAGE_SID].copy_from_slice(&sub.sid.to_le_bytes());
            session.push_encoded(sub.session, frame);
            None
        } else {
            topics::enqueue(sub, delivery.clone(), limits, &session.backlogged);
            backlogged(sub, session)
        }
    }

    /// A publisher waited past `Limits::publish_hold` for `session`: its
    /// backlogged subscriptions lag until they catch up.
    pub fn lag(&mut self, session: SessionId) {
        let Some(entry) = self.sessions.get(&session) else { return };
        for id in &entry.subscriptions {
            if let Some(sub) = self.topics.get_mut(*id) {
                sub.lagging |= !sub.backlog.is_empty();
            }
        }
    }

    fn backlog_limits(&self) -> topics::BacklogLimits {
        topics::BacklogLimits {
            messages: self.limits.subscription_backlog,
            session_bytes: self.limits.session_backlog_bytes,
        }
    }

    /// Subscription `id` and its session, if `delivery` can reach it; a
    /// blob too large for a client that takes none is counted missed (and
    /// the client told) instead.
    fn reachable(
        &mut self,
        id: SubId,
        delivery: &Delivery,
        max_frame: u32,
    ) -> Option<(&mut topics::Subscription, &SessionEntry)> {
        let sub = self.topics.get_mut(id)?;
        let session = self.sessions.get(&sub.session)?;
        if !super::blobs::reaches(session, &delivery.payload, max_frame) {
            sub.missed += 1;
            sub.unreported += 1;
            session.backlog.raise();
            return None;
        }
        Some((sub, session))
    }

    /// Moves a session's backlogs into its outbox while it has room,
    /// reporting drops first. Returns whether backlog remains.
    pub fn pump(&mut self, session: SessionId) -> bool {
        let Some(entry) = self.sessions.get(&session) else {
            return false;
        };
        let mut remaining = false;
        for id in &entry.subscriptions {
            let Some(sub) = self.topics.get_mut(*id) else {
                continue;
            };
            if sub.unreported > 0 && !entry.outbox.is_congested() {
                entry.push(session, &Frame::Lagged { sid: sub.sid, missed: sub.unreported });
                sub.unreported = 0;
            }
            while !entry.outbox.is_congested() {
                let Some(delivery) = topics::take(sub, &entry.backlogged) else {
                    break;
                };
                sub.delivered += 1;
                entry.push(session, &message(sub.sid, delivery));
            }
            remaining |= !sub.backlog.is_empty() || sub.unreported > 0;
        }
        if !remaining {
            entry.backlog.clear();
        }
        remaining
    }
}

/// After a message joined `sub`'s backlog: the subscriber's writer is told,
/// and a publisher should wait for it unless it lags.
fn backlogged(sub: &topics::Subscription, session: &SessionEntry) -> Option<Congested> {
    session.backlog.raise();
    let wait = Wait::Subscriber;
    (!sub.lagging).then(|| Congested { session: sub.session, outbox: session.outbox.clone(), wait })
}

/// Where a `Message` frame's subscription id lies: after the length prefix
/// and the kind byte (docs/protocol.md, "Frames").
const MESSAGE_SID: std::ops::Range<usize> = 5..9;

fn message(sid: u32, d: Delivery) -> Frame {
    Frame::Message(Message {
        sid,
        retained: d.retained,
        publisher: d.publisher,
        topic: d.topic,
        headers: d.headers,
        payload: d.payload,
    })
}

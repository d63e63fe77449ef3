//! Topics on the router: subscribe, publish, and pumping backlogs.

use bytes::Bytes;
use switchboard_proto::{
    Caller, ErrorCode, Frame, Headers, Message, Publish, SessionId, Topic, TopicPattern,
};

use super::topics::{self, Delivery, Retained, SubId};
use super::Router;
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

    pub(super) fn publish(&mut self, from: SessionId, publish: Publish) {
        if self.shutting_down {
            return;
        }
        let Some(session) = self.sessions.get(&from) else {
            return;
        };
        let publisher = session.caller.clone();
        let Publish { retain, topic, headers, payload } = publish;
        if let Err((code, message)) = self.allowed(from, Op::Publish, topic.as_str()) {
            // A publication has no reply: the refusal goes back under id 0.
            return self.send_error(from, 0, code, message);
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
                return; // clearing a retained value is not a message
            }
        }
        self.fan_out(from, publisher, topic, headers, payload);
    }

    /// Offers a publication to every matching subscription (after the
    /// publisher's checks; `from` is 0 for the daemon's own).
    pub(super) fn fan_out(
        &mut self,
        from: SessionId,
        publisher: Caller,
        topic: Topic,
        headers: Headers,
        payload: Bytes,
    ) {
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
        // Clone for all but the last subscriber, which takes the original:
        // reference counting is the main per-message cost here.
        let mut message = Some(Delivery { retained: false, publisher, topic, headers, payload });
        let last = matched.len().saturating_sub(1);
        for (index, id) in matched.iter().enumerate() {
            let delivery = if index == last { message.take() } else { message.clone() };
            if let Some(delivery) = delivery {
                self.offer(*id, delivery);
            }
        }
        self.matched = matched;
    }

    /// Sends a message to a subscription now, or keeps it in its backlog if
    /// the connection is congested or older messages are waiting.
    fn offer(&mut self, id: SubId, delivery: Delivery) {
        let limits = topics::BacklogLimits {
            messages: self.limits.subscription_backlog,
            session_bytes: self.limits.session_backlog_bytes,
        };
        let reaches = match self.topics.get(id) {
            Some(sub) => self.reaches(sub.session, &delivery.payload).is_ok(),
            None => return,
        };
        let Some(sub) = self.topics.get_mut(id) else {
            return;
        };
        let Some(session) = self.sessions.get(&sub.session) else {
            return;
        };
        if !reaches {
            // Too large for a client that takes no blobs: missed, and told.
            sub.missed += 1;
            sub.unreported += 1;
            session.backlog.raise();
            return;
        }
        if sub.backlog.is_empty() && !session.outbox.is_congested() {
            sub.delivered += 1;
            session.push(sub.session, &message(sub.sid, delivery));
        } else {
            topics::enqueue(sub, delivery, limits, &session.backlogged);
            session.backlog.raise();
        }
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

//! Subscriptions, the pattern trie that matches topics against them,
//! retained last values, and each subscription's backlog.
//!
//! A publisher is never slowed by a subscriber: a message for a subscriber
//! whose connection is congested waits in that subscription's bounded
//! backlog, and when the backlog is full the oldest message is dropped and
//! counted. The subscriber is told how many it missed (`Lagged`) before the
//! next message it gets. This module only keeps the state; the router moves
//! frames.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Bytes, BytesMut};
use switchboard_proto::{Caller, Headers, SessionId, Topic, TopicPattern};
use tokio::sync::Notify;

use super::FastMap;

/// Tells a session that one of its subscriptions has a backlog to pump.
///
/// The session may be blocked reading its own socket when a publisher on
/// another connection fills its backlog, so raising the flag also wakes it.
#[derive(Debug, Default)]
pub struct BacklogSignal {
    flag: AtomicBool,
    wake: Notify,
}

impl BacklogSignal {
    /// Raises the flag, waking the session if it was not raised yet.
    pub fn raise(&self) {
        if !self.flag.swap(true, Ordering::AcqRel) {
            self.wake.notify_one();
        }
    }

    pub fn clear(&self) {
        self.flag.store(false, Ordering::Release);
    }

    pub fn is_raised(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// Resolves when the flag is raised (at once if it was raised since the
    /// last wait).
    pub async fn raised(&self) {
        self.wake.notified().await;
    }
}

/// Global id of a subscription (the client's `sid` is only unique per connection).
pub type SubId = u64;

/// One subscription.
#[derive(Debug)]
pub struct Subscription {
    pub session: SessionId,
    /// The id the client chose; messages carry it.
    pub sid: u32,
    pub pattern: TopicPattern,
    pub delivered: u64,
    /// Messages dropped in total (daemon backlog and client-reported).
    pub missed: u64,
    /// Dropped by the daemon and not yet reported to the subscriber.
    pub unreported: u64,
    /// Messages waiting for the connection to drain.
    pub backlog: VecDeque<Delivery>,
    /// What `backlog` holds, in bytes (see [`Delivery::cost`]).
    pub backlog_bytes: usize,
    /// It kept a publisher waiting past `Limits::publish_hold`: until its
    /// backlog empties, publications no longer wait for it.
    pub lagging: bool,
}

/// A message waiting in a backlog.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub retained: bool,
    pub publisher: Caller,
    pub topic: Topic,
    pub headers: Headers,
    pub payload: Bytes,
}

impl Delivery {
    /// Bytes it holds while it waits: its payload, headers and topic, and
    /// a fixed share for the entry itself.
    pub fn cost(&self) -> usize {
        64 + switchboard_transport::blob::charge(&self.payload)
            + self.headers.wire_len()
            + self.topic.as_str().len()
    }
}

/// What all the backlogs of one connection hold: their bytes, and the
/// arena small payloads are copied into while they wait.
///
/// Copying is what keeps a few waiting bytes from pinning a publisher's
/// whole read buffer; copying into a shared arena chunk instead of a fresh
/// allocation each keeps the backlog path free of per-message allocation.
/// Messages leave a backlog in order, so a chunk is freed soon after its
/// last message goes: at most one chunk more than the bytes waiting.
#[derive(Debug, Default)]
pub struct SessionBacklog {
    bytes: Cell<usize>,
    arena: RefCell<BytesMut>,
}

/// Size of one arena chunk.
const ARENA_CHUNK: usize = 64 * 1024;

impl SessionBacklog {
    /// Bytes waiting in the connection's backlogs.
    pub fn held(&self) -> usize {
        self.bytes.get()
    }

    fn add(&self, cost: usize) {
        self.bytes.set(self.bytes.get() + cost);
    }

    pub fn release(&self, cost: usize) {
        self.bytes.set(self.bytes.get().saturating_sub(cost));
    }

    /// `payload` in memory of its own (see the type's doc); large ones
    /// (their own allocation already, in practice) are kept as they are.
    fn keep(&self, payload: Bytes) -> Bytes {
        if payload.is_empty() || payload.len() >= super::DETACH_BELOW {
            return payload;
        }
        if switchboard_transport::Blob::of(&payload).is_some() {
            return payload; // shared memory already, and passed as a descriptor
        }
        let mut arena = self.arena.borrow_mut();
        if arena.capacity() - arena.len() < payload.len() {
            *arena = BytesMut::with_capacity(ARENA_CHUNK.max(payload.len()));
        }
        arena.extend_from_slice(&payload);
        arena.split().freeze()
    }
}

/// How much a backlog may hold.
#[derive(Debug, Clone, Copy)]
pub struct BacklogLimits {
    /// Messages in one subscription's backlog.
    pub messages: usize,
    /// Bytes in all backlogs of one connection.
    pub session_bytes: usize,
}

/// A topic's retained last value.
#[derive(Debug, Clone)]
pub struct Retained {
    pub publisher: Caller,
    pub headers: Headers,
    pub payload: Bytes,
}

#[derive(Debug, Default)]
struct Node {
    children: FastMap<Bytes, Node>,
    star: Option<Box<Node>>,
    /// Patterns ending here.
    here: Vec<SubId>,
    /// Patterns ending here with `>`: they match one or more further tokens.
    rest: Vec<SubId>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.star.is_none() && self.here.is_empty() && self.rest.is_empty()
    }

    fn collect(&self, tokens: &[&[u8]], out: &mut Vec<SubId>) {
        let Some((first, rest)) = tokens.split_first() else {
            out.extend_from_slice(&self.here);
            return;
        };
        out.extend_from_slice(&self.rest);
        if let Some(child) = self.children.get(*first) {
            child.collect(rest, out);
        }
        if let Some(star) = &self.star {
            star.collect(rest, out);
        }
    }
}

/// Why a subscription was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    #[error("subscription id {0} is already in use on this connection")]
    DuplicateSid(u32),
    #[error("this connection already has {0} subscriptions (the limit)")]
    TooMany(usize),
}

/// All subscriptions and retained values.
#[derive(Debug, Default)]
pub struct Topics {
    root: Node,
    subs: FastMap<SubId, Subscription>,
    by_client: FastMap<(SessionId, u32), SubId>,
    retained: HashMap<Topic, Retained>,
    next_id: SubId,
}

impl Topics {
    /// Adds a subscription.
    pub fn subscribe(
        &mut self,
        session: SessionId,
        sid: u32,
        pattern: TopicPattern,
        per_session_limit: usize,
        session_count: usize,
    ) -> Result<SubId, SubscribeError> {
        if self.by_client.contains_key(&(session, sid)) {
            return Err(SubscribeError::DuplicateSid(sid));
        }
        if session_count >= per_session_limit {
            return Err(SubscribeError::TooMany(per_session_limit));
        }
        self.next_id += 1;
        let id = self.next_id;
        let mut node = &mut self.root;
        let tokens: Vec<&[u8]> = pattern.tokens().collect();
        for (index, token) in tokens.iter().enumerate() {
            match *token {
                b">" if index + 1 == tokens.len() => {
                    node.rest.push(id);
                    break;
                }
                b"*" => node = node.star.get_or_insert_with(Box::default),
                literal => node = node.children.entry(Bytes::copy_from_slice(literal)).or_default(),
            }
            if index + 1 == tokens.len() {
                node.here.push(id);
            }
        }
        self.by_client.insert((session, sid), id);
        self.subs.insert(
            id,
            Subscription {
                session,
                sid,
                pattern,
                delivered: 0,
                missed: 0,
                unreported: 0,
                backlog: VecDeque::new(),
                backlog_bytes: 0,
                lagging: false,
            },
        );
        Ok(id)
    }

    /// Removes a subscription; returns it if it existed.
    pub fn unsubscribe(&mut self, id: SubId) -> Option<Subscription> {
        let sub = self.subs.remove(&id)?;
        self.by_client.remove(&(sub.session, sub.sid));
        let tokens: Vec<&[u8]> = sub.pattern.tokens().collect();
        remove_from(&mut self.root, &tokens, id);
        Some(sub)
    }

    /// The global id of a connection's subscription.
    pub fn find(&self, session: SessionId, sid: u32) -> Option<SubId> {
        self.by_client.get(&(session, sid)).copied()
    }

    pub fn get(&self, id: SubId) -> Option<&Subscription> {
        self.subs.get(&id)
    }

    pub fn get_mut(&mut self, id: SubId) -> Option<&mut Subscription> {
        self.subs.get_mut(&id)
    }

    /// Appends the ids of subscriptions matching `topic` to `out`.
    pub fn matching(&self, topic: &Topic, out: &mut Vec<SubId>) {
        let mut tokens: [&[u8]; 32] = [&[]; 32];
        let mut count = 0;
        let mut long = Vec::new();
        for token in topic.tokens() {
            if count < tokens.len() {
                tokens[count] = token;
            }
            count += 1;
        }
        let tokens = if count <= tokens.len() {
            &tokens[..count]
        } else {
            // Deep topics are rare; avoid the fixed array only for them.
            long.extend(topic.tokens());
            &long[..]
        };
        self.root.collect(tokens, out);
    }

    /// Sets or clears (empty payload) a topic's retained value. Returns
    /// false when a new topic would exceed `limit` retained topics.
    pub fn retain(&mut self, topic: &Topic, value: Retained, limit: usize) -> bool {
        if value.payload.is_empty() {
            self.retained.remove(topic.as_str());
            return true;
        }
        if !self.retained.contains_key(topic.as_str()) && self.retained.len() >= limit {
            return false;
        }
        self.retained.insert(topic.clone(), value);
        true
    }

    /// Retained values whose topic matches `pattern`, sorted by topic.
    pub fn retained_matching(&self, pattern: &TopicPattern) -> Vec<(Topic, Retained)> {
        let mut found: Vec<(Topic, Retained)> = self
            .retained
            .iter()
            .filter(|(topic, _)| pattern.matches(topic))
            .map(|(topic, value)| (topic.clone(), value.clone()))
            .collect();
        found.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        found
    }

    /// Whether `topic`'s retained value is `payload` now.
    pub fn retains(&self, topic: &Topic, payload: &[u8]) -> bool {
        self.retained.get(topic.as_str()).is_some_and(|value| value.payload == payload)
    }

    /// Every retained value (handed to a successor daemon).
    pub fn retained_values(&self) -> Vec<(Topic, Retained)> {
        self.retained.iter().map(|(topic, value)| (topic.clone(), value.clone())).collect()
    }

    /// Every subscription, for listing.
    pub fn all(&self) -> impl Iterator<Item = (&SubId, &Subscription)> {
        self.subs.iter()
    }

    pub fn retained_count(&self) -> usize {
        self.retained.len()
    }
}

/// Adds a message to a subscription's backlog, dropping (and counting) its
/// oldest while the backlog is at its message limit or the connection's
/// backlogs at their byte limit. If the bytes are held by the connection's
/// other subscriptions, the new message is the one dropped.
/// `session_bytes` is the connection's total, kept up to date.
pub fn enqueue(
    sub: &mut Subscription,
    mut delivery: Delivery,
    limits: BacklogLimits,
    session: &SessionBacklog,
) {
    let cost = delivery.cost();
    let over = |sub: &Subscription| {
        sub.backlog.len() >= limits.messages.max(1) || session.held() + cost > limits.session_bytes
    };
    while over(sub) && take(sub, session).is_some() {
        sub.missed += 1;
        sub.unreported += 1;
    }
    if over(sub) {
        sub.missed += 1;
        sub.unreported += 1;
        return;
    }
    delivery.payload = session.keep(delivery.payload);
    sub.backlog_bytes += cost;
    session.add(cost);
    sub.backlog.push_back(delivery);
}

/// Takes the oldest message of a subscription's backlog.
pub fn take(sub: &mut Subscription, session: &SessionBacklog) -> Option<Delivery> {
    let delivery = sub.backlog.pop_front()?;
    if sub.backlog.is_empty() {
        sub.lagging = false; // caught up: publications wait for it again
    }
    let cost = delivery.cost();
    sub.backlog_bytes = sub.backlog_bytes.saturating_sub(cost);
    session.release(cost);
    Some(delivery)
}

fn remove_from(node: &mut Node, tokens: &[&[u8]], id: SubId) {
    match tokens {
        [] => node.here.retain(|s| *s != id),
        [b">"] => node.rest.retain(|s| *s != id),
        [first, rest @ ..] => {
            if *first == b"*" {
                if let Some(star) = node.star.as_mut() {
                    remove_from(star, rest, id);
                    if star.is_empty() {
                        node.star = None;
                    }
                }
            } else if let Some(child) = node.children.get_mut(*first) {
                remove_from(child, rest, id);
                if child.is_empty() {
                    node.children.remove(*first);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(t: &str) -> Topic {
        Topic::parse(t).unwrap()
    }

    fn subscribed(patterns: &[&str]) -> (Topics, Vec<SubId>) {
        let mut topics = Topics::default();
        let ids = patterns
            .iter()
            .enumerate()
            .map(|(i, p)| topics.subscribe(1, i as u32, TopicPattern::parse(p).unwrap(), 100, i).unwrap())
            .collect();
        (topics, ids)
    }

    fn matches(topics: &Topics, t: &str) -> Vec<SubId> {
        let mut out = Vec::new();
        topics.matching(&topic(t), &mut out);
        out.sort_unstable();
        out
    }

    #[test]
    fn trie_agrees_with_the_pattern_rule() {
        let patterns = ["a.b", "a.*", "a.>", "*.b", ">", "*", "a.*.c", "a.b.>", "x.y.z"];
        let topics_to_try = ["a", "a.b", "a.c", "b.b", "a.b.c", "a.x.c", "a.b.c.d", "x.y.z", "x.y"];
        let (topics, ids) = subscribed(&patterns);
        for t in topics_to_try {
            let expected: Vec<SubId> = patterns
                .iter()
                .zip(&ids)
                .filter(|(p, _)| TopicPattern::parse(p).unwrap().matches(&topic(t)))
                .map(|(_, id)| *id)
                .collect();
            assert_eq!(matches(&topics, t), expected, "topic {t}");
        }
    }

    #[test]
    fn unsubscribe_prunes_the_trie() {
        let (mut topics, ids) = subscribed(&["a.*.c", "a.>"]);
        for id in ids {
            assert!(topics.unsubscribe(id).is_some());
        }
        assert!(topics.root.is_empty());
        assert!(matches(&topics, "a.b.c").is_empty());
    }

    #[test]
    fn duplicate_sid_and_limit_are_refused() {
        let mut topics = Topics::default();
        let p = TopicPattern::parse("a").unwrap();
        topics.subscribe(1, 7, p.clone(), 2, 0).unwrap();
        assert_eq!(topics.subscribe(1, 7, p.clone(), 2, 1), Err(SubscribeError::DuplicateSid(7)));
        assert_eq!(topics.subscribe(1, 8, p, 2, 2), Err(SubscribeError::TooMany(2)));
    }

    #[test]
    fn retained_values_replace_clear_and_are_bounded() {
        let mut topics = Topics::default();
        let value = |p: &'static [u8]| Retained {
            publisher: Caller::default(),
            headers: Headers::new(),
            payload: Bytes::from_static(p),
        };
        assert!(topics.retain(&topic("db.primary"), value(b"host-a"), 2));
        assert!(topics.retain(&topic("db.primary"), value(b"host-b"), 2));
        assert!(topics.retain(&topic("db.replica"), value(b"host-c"), 2));
        assert!(!topics.retain(&topic("db.third"), value(b"x"), 2));
        let found = topics.retained_matching(&TopicPattern::parse("db.*").unwrap());
        assert_eq!(found.len(), 2);
        assert_eq!(&found[0].1.payload[..], b"host-b");
        assert!(topics.retain(&topic("db.primary"), value(b""), 2));
        assert_eq!(topics.retained_count(), 1);
    }

    #[test]
    fn full_backlog_drops_oldest_and_counts() {
        let (mut topics, ids) = subscribed(&["a"]);
        let sub = topics.get_mut(ids[0]).unwrap();
        for i in 0..10u8 {
            let delivery = Delivery {
                retained: false,
                publisher: Caller::default(),
                topic: topic("a"),
                headers: Headers::new(),
                payload: Bytes::from(vec![i]),
            };
            enqueue(
                sub,
                delivery,
                BacklogLimits { messages: 4, session_bytes: 1 << 20 },
                &SessionBacklog::default(),
            );
        }
        assert_eq!(sub.backlog.len(), 4);
        assert_eq!((sub.missed, sub.unreported), (6, 6));
        assert_eq!(sub.backlog[0].payload[0], 6);
    }

    /// Issue 12, defect 7: a few waiting bytes held a publisher's whole
    /// read buffer. Kept payloads are copied out, into shared arena chunks.
    #[test]
    fn kept_payloads_leave_the_read_buffer_and_share_arena_chunks() {
        let session = SessionBacklog::default();
        let buffer = Bytes::from(vec![1u8; 256 * 1024]);
        let inside = |b: &Bytes| {
            let start = buffer.as_ptr() as usize;
            (start..start + buffer.len()).contains(&(b.as_ptr() as usize))
        };
        let kept = session.keep(buffer.slice(10..26));
        assert_eq!(kept, buffer.slice(10..26));
        assert!(!inside(&kept), "still a slice of the read buffer");
        let next = session.keep(buffer.slice(100..116));
        assert_eq!(next.as_ptr() as usize, kept.as_ptr() as usize + 16, "one chunk, one after the other");
    }

    /// Issue 12, defect 7: backlogs were bounded in messages only, so 8,192
    /// large messages per subscription could be held.
    #[test]
    fn a_connections_backlogs_are_bounded_in_bytes() {
        let (mut topics, ids) = subscribed(&["a", "b"]);
        let session_bytes = SessionBacklog::default();
        let limits = BacklogLimits { messages: 1000, session_bytes: 10_000 };
        let big = |t: &str| Delivery {
            retained: false,
            publisher: Caller::default(),
            topic: topic(t),
            headers: Headers::new(),
            payload: Bytes::from(vec![1u8; 1000]),
        };
        for _ in 0..50 {
            enqueue(topics.get_mut(ids[0]).unwrap(), big("a"), limits, &session_bytes);
        }
        let a = topics.get_mut(ids[0]).unwrap();
        assert!(session_bytes.held() <= 10_000, "{}", session_bytes.held());
        assert_eq!(a.backlog.len(), 9);
        assert_eq!(a.missed, 41);
        // The other subscription finds no room: its new message is dropped, counted.
        enqueue(topics.get_mut(ids[1]).unwrap(), big("b"), limits, &session_bytes);
        let b = topics.get_mut(ids[1]).unwrap();
        assert_eq!((b.backlog.len(), b.missed), (0, 1));
        // Taking frees the bytes.
        while take(topics.get_mut(ids[0]).unwrap(), &session_bytes).is_some() {}
        assert_eq!(session_bytes.held(), 0);
    }
}

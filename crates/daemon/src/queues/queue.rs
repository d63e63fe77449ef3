//! One queue's state: which messages wait, which are out with a consumer,
//! and what happens on ack, nack, timeout, expiry and overflow.
//!
//! Pure: it never writes to disk or to a socket. The manager asks it for
//! decisions and turns them into durable records and frames. Messages
//! become deliverable only once their put is on disk (`committed`), and are
//! forgotten only once their removal is (`removed`).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use switchboard_proto::sys::{Overflow, QueueOptions};

use super::record::StoredMessage;

/// Who holds a delivery: (session, consumer id chosen by the client).
pub type ConsumerKey = (u64, u32);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Put received, not yet on disk.
    Pending,
    Ready,
    /// Out with a consumer under this delivery tag.
    InFlight(u64),
    /// Nacked with a delay, or waiting to be removed on disk.
    Parked,
}

#[derive(Debug)]
struct Entry {
    message: StoredMessage,
    state: State,
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    id: u64,
    consumer: ConsumerKey,
    visible_at: Instant,
}

/// Why a put is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PutRefused {
    #[error(
        "queue {queue} is full ({messages} messages, {bytes} bytes; limits {max_messages} and {max_bytes})"
    )]
    Full { queue: String, messages: u64, bytes: u64, max_messages: u64, max_bytes: u64 },
}

/// What admitting a put decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Admitted {
    /// Store it; these older messages were dropped to make room and must be
    /// removed on disk too.
    Store { dropped: Vec<u64> },
    /// A retry of a put already stored under this id: nothing to store.
    Duplicate(u64),
}

/// What the next delivery is.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Deliver(StoredMessage),
    /// Remove from this queue and put into the dead-letter queue.
    DeadLetter(StoredMessage, &'static str),
}

/// Counters for `switchboard queue ls`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counters {
    pub put: u64,
    pub acked: u64,
    pub dead_lettered: u64,
    pub dropped: u64,
}

/// One queue.
#[derive(Debug)]
pub struct Queue {
    pub name: String,
    pub options: QueueOptions,
    entries: HashMap<u64, Entry>,
    /// Ready ids by priority (index = priority), FIFO within each.
    ready: [VecDeque<u64>; 10],
    delayed: BinaryHeap<Reverse<(Instant, u64)>>,
    /// Messages with a time to live, soonest first, so the expiry sweep
    /// touches only what expires (entries no longer waiting are skipped).
    expiring: BinaryHeap<Reverse<(u64, u64)>>,
    in_flight: HashMap<u64, InFlight>,
    dedup: HashMap<String, (u64, u64)>,
    bytes: u64,
    pub counters: Counters,
}

/// What a message counts toward `max_bytes`: its producer id too, which
/// the queue keeps for the duplicate window.
/// `now + wait`, or a century from now when a client's option overflows
/// the clock (a declare may say `u64::MAX` milliseconds).
fn later(now: Instant, wait: Duration) -> Instant {
    now.checked_add(wait)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(now)
}

fn size_of(message: &StoredMessage) -> u64 {
    (message.payload.len() + message.headers.len() + message.dedup_id.len()) as u64
}

impl Queue {
    pub fn new(name: String, options: QueueOptions) -> Self {
        Self {
            name,
            options,
            entries: HashMap::new(),
            ready: Default::default(),
            delayed: BinaryHeap::new(),
            expiring: BinaryHeap::new(),
            in_flight: HashMap::new(),
            dedup: HashMap::new(),
            bytes: 0,
            counters: Counters::default(),
        }
    }

    /// Checks a new put against duplicates and limits.
    pub fn admit(&mut self, message: &StoredMessage, now_ms: u64) -> Result<Admitted, PutRefused> {
        if !message.dedup_id.is_empty() {
            if let Some((id, until)) = self.dedup.get(&message.dedup_id) {
                if now_ms < *until {
                    return Ok(Admitted::Duplicate(*id));
                }
            }
        }
        let size = size_of(message);
        // Dropped messages stay counted until their removal is on disk, so
        // what is being dropped now is discounted here.
        let (mut freed_messages, mut freed_bytes) = (0u64, 0u64);
        let fits = |q: &Self, freed_messages: u64, freed_bytes: u64| {
            (q.entries.len() as u64 - freed_messages) < q.options.max_messages
                && q.bytes - freed_bytes + size <= q.options.max_bytes
        };
        let mut dropped = Vec::new();
        while !fits(self, freed_messages, freed_bytes) {
            if self.options.overflow == Overflow::Reject {
                return Err(self.full());
            }
            match self.oldest_waiting() {
                Some(id) => {
                    freed_messages += 1;
                    freed_bytes += self.entries.get(&id).map_or(0, |e| size_of(&e.message));
                    self.park(id);
                    self.counters.dropped += 1;
                    dropped.push(id);
                }
                None => return Err(self.full()),
            }
        }
        Ok(Admitted::Store { dropped })
    }

    fn full(&self) -> PutRefused {
        PutRefused::Full {
            queue: self.name.clone(),
            messages: self.entries.len() as u64,
            bytes: self.bytes,
            max_messages: self.options.max_messages,
            max_bytes: self.options.max_bytes,
        }
    }

    /// The oldest message waiting to be delivered: the lowest id at the
    /// head of the ten priority lists (heads no longer waiting are dropped).
    fn oldest_waiting(&mut self) -> Option<u64> {
        let mut oldest = None;
        for priority in 0..10 {
            while let Some(id) = self.ready[priority].front().copied() {
                if self.entries.get(&id).is_some_and(|e| e.state == State::Ready) {
                    oldest = oldest.min(Some(id)).or(Some(id));
                    break;
                }
                self.ready[priority].pop_front();
            }
        }
        oldest
    }

    /// Records a put (not yet deliverable).
    pub fn insert(&mut self, message: StoredMessage, now_ms: u64) {
        if !message.dedup_id.is_empty() {
            let until = now_ms.saturating_add(self.options.dedup_window_ms);
            self.dedup.insert(message.dedup_id.clone(), (message.id, until));
        }
        self.bytes += size_of(&message);
        self.counters.put += 1;
        if message.expires_at_ms != 0 {
            self.expiring.push(Reverse((message.expires_at_ms, message.id)));
        }
        self.entries.insert(message.id, Entry { message, state: State::Pending });
    }

    /// The put is on disk: the message may be delivered.
    pub fn committed(&mut self, id: u64) {
        if let Some(entry) = self.entries.get_mut(&id) {
            if entry.state == State::Pending {
                entry.state = State::Ready;
                self.ready[usize::from(entry.message.priority.min(9))].push_back(id);
            }
        }
    }

    /// A message recovered from disk: deliverable at once.
    pub fn restore(&mut self, message: StoredMessage, now_ms: u64) {
        let id = message.id;
        self.insert(message, now_ms);
        self.counters.put -= 1;
        self.committed(id);
    }

    /// Takes the next message for a consumer, highest priority first.
    /// Expired messages and those past `max_attempts` come back as
    /// `DeadLetter` (the caller asks again for a deliverable one).
    pub fn next(&mut self, tag: u64, consumer: ConsumerKey, now: Instant, now_ms: u64) -> Option<Next> {
        let id = (0..10).rev().find_map(|p| self.pop_ready(p))?;
        let entry = self.entries.get_mut(&id)?;
        let expired = entry.message.expires_at_ms != 0 && now_ms >= entry.message.expires_at_ms;
        let exhausted = self.options.max_attempts != 0 && entry.message.attempts >= self.options.max_attempts;
        if expired || exhausted {
            entry.state = State::Parked;
            self.counters.dead_lettered += 1;
            let reason = if expired { "expired" } else { "max_attempts" };
            return Some(Next::DeadLetter(entry.message.clone(), reason));
        }
        entry.message.attempts += 1;
        entry.state = State::InFlight(tag);
        let visible_at = later(now, Duration::from_millis(self.options.visibility_timeout_ms));
        self.in_flight.insert(tag, InFlight { id, consumer, visible_at });
        Some(Next::Deliver(entry.message.clone()))
    }

    fn pop_ready(&mut self, priority: usize) -> Option<u64> {
        while let Some(id) = self.ready[priority].pop_front() {
            // Entries parked or removed since they were queued are skipped.
            if self.entries.get(&id).is_some_and(|e| e.state == State::Ready) {
                return Some(id);
            }
        }
        None
    }

    /// A consumer is done with a delivery: the message waits for its
    /// removal to reach the disk. Returns its id, or None if the tag is stale.
    pub fn ack(&mut self, tag: u64, consumer: ConsumerKey) -> Option<u64> {
        let flight = self.in_flight.get(&tag).filter(|f| f.consumer.0 == consumer.0)?;
        let id = flight.id;
        self.in_flight.remove(&tag);
        self.park(id);
        self.counters.acked += 1;
        Some(id)
    }

    /// A consumer gives a delivery back, to be redelivered after `delay`.
    pub fn nack(&mut self, tag: u64, consumer: ConsumerKey, delay: Duration, now: Instant) -> Option<u64> {
        let flight = self.in_flight.get(&tag).filter(|f| f.consumer.0 == consumer.0)?;
        let id = flight.id;
        self.in_flight.remove(&tag);
        if delay.is_zero() {
            self.requeue(id);
        } else {
            self.park(id);
            self.delayed.push(Reverse((later(now, delay), id)));
        }
        Some(id)
    }

    fn requeue(&mut self, id: u64) {
        if let Some(entry) = self.entries.get_mut(&id) {
            entry.state = State::Ready;
            // Back at the head of its priority: it was next before.
            self.ready[usize::from(entry.message.priority.min(9))].push_front(id);
        }
    }

    fn park(&mut self, id: u64) {
        if let Some(entry) = self.entries.get_mut(&id) {
            entry.state = State::Parked;
        }
    }

    /// The put could not be written: forget the message and its producer
    /// id, so a retry with the same id is stored, not called a duplicate.
    pub fn put_failed(&mut self, id: u64) {
        if let Some(entry) = self.entries.get(&id) {
            let dedup_id = entry.message.dedup_id.clone();
            if self.dedup.get(&dedup_id).is_some_and(|(original, _)| *original == id) {
                self.dedup.remove(&dedup_id);
            }
        }
        self.removed(id);
        self.counters.put = self.counters.put.saturating_sub(1);
    }

    /// Whether a put with this producer id is known to be stored as `id`:
    /// asked when a duplicate's turn to be confirmed comes, after the
    /// original's commit succeeded or failed.
    pub fn stored_as(&self, dedup_id: &str, id: u64) -> bool {
        self.dedup.get(dedup_id).is_some_and(|(original, _)| *original == id)
    }

    /// A removal (ack, drop, purge, dead-letter) could not be written: the
    /// message is still on disk, so it stays in the queue, deliverable.
    pub fn removal_failed(&mut self, id: u64) {
        if self.entries.get(&id).is_some_and(|e| e.state == State::Parked) {
            self.requeue(id);
        }
    }

    /// The message's removal is on disk: forget it.
    pub fn removed(&mut self, id: u64) {
        if let Some(entry) = self.entries.remove(&id) {
            self.bytes -= size_of(&entry.message);
            if let State::InFlight(tag) = entry.state {
                self.in_flight.remove(&tag);
            }
        }
    }

    /// Returns deliveries whose visibility timeout passed, and delayed
    /// messages whose delay is over, to the queue. Returns how many.
    pub fn tick(&mut self, now: Instant, now_ms: u64) -> usize {
        let timed_out: Vec<u64> =
            self.in_flight.iter().filter(|(_, f)| f.visible_at <= now).map(|(tag, _)| *tag).collect();
        let mut returned = timed_out.len();
        for tag in timed_out {
            if let Some(flight) = self.in_flight.remove(&tag) {
                self.requeue(flight.id);
            }
        }
        while let Some(Reverse((at, id))) = self.delayed.peek().copied() {
            if at > now {
                break;
            }
            self.delayed.pop();
            if self.entries.get(&id).is_some_and(|e| e.state == State::Parked) {
                self.requeue(id);
                returned += 1;
            }
        }
        self.dedup.retain(|_, (_, until)| *until > now_ms);
        returned
    }

    /// Waiting messages whose time to live has passed: they leave the
    /// queue (to be dead-lettered by the caller).
    pub fn take_expired(&mut self, now_ms: u64) -> Vec<StoredMessage> {
        let mut out = Vec::new();
        let mut later = Vec::new();
        while let Some(Reverse((at, id))) = self.expiring.peek().copied() {
            if at > now_ms {
                break;
            }
            self.expiring.pop();
            match self.entries.get(&id).map(|e| e.state) {
                Some(State::Ready) => {}
                // Still being written, or out with a consumer: look again at
                // the next sweep (it may come back to the queue unacked).
                Some(State::Pending) | Some(State::InFlight(_)) => {
                    later.push(Reverse((at, id)));
                    continue;
                }
                // Gone, or on its way out.
                Some(State::Parked) | None => continue,
            }
            self.park(id);
            self.counters.dead_lettered += 1;
            if let Some(entry) = self.entries.get(&id) {
                out.push(entry.message.clone());
            }
        }
        self.expiring.extend(later);
        out
    }

    /// A consumer went away: its deliveries return to the queue.
    pub fn release_consumer(&mut self, consumer: ConsumerKey) -> usize {
        let tags: Vec<u64> =
            self.in_flight.iter().filter(|(_, f)| f.consumer == consumer).map(|(t, _)| *t).collect();
        for tag in &tags {
            if let Some(flight) = self.in_flight.remove(tag) {
                self.requeue(flight.id);
            }
        }
        tags.len()
    }

    /// Every message not yet removed, for purging.
    pub fn purge(&mut self) -> Vec<u64> {
        let ids: Vec<u64> = self.entries.keys().copied().collect();
        for id in &ids {
            self.park(*id);
        }
        self.in_flight.clear();
        ids
    }

    /// Up to `count` waiting messages in delivery order.
    pub fn peek(&self, count: usize) -> Vec<&StoredMessage> {
        (0..10)
            .rev()
            .flat_map(|p| self.ready[p].iter())
            .filter_map(|id| self.entries.get(id).filter(|e| e.state == State::Ready))
            .map(|e| &e.message)
            .take(count)
            .collect()
    }

    /// The producer id of a message and until when it suppresses
    /// duplicates, if it has one.
    pub fn dedup_of(&self, id: u64) -> Option<(String, u64)> {
        let message = &self.entries.get(&id)?.message;
        if message.dedup_id.is_empty() {
            return None;
        }
        Some((message.dedup_id.clone(), message.put_at_ms.saturating_add(self.options.dedup_window_ms)))
    }

    /// Remembers a producer id recovered from disk for a message that is gone.
    pub fn remember(&mut self, dedup_id: String, id: u64, until_ms: u64) {
        self.dedup.insert(dedup_id, (id, until_ms));
    }

    /// Whether a delivery tag is still out with a consumer.
    pub fn is_outstanding(&self, tag: u64) -> bool {
        self.in_flight.contains_key(&tag)
    }

    /// Deliveries a consumer holds now.
    pub fn held_by(&self, consumer: ConsumerKey) -> usize {
        self.in_flight.values().filter(|f| f.consumer == consumer).count()
    }

    /// Messages waiting (ready or delayed), not counting those out.
    pub fn depth(&self) -> u64 {
        self.entries.values().filter(|e| matches!(e.state, State::Ready | State::Pending)).count() as u64
            + self.delayed.len() as u64
    }

    /// Messages held in any state: waiting, out, being written or on their way out.
    pub fn held(&self) -> u64 {
        self.entries.len() as u64
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.len() as u64
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether a delivery could be made now.
    pub fn has_ready(&self) -> bool {
        self.ready.iter().any(|r| !r.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn msg(id: u64, priority: u8) -> StoredMessage {
        StoredMessage {
            queue: "q".into(),
            id,
            priority,
            expires_at_ms: 0,
            put_at_ms: 0,
            attempts: 0,
            dedup_id: String::new(),
            headers: Bytes::new(),
            payload: Bytes::from_static(b"0123456789"),
        }
    }

    fn queue(options: QueueOptions) -> Queue {
        Queue::new("q".into(), options)
    }

    fn stored(q: &mut Queue, m: StoredMessage) {
        let id = m.id;
        assert!(matches!(q.admit(&m, 0), Ok(Admitted::Store { .. })));
        q.insert(m, 0);
        q.committed(id);
    }

    fn deliver(q: &mut Queue, tag: u64) -> Option<u64> {
        match q.next(tag, (1, 1), Instant::now(), 0)? {
            Next::Deliver(m) => Some(m.id),
            Next::DeadLetter(m, why) => panic!("{} dead-lettered: {why}", m.id),
        }
    }

    #[test]
    fn higher_priority_first_and_fifo_within() {
        let mut q = queue(QueueOptions::default());
        for (id, p) in [(1, 0), (2, 5), (3, 9), (4, 5), (5, 0)] {
            stored(&mut q, msg(id, p));
        }
        let order: Vec<u64> = (0..5).map(|t| deliver(&mut q, t).unwrap()).collect();
        assert_eq!(order, vec![3, 2, 4, 1, 5]);
        assert_eq!(deliver(&mut q, 9), None);
    }

    #[test]
    fn nothing_is_delivered_before_it_is_on_disk() {
        let mut q = queue(QueueOptions::default());
        q.insert(msg(1, 0), 0);
        assert_eq!(deliver(&mut q, 1), None);
        q.committed(1);
        assert_eq!(deliver(&mut q, 1), Some(1));
    }

    #[test]
    fn ack_parks_then_removal_forgets_and_stale_tags_are_refused() {
        let mut q = queue(QueueOptions::default());
        stored(&mut q, msg(1, 0));
        deliver(&mut q, 7);
        assert_eq!(q.ack(8, (1, 1)), None, "unknown tag");
        assert_eq!(q.ack(7, (2, 1)), None, "another session's delivery");
        assert_eq!(q.ack(7, (1, 1)), Some(1));
        assert_eq!(q.ack(7, (1, 1)), None, "acked twice");
        q.removed(1);
        assert_eq!((q.depth(), q.in_flight(), q.bytes()), (0, 0, 0));
    }

    #[test]
    fn visibility_timeout_returns_a_delivery() {
        let mut q = queue(QueueOptions { visibility_timeout_ms: 10, ..Default::default() });
        stored(&mut q, msg(1, 0));
        let start = Instant::now();
        assert!(matches!(q.next(1, (1, 1), start, 0), Some(Next::Deliver(_))));
        assert_eq!(q.tick(start, 0), 0);
        assert_eq!(q.tick(start + Duration::from_millis(11), 0), 1);
        let Some(Next::Deliver(again)) = q.next(2, (1, 1), start, 0) else { panic!() };
        assert_eq!((again.id, again.attempts), (1, 2));
        assert_eq!(q.ack(1, (1, 1)), None, "the first delivery's tag is stale");
    }

    #[test]
    fn max_attempts_and_ttl_dead_letter() {
        let mut q = queue(QueueOptions { max_attempts: 2, ..Default::default() });
        stored(&mut q, msg(1, 0));
        for tag in 0..2 {
            deliver(&mut q, tag);
            q.nack(tag, (1, 1), Duration::ZERO, Instant::now());
        }
        assert!(
            matches!(q.next(3, (1, 1), Instant::now(), 0), Some(Next::DeadLetter(m, "max_attempts")) if m.attempts == 2)
        );
        let mut expiring = msg(2, 0);
        expiring.expires_at_ms = 100;
        stored(&mut q, expiring);
        assert!(matches!(q.next(4, (1, 1), Instant::now(), 100), Some(Next::DeadLetter(_, "expired"))));
        assert_eq!(q.counters.dead_lettered, 2);
    }

    #[test]
    fn the_sweep_takes_expired_waiting_messages() {
        let mut q = queue(QueueOptions::default());
        let mut short = msg(1, 0);
        short.expires_at_ms = 50;
        stored(&mut q, short);
        stored(&mut q, msg(2, 0));
        assert!(q.take_expired(49).is_empty());
        let expired: Vec<u64> = q.take_expired(50).iter().map(|m| m.id).collect();
        assert_eq!(expired, vec![1]);
        assert_eq!(deliver(&mut q, 1), Some(2));
        // One that expires while out with a consumer is swept once it returns.
        let mut out = msg(3, 0);
        out.expires_at_ms = 60;
        stored(&mut q, out);
        assert_eq!(deliver(&mut q, 2), Some(3));
        assert!(q.take_expired(70).is_empty());
        q.nack(2, (1, 1), Duration::ZERO, Instant::now());
        assert_eq!(q.take_expired(70).iter().map(|m| m.id).collect::<Vec<_>>(), vec![3]);
    }

    #[test]
    fn delayed_nack_waits() {
        let mut q = queue(QueueOptions::default());
        stored(&mut q, msg(1, 0));
        let now = Instant::now();
        deliver(&mut q, 1);
        q.nack(1, (1, 1), Duration::from_millis(50), now);
        assert_eq!(deliver(&mut q, 2), None);
        q.tick(now + Duration::from_millis(51), 0);
        assert_eq!(deliver(&mut q, 3), Some(1));
    }

    #[test]
    fn full_queue_rejects_or_drops_the_oldest() {
        let mut q = queue(QueueOptions { max_messages: 2, ..Default::default() });
        stored(&mut q, msg(1, 0));
        stored(&mut q, msg(2, 0));
        assert!(matches!(q.admit(&msg(3, 0), 0), Err(PutRefused::Full { .. })));
        let mut q =
            queue(QueueOptions { max_messages: 2, overflow: Overflow::DropOldest, ..Default::default() });
        stored(&mut q, msg(1, 0));
        stored(&mut q, msg(2, 0));
        assert_eq!(q.admit(&msg(3, 0), 0), Ok(Admitted::Store { dropped: vec![1] }));
        q.removed(1);
        q.insert(msg(3, 0), 0);
        q.committed(3);
        assert_eq!(deliver(&mut q, 1), Some(2));
        assert_eq!(deliver(&mut q, 2), Some(3));
    }

    #[test]
    fn duplicates_within_the_window_are_stored_once() {
        let mut q = queue(QueueOptions { dedup_window_ms: 1000, ..Default::default() });
        let mut m = msg(1, 0);
        m.dedup_id = "order-42".into();
        stored(&mut q, m.clone());
        let mut retry = m.clone();
        retry.id = 2;
        assert_eq!(q.admit(&retry, 500), Ok(Admitted::Duplicate(1)));
        q.tick(Instant::now(), 2000);
        assert!(matches!(q.admit(&retry, 2000), Ok(Admitted::Store { .. })));
    }

    #[test]
    fn a_departed_consumer_gives_its_deliveries_back() {
        let mut q = queue(QueueOptions::default());
        stored(&mut q, msg(1, 0));
        deliver(&mut q, 1);
        assert_eq!(q.release_consumer((1, 1)), 1);
        assert_eq!(deliver(&mut q, 2), Some(1));
    }
}

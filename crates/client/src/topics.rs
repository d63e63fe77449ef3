//! Publish/subscribe from the client's side.
//!
//! A subscription's messages wait in a bounded queue until the application
//! takes them. The connection task never waits for the application: when
//! the queue is full the oldest message is dropped, and the next item the
//! application takes is [`Item::Lagged`] with how many it missed — counting
//! drops in this queue and those the daemon reported for its own backlog.
//! Drops made here are reported to the daemon, so `switchboard ls` shows
//! them too.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use switchboard_proto::{Caller, Frame, Headers, Publish, Topic, TopicError, TopicPattern};
use tokio::sync::Notify;

use crate::bus::DEFAULT_TIMEOUT;
use crate::connection::{lock, Link};
use crate::{Bus, CallError};

/// Messages a subscription holds for the application by default.
pub const DEFAULT_SUBSCRIPTION_CAPACITY: usize = 8192;

/// A message received on a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: Topic,
    pub payload: Bytes,
    pub headers: Headers,
    /// Who published it, as the daemon verified it.
    pub publisher: Caller,
    /// A retained value replayed when the subscription started.
    pub retained: bool,
}

/// What a subscription yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Message(Message),
    /// This many messages were dropped before the next one because the
    /// subscriber did not keep up.
    Lagged(u64),
}

/// Why a publish failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    InvalidTopic(#[from] TopicError),
    #[error("payload of {size} bytes does not fit the daemon's maximum frame of {max} bytes")]
    PayloadTooLarge { size: usize, max: u32 },
    #[error("no connection to the daemon within {0:?}")]
    Timeout(Duration),
    #[error("the bus handle was closed")]
    Closed,
}

/// Why a subscription failed.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    #[error(transparent)]
    InvalidPattern(#[from] TopicError),
    #[error("the daemon refused the subscription: {0}")]
    Refused(CallError),
}

/// Options of one publication.
#[derive(Debug, Clone, Default)]
pub struct PublishOptions {
    /// Keep as the topic's last value for future subscribers (publishing an
    /// empty payload with `retain` clears it).
    pub retain: bool,
    pub headers: Headers,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Item>,
    /// Dropped here and not yet shown to the application.
    dropped: u64,
    closed: bool,
    /// Why the daemon ended the subscription, if it did.
    ended: Option<CallError>,
    /// The application is parked waiting for an item: only then is a
    /// wake-up needed (a `Notify` per message would cost more than the
    /// message at millions per second).
    waiting: bool,
}

/// The receiving end the connection task fills.
pub(crate) struct Inbox {
    pub sid: u32,
    pub pattern: TopicPattern,
    queue: Mutex<Queue>,
    ready: Notify,
    capacity: usize,
}

impl Inbox {
    fn new(sid: u32, pattern: TopicPattern, capacity: usize) -> Self {
        Self {
            sid,
            pattern,
            queue: Mutex::new(Queue::default()),
            ready: Notify::new(),
            capacity: capacity.max(1),
        }
    }

    /// Adds an item, dropping the oldest message if full. Never waits.
    pub fn push(&self, item: Item) {
        let mut queue = lock(&self.queue);
        if queue.items.len() >= self.capacity {
            match queue.items.pop_front() {
                Some(Item::Lagged(n)) => queue.dropped += n,
                Some(Item::Message(_)) => queue.dropped += 1,
                None => {}
            }
        }
        queue.items.push_back(item);
        if std::mem::take(&mut queue.waiting) {
            drop(queue);
            self.ready.notify_one();
        }
    }

    pub fn close(&self) {
        self.end(None);
    }

    /// Closes the inbox; `why` is what [`Subscription::ended`] reports.
    pub fn end(&self, why: Option<CallError>) {
        let mut queue = lock(&self.queue);
        queue.closed = true;
        queue.ended = why;
        queue.waiting = false;
        drop(queue);
        self.ready.notify_one();
    }
}

/// A live subscription; unsubscribes when dropped.
pub struct Subscription {
    bus: Bus,
    inbox: Arc<Inbox>,
}

impl Subscription {
    /// The next message or lag notice; `None` once the bus is closed.
    pub async fn next(&mut self) -> Option<Item> {
        loop {
            if let Some(item) = self.try_next() {
                return Some(item);
            }
            let ready = self.inbox.ready.notified();
            {
                let mut queue = lock(&self.inbox.queue);
                if !queue.items.is_empty() || queue.dropped > 0 {
                    continue;
                }
                if queue.closed {
                    return None;
                }
                queue.waiting = true;
            }
            ready.await;
        }
    }

    /// The next item if one is waiting, without waiting.
    pub fn try_next(&mut self) -> Option<Item> {
        let mut queue = lock(&self.inbox.queue);
        if queue.dropped > 0 {
            let dropped = std::mem::take(&mut queue.dropped);
            drop(queue);
            self.report_drops(dropped);
            return Some(Item::Lagged(dropped));
        }
        queue.items.pop_front()
    }

    /// Why the daemon ended this subscription (after [`next`](Self::next)
    /// returned `None`): a `PermissionDenied` when a policy reload no longer
    /// allows it. `None` if it ended because the bus closed.
    pub fn ended(&self) -> Option<CallError> {
        lock(&self.inbox.queue).ended.clone()
    }

    /// The pattern this subscription matches.
    pub fn pattern(&self) -> &TopicPattern {
        &self.inbox.pattern
    }

    fn report_drops(&self, missed: u64) {
        if let Some(link) = self.bus.shared.link.borrow().as_ref() {
            let _ = link.outbox.push(&Frame::Lagged { sid: self.inbox.sid, missed });
        }
    }

    /// Ends the subscription and waits for the daemon to confirm.
    pub async fn unsubscribe(self) -> Result<(), CallError> {
        let sid = self.inbox.sid;
        lock(&self.bus.shared.subscriptions).remove(&sid);
        self.inbox.close();
        self.bus.control(|req| Frame::Unsubscribe { req, sid }).await.map(drop)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let sid = self.inbox.sid;
        if lock(&self.bus.shared.subscriptions).remove(&sid).is_some() {
            if let Some(link) = self.bus.shared.link.borrow().as_ref() {
                let req = self.bus.shared.next_id();
                let _ = link.outbox.push(&Frame::Unsubscribe { req, sid });
            }
        }
    }
}

/// Subscription ids, unique within this process.
static NEXT_SID: AtomicU32 = AtomicU32::new(1);

impl Bus {
    /// Publishes `payload` on `topic`. Waits only while this connection's
    /// send queue is congested; never for subscribers. Returns once queued:
    /// before exiting, [`Bus::flush`] makes sure it left.
    pub async fn publish(&self, topic: &str, payload: impl Into<Bytes>) -> Result<(), PublishError> {
        self.publish_with(Topic::parse(topic)?, payload, PublishOptions::default()).await
    }

    /// Publishes with options (retain, headers).
    pub async fn publish_with(
        &self,
        topic: Topic,
        payload: impl Into<Bytes>,
        options: PublishOptions,
    ) -> Result<(), PublishError> {
        let payload = payload.into();
        let headers = crate::trace::outgoing(options.headers);
        let frame = Frame::Publish(Publish { retain: options.retain, topic, headers, payload });
        let deadline = Instant::now() + DEFAULT_TIMEOUT;
        loop {
            let link = self.wait_link(deadline, DEFAULT_TIMEOUT).await.map_err(|err| match err {
                CallError::Closed => PublishError::Closed,
                _ => PublishError::Timeout(DEFAULT_TIMEOUT),
            })?;
            check_publish(&link, &frame)?;
            if link.outbox.is_congested() {
                link.outbox.wait_uncongested(DEFAULT_TIMEOUT).await;
            }
            if link.outbox.push(&frame).is_ok() {
                return Ok(());
            }
            tokio::task::yield_now().await;
        }
    }

    /// Subscribes to `pattern` (`*` = one token, `>` = the rest) with the
    /// default queue capacity.
    pub async fn subscribe(&self, pattern: &str) -> Result<Subscription, SubscribeError> {
        self.subscribe_with(TopicPattern::parse(pattern)?, DEFAULT_SUBSCRIPTION_CAPACITY).await
    }

    /// Subscribes with a queue of `capacity` messages. Retained values of
    /// matching topics arrive first.
    pub async fn subscribe_with(
        &self,
        pattern: TopicPattern,
        capacity: usize,
    ) -> Result<Subscription, SubscribeError> {
        let sid = NEXT_SID.fetch_add(1, Ordering::Relaxed);
        let inbox = Arc::new(Inbox::new(sid, pattern.clone(), capacity));
        lock(&self.shared.subscriptions).insert(sid, inbox.clone());
        let subscription = Subscription { bus: self.clone(), inbox };
        self.control(|req| Frame::Subscribe { req, sid, pattern: pattern.clone() })
            .await
            .map_err(SubscribeError::Refused)?;
        Ok(subscription)
    }
}

fn check_publish(link: &Link, frame: &Frame) -> Result<(), PublishError> {
    let Frame::Publish(p) = frame else {
        return Ok(());
    };
    let size = 1 + 1 + 1 + p.topic.as_bytes().len() + p.headers.wire_len() + p.payload.len();
    if size > link.max_frame as usize && !crate::blobs::passes_as_blob(&link.outbox, &p.payload) {
        return Err(PublishError::PayloadTooLarge { size: p.payload.len(), max: link.max_frame });
    }
    Ok(())
}

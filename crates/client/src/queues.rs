//! Durable queues from the client's side.
//!
//! `put` returns only when the daemon has the message on disk. A consumer
//! receives at most `prefetch` unacknowledged deliveries; each must be
//! `ack`ed (returns once the acknowledgement is on disk) or `nack`ed, or it
//! returns to the queue when its visibility timeout passes or the consumer
//! goes away.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use switchboard_proto::sys::{
    self, PeekedMessage, QueueDeclare, QueueInfo, QueueOptions, QueuePeek, QueueRef,
};
use switchboard_proto::{Frame, Headers, NameError, QueueName, QueuePut};
use tokio::sync::mpsc;

use crate::bus::DEFAULT_TIMEOUT;
use crate::connection::{lock, Link, Waiter};
use crate::{Bus, CallError};

/// Options of one put.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    /// 0–9, higher is delivered first (FIFO within a priority).
    pub priority: u8,
    /// After this long undelivered, the message goes to the dead-letter queue.
    pub ttl: Option<Duration>,
    /// Suppresses duplicates: a retried put with the same id within the
    /// queue's window is stored once (and answered with the first id).
    pub id: Option<String>,
    pub headers: Headers,
}

/// A named queue on the bus.
#[derive(Clone)]
pub struct Queue {
    bus: Bus,
    name: QueueName,
}

/// Consumer ids, unique within this process.
static NEXT_CONSUMER: AtomicU32 = AtomicU32::new(1);

/// Where the connection task sends a consumer's deliveries.
pub(crate) struct ConsumerSlot {
    pub queue: QueueName,
    pub prefetch: u32,
    pub deliveries: mpsc::UnboundedSender<switchboard_proto::QueueDelivery>,
}

impl Bus {
    /// A handle on the queue `name` (validated; nothing is sent yet).
    pub fn queue(&self, name: &str) -> Result<Queue, NameError> {
        Ok(Queue { bus: self.clone(), name: QueueName::parse(name)? })
    }

    /// Every queue with its depth, consumers and counters.
    pub async fn queues(&self) -> Result<Vec<QueueInfo>, CallError> {
        self.queue_admin(sys::QUEUES_LIST, Bytes::new()).await
    }

    async fn queue_admin<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        args: Bytes,
    ) -> Result<T, CallError> {
        let reply = self.call(&format!("{}.{method}", sys::QUEUES_SERVICE), args).await?;
        if reply.is_empty() {
            // Declare answers with nothing; decode `()` from nil.
            return sys::decode(&[0xc0]).map_err(|err| CallError::Decode(err.to_string()));
        }
        sys::decode(&reply).map_err(|err| CallError::Decode(err.to_string()))
    }
}

impl Queue {
    pub fn name(&self) -> &QueueName {
        &self.name
    }

    /// Creates the queue with `options`, or changes the options of an
    /// existing one. Returns once the declaration is on disk.
    pub async fn declare(&self, options: QueueOptions) -> Result<(), CallError> {
        self.declare_where(options, false).await
    }

    /// Creates the queue on the fleet's JetStream, replicated, or changes
    /// its options: every host of the fleet shares it (within two seconds
    /// for hosts other than this one). Needs a daemon that joined a fleet;
    /// options JetStream cannot take are refused by name.
    pub async fn declare_on_fleet(&self, options: QueueOptions) -> Result<(), CallError> {
        self.declare_where(options, true).await
    }

    async fn declare_where(&self, options: QueueOptions, fleet: bool) -> Result<(), CallError> {
        let args = QueueDeclare { queue: self.name.to_string(), options, fleet };
        self.bus.queue_admin(sys::QUEUES_DECLARE, Bytes::from(sys::encode(&args))).await
    }

    /// Stores `payload`; returns its message id once it is on disk.
    pub async fn put(&self, payload: impl Into<Bytes>) -> Result<u64, CallError> {
        self.put_with(payload, PutOptions::default()).await
    }

    /// Stores `payload` with options; returns its message id once it is on disk.
    pub async fn put_with(&self, payload: impl Into<Bytes>, options: PutOptions) -> Result<u64, CallError> {
        let payload = payload.into();
        if options.priority > 9 {
            return Err(CallError::BadRequest(format!("priority {} is not 0 to 9", options.priority)));
        }
        let ttl_ms = options.ttl.map_or(0, |ttl| u32::try_from(ttl.as_millis()).unwrap_or(u32::MAX).max(1));
        let dedup_id = options.id.unwrap_or_default();
        let headers = crate::trace::outgoing(options.headers);
        let deadline = Instant::now() + DEFAULT_TIMEOUT;
        let check = |link: &Link| {
            let size = switchboard_proto::sizes::put_len(&self.name, &dedup_id, &headers, payload.len());
            crate::calls::fits(link, size, &payload)
        };
        let frame = |req, _: &Link| {
            Frame::QueuePut(QueuePut {
                req,
                priority: options.priority,
                ttl_ms,
                queue: self.name.clone(),
                dedup_id: dedup_id.clone(),
                headers: headers.clone(),
                payload: payload.clone(),
            })
        };
        let reply = self.bus.round_trip(deadline, DEFAULT_TIMEOUT, true, check, frame, Waiter::Reply).await?;
        let id: [u8; 8] = reply[..]
            .try_into()
            .map_err(|_| CallError::Decode(format!("put reply of {} bytes", reply.len())))?;
        Ok(u64::from_le_bytes(id))
    }

    /// Stores many messages, pipelined so they share group commits. Returns
    /// each put's outcome in order.
    pub async fn put_batch(&self, payloads: impl IntoIterator<Item = Bytes>) -> Vec<Result<u64, CallError>> {
        let mut tasks = tokio::task::JoinSet::new();
        let mut count = 0;
        // Each put runs on its own task: give it the served request's context.
        let inherited = crate::context::current();
        for (index, payload) in payloads.into_iter().enumerate() {
            let queue = self.clone();
            tasks.spawn(crate::context::scope(inherited, async move { (index, queue.put(payload).await) }));
            count += 1;
        }
        let mut results: Vec<Option<Result<u64, CallError>>> = (0..count).map(|_| None).collect();
        while let Some(joined) = tasks.join_next().await {
            if let Ok((index, result)) = joined {
                results[index] = Some(result);
            }
        }
        // A put whose task did not finish was not confirmed.
        results.into_iter().map(|r| r.unwrap_or(Err(CallError::ConnectionLost))).collect()
    }

    /// Starts consuming with at most `prefetch` unacknowledged deliveries.
    pub async fn consume(&self, prefetch: u32) -> Result<Consumer, CallError> {
        let id = NEXT_CONSUMER.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        let prefetch = prefetch.max(1);
        let slot = Arc::new(ConsumerSlot { queue: self.name.clone(), prefetch, deliveries: tx });
        lock(&self.bus.shared.consumers).insert(id, slot);
        let consumer = Consumer { bus: self.bus.clone(), id, deliveries: rx };
        let queue = self.name.clone();
        self.bus
            .control(|req| Frame::QueueConsume { req, consumer: id, prefetch, queue: queue.clone() })
            .await?;
        Ok(consumer)
    }

    /// Up to `count` waiting messages, in delivery order, without taking them.
    pub async fn peek(&self, count: u32) -> Result<Vec<PeekedMessage>, CallError> {
        let args = QueuePeek { queue: self.name.to_string(), count };
        self.bus.queue_admin(sys::QUEUES_PEEK, Bytes::from(sys::encode(&args))).await
    }

    /// Deletes the queue, which must be empty and have no consumers; returns
    /// once that is on disk. A later put or consume creates it anew (where
    /// the daemon allows auto-creation).
    pub async fn delete(&self) -> Result<(), CallError> {
        let args = QueueRef { queue: self.name.to_string() };
        self.bus.queue_admin::<()>(sys::QUEUES_DELETE, Bytes::from(sys::encode(&args))).await
    }

    /// Removes every message; returns how many, once that is on disk.
    pub async fn purge(&self) -> Result<u64, CallError> {
        let args = QueueRef { queue: self.name.to_string() };
        self.bus.queue_admin(sys::QUEUES_PURGE, Bytes::from(sys::encode(&args))).await
    }
}

/// Receives deliveries; stops consuming when dropped (its unacknowledged
/// deliveries return to the queue).
pub struct Consumer {
    bus: Bus,
    id: u32,
    deliveries: mpsc::UnboundedReceiver<switchboard_proto::QueueDelivery>,
}

impl Consumer {
    /// The next delivery; `None` once the bus is closed.
    pub async fn next(&mut self) -> Option<Delivery> {
        let d = self.deliveries.recv().await?;
        Some(self.delivery(d))
    }

    fn delivery(&self, d: switchboard_proto::QueueDelivery) -> Delivery {
        Delivery {
            bus: self.bus.clone(),
            tag: d.tag,
            id: d.id,
            attempt: d.attempt,
            priority: d.priority,
            headers: d.headers,
            payload: d.payload,
        }
    }

    /// Asks for no more deliveries; those already received stay with this
    /// consumer, to ack or nack, until it is dropped. Deliveries sent
    /// before the stop took effect are still returned by [`Consumer::next`]
    /// (with `try_next`, at once: they have all arrived when this returns).
    pub async fn stop(&self) -> Result<(), CallError> {
        let consumer = self.id;
        self.bus.control(|req| Frame::QueueStop { req, consumer }).await.map(drop)
    }

    /// The next delivery if one has arrived, without waiting.
    pub fn try_next(&mut self) -> Option<Delivery> {
        let d = self.deliveries.try_recv().ok()?;
        Some(self.delivery(d))
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        lock(&self.bus.shared.consumers).remove(&self.id);
        if let Some(link) = self.bus.shared.link.borrow().as_ref() {
            let req = self.bus.shared.next_id();
            let _ = link.outbox.push(&Frame::QueueCancel { req, consumer: self.id });
        }
    }
}

/// One delivered message; `ack` or `nack` it.
pub struct Delivery {
    bus: Bus,
    tag: u64,
    /// The message id (stable across redeliveries).
    pub id: u64,
    /// 1 on the first delivery.
    pub attempt: u32,
    pub priority: u8,
    pub headers: Headers,
    pub payload: Bytes,
}

impl Delivery {
    /// Done: the message is removed. Returns once that is on disk; a
    /// `StaleDelivery` error means it had already returned to the queue.
    pub async fn ack(self) -> Result<(), CallError> {
        let tag = self.tag;
        self.bus.control(|req| Frame::QueueAck { req, tag }).await.map(drop)
    }

    /// Not done: the message returns to the queue after `delay`.
    pub async fn nack(self, delay: Duration) -> Result<(), CallError> {
        let tag = self.tag;
        let delay_ms = u32::try_from(delay.as_millis()).unwrap_or(u32::MAX);
        self.bus.control(|req| Frame::QueueNack { req, tag, delay_ms }).await.map(drop)
    }
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("id", &self.id)
            .field("attempt", &self.attempt)
            .field("priority", &self.priority)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

//! Queue messages taken over HTTP (`GET /v1/queues/{name}/messages`), held
//! by the gateway under an unguessable receipt until the principal that
//! took them acks or nacks it, or the lease passes.
//!
//! A pull is a consumer of its own: it asks for `count` messages, waits up
//! to `wait` for the first, then stops the consumer (`Consumer::stop`), so
//! it never receives more than it returned and its held messages stay
//! invisible to others. The consumer lives while any of its messages is
//! held; when the last is settled or its lease passes it is dropped, and
//! what was never acked returns to the queue. The daemon's visibility
//! timeout still applies: an ack after it is `stale_delivery`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::json;
use switchboard::{Consumer, Delivery};
use switchboard_daemon::host::new_secret;
use switchboard_proto::ErrorCode;

use crate::ops::{delivery_json, Caller, Failure, Outcome};

/// The most messages the gateway holds for HTTP clients at once.
pub const MAX_HELD: usize = 65_536;
/// The most messages one pull returns.
pub const MAX_COUNT: u32 = 1000;
/// How long a pull waits for a first message at most.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// How long taken messages are held when the pull does not say.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);

/// Done with a message: removed, or back to the queue after a delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    Ack,
    Nack(Duration),
}

impl Settle {
    /// Acks or nacks `delivery`: `{"acked": ID}` or `{"nacked": ID}`.
    pub async fn apply(self, delivery: Delivery) -> Outcome {
        let id = delivery.id;
        let (settled, word) = match self {
            Settle::Ack => (delivery.ack().await, "acked"),
            Settle::Nack(delay) => (delivery.nack(delay).await, "nacked"),
        };
        settled.map_err(|e| Failure::call(&e))?;
        Ok(json!({ word: id }))
    }
}

struct Held {
    owner: String,
    queue: String,
    delivery: Delivery,
    until: Instant,
    /// Keeps the pull's consumer (and so this delivery) alive.
    _consumer: Arc<Mutex<Consumer>>,
}

#[derive(Default)]
pub struct Leases {
    held: Mutex<HashMap<String, Held>>,
}

impl Leases {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Held>> {
        self.held.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Lets go of messages whose lease passed: they return to their queue.
    fn sweep(&self) {
        let now = Instant::now();
        self.lock().retain(|_, held| held.until > now);
    }

    /// Takes up to `count` messages from `queue` as `caller`.
    pub async fn pull(
        &self,
        caller: &Caller,
        queue: &str,
        count: u32,
        wait: Duration,
        lease: Duration,
    ) -> Outcome {
        if count == 0 || count > MAX_COUNT {
            return Err(Failure::bad(format!("count is 1 to {MAX_COUNT}")));
        }
        self.sweep();
        if self.lock().len() + count as usize > MAX_HELD {
            let message =
                format!("the gateway already holds {MAX_HELD} messages for HTTP clients (the limit)");
            return Err(Failure::code(ErrorCode::Overloaded, message));
        }
        let named = caller.bus.queue(queue).map_err(|err| Failure::bad(format!("queue {queue:?}: {err}")))?;
        let mut consumer = named.consume(count).await.map_err(|e| Failure::call(&e))?;
        let mut taken = Vec::new();
        if let Ok(Some(first)) = tokio::time::timeout(wait.min(MAX_WAIT), consumer.next()).await {
            taken.push(first);
        }
        // After the stop's answer every delivery sent to it has arrived.
        consumer.stop().await.map_err(|e| Failure::call(&e))?;
        while let Some(more) = consumer.try_next() {
            taken.push(more);
        }
        let consumer = Arc::new(Mutex::new(consumer));
        let until = Instant::now() + lease;
        let mut messages = Vec::with_capacity(taken.len());
        let mut held = self.lock();
        for delivery in taken {
            let receipt =
                new_secret().map_err(|err| Failure::code(ErrorCode::StorageFailed, err.to_string()))?;
            messages.push(delivery_json(&receipt, &delivery));
            let owner = caller.principal.name.to_string();
            let entry = Held { owner, queue: queue.to_owned(), delivery, until, _consumer: consumer.clone() };
            held.insert(receipt, entry);
        }
        Ok(json!({ "queue": queue, "messages": messages }))
    }

    /// Acks or nacks the message held under `receipt`, which only the
    /// principal that took it may do.
    pub async fn settle(&self, caller: &Caller, queue: &str, receipt: &str, how: Settle) -> Outcome {
        let held = {
            let mut held = self.lock();
            let ours = held
                .get(receipt)
                .is_some_and(|h| h.owner == caller.principal.name.as_str() && h.queue == queue);
            if ours {
                held.remove(receipt)
            } else {
                None
            }
        };
        let Some(held) = held else {
            let message = format!(
                "queue {queue} has no message held under receipt {receipt:?} for {} (settled already, or its lease passed)",
                caller.principal.name
            );
            return Err(Failure::code(ErrorCode::StaleDelivery, message));
        };
        how.apply(held.delivery).await
    }
}

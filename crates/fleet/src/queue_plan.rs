//! What a fleet queue is on JetStream: its stream's and its durable
//! consumer's settings, made from the config's defaults (`[fleet] queues`)
//! or from the options of a `queue declare --fleet`, and read back into the
//! queue options `queue ls` shows. Pure: no NATS here.
//!
//! | queue option          | JetStream                               |
//! |-----------------------|-----------------------------------------|
//! | `max_messages`        | stream `max_messages`                   |
//! | `max_bytes`           | stream `max_bytes`                      |
//! | `overflow` reject     | stream discard `new`                    |
//! | `overflow` drop-oldest| stream discard `old`                    |
//! | `max_attempts`        | consumer `max_deliver`, then `NAME.dlq` |
//! | `visibility_timeout`  | consumer `ack_wait`                     |
//! | `dedup_window`        | stream `duplicate_window`               |
//! | `default_ttl`         | stream `max_age` (every message)        |

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy};
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy};
use switchboard_proto::sys::{Overflow, QueueOptions};

use crate::Joining;

/// The durable consumer every host of the fleet pulls from.
pub const CONSUMER: &str = "switchboard";
/// The dedup window of a queue from the config.
const CONFIG_DEDUP_WINDOW: Duration = Duration::from_secs(120);
/// Deliveries JetStream keeps outstanding per queue.
const MAX_ACK_PENDING: i64 = 100_000;

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub replicas: usize,
    /// -1: no limit.
    pub max_messages: i64,
    /// -1: no limit.
    pub max_bytes: i64,
    pub discard: DiscardPolicy,
    pub duplicate_window: Duration,
    /// Zero: forever.
    pub max_age: Duration,
    pub ack_wait: Duration,
    /// Deliveries before a message goes to `NAME.dlq`; 0: no limit.
    pub max_attempts: u32,
}

impl Plan {
    /// A queue `[fleet] queues` names.
    pub fn of_config(joining: &Joining) -> Self {
        Self {
            replicas: joining.queue_replicas,
            max_messages: -1,
            max_bytes: -1,
            discard: DiscardPolicy::Old,
            duplicate_window: CONFIG_DEDUP_WINDOW,
            max_age: Duration::ZERO,
            ack_wait: joining.queue_ack_wait,
            max_attempts: joining.queue_max_attempts,
        }
    }

    /// A queue declared with `options`; `Err` says which option JetStream
    /// cannot take.
    pub fn of_options(options: &QueueOptions, replicas: usize) -> Result<Self, String> {
        if options.visibility_timeout_ms == 0 {
            return Err("a fleet queue needs a visibility timeout above 0 (JetStream's ack wait)".into());
        }
        let max_age = Duration::from_millis(options.default_ttl_ms);
        let duplicate_window = Duration::from_millis(options.dedup_window_ms);
        if !max_age.is_zero() && duplicate_window > max_age {
            return Err(format!(
                "a fleet queue's dedup window ({duplicate_window:?}) cannot outlast its TTL ({max_age:?}) on JetStream"
            ));
        }
        let limit = |value: u64| i64::try_from(value).unwrap_or(-1);
        Ok(Self {
            replicas,
            max_messages: limit(options.max_messages),
            max_bytes: limit(options.max_bytes),
            discard: match options.overflow {
                Overflow::Reject => DiscardPolicy::New,
                Overflow::DropOldest => DiscardPolicy::Old,
            },
            duplicate_window,
            max_age,
            ack_wait: Duration::from_millis(options.visibility_timeout_ms),
            max_attempts: options.max_attempts,
        })
    }

    /// A dead-letter queue's plan: like its queue's, keeping what it gets.
    pub fn for_dead_letters(&self) -> Self {
        Self { max_attempts: 0, ..self.clone() }
    }

    pub fn stream(&self, name: &str, subject: &str) -> stream::Config {
        stream::Config {
            name: name.to_owned(),
            subjects: vec![subject.to_owned()],
            retention: RetentionPolicy::WorkQueue,
            num_replicas: self.replicas,
            max_messages: self.max_messages,
            max_bytes: self.max_bytes,
            discard: self.discard,
            duplicate_window: self.duplicate_window,
            max_age: self.max_age,
            ..Default::default()
        }
    }

    pub fn consumer(&self) -> pull::Config {
        pull::Config {
            durable_name: Some(CONSUMER.into()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            max_ack_pending: MAX_ACK_PENDING,
            max_deliver: if self.max_attempts > 0 { i64::from(self.max_attempts) } else { -1 },
            ..Default::default()
        }
    }
}

/// The queue options a stream and its consumer amount to.
pub fn options_of(stream: &stream::Config, ack_wait: Duration, max_deliver: i64) -> QueueOptions {
    let limit = |value: i64| u64::try_from(value).unwrap_or(u64::MAX);
    let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    QueueOptions {
        max_messages: limit(stream.max_messages),
        max_bytes: limit(stream.max_bytes),
        overflow: match stream.discard {
            DiscardPolicy::New => Overflow::Reject,
            DiscardPolicy::Old => Overflow::DropOldest,
        },
        max_attempts: u32::try_from(max_deliver).unwrap_or(0),
        visibility_timeout_ms: millis(ack_wait),
        dedup_window_ms: millis(stream.duplicate_window),
        default_ttl_ms: millis(stream.max_age),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_options_survive_the_trip_through_jetstream_settings() {
        let options = QueueOptions {
            max_messages: 10,
            max_bytes: 1 << 20,
            overflow: Overflow::DropOldest,
            max_attempts: 3,
            visibility_timeout_ms: 5_000,
            dedup_window_ms: 60_000,
            default_ttl_ms: 3_600_000,
        };
        let plan = Plan::of_options(&options, 3).unwrap();
        let stream = plan.stream("SBQ_jobs", "sbq.jobs");
        let consumer = plan.consumer();
        assert_eq!((stream.num_replicas, stream.discard), (3, DiscardPolicy::Old));
        assert_eq!(options_of(&stream, consumer.ack_wait, consumer.max_deliver), options);
        assert_eq!(plan.for_dead_letters().consumer().max_deliver, -1);

        let defaults = Plan::of_options(&QueueOptions::default(), 1).unwrap();
        assert_eq!(defaults.discard, DiscardPolicy::New);
        assert_eq!(defaults.stream("S", "s").max_age, Duration::ZERO);
    }

    #[test]
    fn what_jetstream_cannot_take_is_refused_by_name() {
        let no_wait = QueueOptions { visibility_timeout_ms: 0, ..QueueOptions::default() };
        assert!(Plan::of_options(&no_wait, 3).unwrap_err().contains("visibility timeout"));
        let short_ttl = QueueOptions { default_ttl_ms: 1_000, ..QueueOptions::default() };
        assert!(Plan::of_options(&short_ttl, 3).unwrap_err().contains("dedup window"));
        let huge = QueueOptions { max_messages: u64::MAX, ..QueueOptions::default() };
        assert_eq!(Plan::of_options(&huge, 3).unwrap().max_messages, -1);
    }
}

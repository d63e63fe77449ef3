//! The queue state the router keeps: every queue, its consumers, the
//! delivery tags handed out, counters for rates, and the writer that makes
//! changes durable. Plain data and bookkeeping; the router's queue
//! operations (`super`) decide what to send.

use std::collections::{HashMap, VecDeque};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use switchboard_proto::sys::{self, QueueOptions};
use switchboard_proto::{ErrorCode, SessionId};

use crate::queues::queue::{ConsumerKey, Queue};
use crate::queues::record::Record;
use crate::queues::store::Recovered;
use crate::queues::writer::Writer;

/// What to do when a commit completes.
pub enum Done {
    /// A put; `duplicate` holds the producer id when it repeats an earlier
    /// put stored as `id`, confirmed only if that one reached the disk.
    Put {
        session: SessionId,
        req: u32,
        queue: String,
        id: u64,
        dropped: Vec<u64>,
        duplicate: Option<String>,
    },
    Ack {
        session: SessionId,
        req: u32,
        queue: String,
        id: u64,
    },
    DeadLettered {
        from: String,
        id: u64,
        to: String,
        new_id: u64,
    },
    Declared {
        session: SessionId,
        req: u32,
    },
    Purged {
        session: SessionId,
        req: u32,
        queue: String,
        ids: Vec<u64>,
    },
    Nothing,
}

pub(super) struct Consumer {
    pub(super) queue: String,
    pub(super) prefetch: u32,
}

/// Snapshots of a queue's counters, for rates.
#[derive(Default)]
pub(super) struct History(pub(super) VecDeque<(Instant, u64, u64)>);

/// All queue state the router keeps.
pub struct QueueState {
    pub(super) queues: HashMap<String, Queue>,
    pub(super) consumers: HashMap<ConsumerKey, Consumer>,
    /// Delivery tag → queue it came from.
    pub(super) tags: HashMap<u64, String>,
    pub(super) history: HashMap<String, History>,
    pub(super) next_id: u64,
    pub(super) next_tag: u64,
    pub(super) writer: Writer<Done>,
    pub(super) auto_create: bool,
    pub(super) max_queues: usize,
    pub(super) last_sweep: Instant,
    /// Where each queue's next round-robin turn starts.
    pub(super) cursors: HashMap<String, usize>,
    /// Queues a hosted app keeps (the fleet's), by name.
    pub(crate) remote: super::remote::RemoteQueues,
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

pub(super) fn options_bytes(options: &QueueOptions) -> Bytes {
    Bytes::from(sys::encode(options))
}

/// The records that remove a message: its Ack, and a Seen record if its
/// producer id must keep suppressing duplicates after it is gone.
pub(super) fn removal(queue: &Queue, id: u64) -> Vec<Record> {
    let mut records = vec![Record::Ack { queue: queue.name.clone(), id }];
    if let Some((dedup_id, until_ms)) = queue.dedup_of(id).filter(|(_, until)| *until > now_ms()) {
        records.push(Record::Seen { queue: queue.name.clone(), dedup_id, id, until_ms });
    }
    records
}

pub(super) fn dead_letter_options() -> QueueOptions {
    // A dead-letter queue keeps what it gets: nothing expires or moves on.
    QueueOptions { max_attempts: 0, default_ttl_ms: 0, ..QueueOptions::default() }
}

impl QueueState {
    /// Rebuilds the queues from what the store recovered.
    pub fn new(recovered: Recovered, writer: Writer<Done>, auto_create: bool, max_queues: usize) -> Self {
        let mut queues = HashMap::new();
        for (name, options) in recovered.declares {
            let options: QueueOptions = sys::decode(&options).unwrap_or_default();
            queues.insert(name.clone(), Queue::new(name, options));
        }
        let now = now_ms();
        for message in recovered.messages {
            let queue = queues
                .entry(message.queue.clone())
                .or_insert_with(|| Queue::new(message.queue.clone(), QueueOptions::default()));
            queue.restore(message, now);
        }
        for (queue, dedup_id, id, until_ms) in recovered.seen {
            if until_ms > now {
                if let Some(queue) = queues.get_mut(&queue) {
                    queue.remember(dedup_id, id, until_ms);
                }
            }
        }
        Self {
            queues,
            consumers: HashMap::new(),
            tags: HashMap::new(),
            history: HashMap::new(),
            next_id: recovered.next_id.max(1),
            next_tag: 1,
            writer,
            auto_create,
            max_queues,
            remote: super::remote::RemoteQueues::default(),
            last_sweep: Instant::now(),
            cursors: HashMap::new(),
        }
    }

    /// Every consumer and the queue it consumes from.
    pub(in crate::router) fn consumer_queues(&self) -> Vec<(ConsumerKey, String)> {
        self.consumers.iter().map(|(key, c)| (*key, c.queue.clone())).collect()
    }

    /// Messages held by all queues (for `$sys.daemon.info` and tests).
    pub fn message_count(&self) -> u64 {
        self.queues.values().map(|q| q.depth() + q.in_flight()).sum()
    }

    pub(super) fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Whether `name` counts against `--max-queues`: every queue but the
    /// dead-letter queue of a queue that exists (a `.dlq` name alone is not
    /// enough, or any client could create them without end).
    pub(super) fn counts_toward_limit(&self, name: &str) -> bool {
        name.strip_suffix(".dlq").is_none_or(|source| !self.queues.contains_key(source))
    }

    /// Whether one more queue that counts toward the limit may be created.
    pub(super) fn room_for_one_more(&self) -> Result<(), (ErrorCode, String)> {
        let counted = self.queues.keys().filter(|q| self.counts_toward_limit(q)).count();
        if counted < self.max_queues {
            return Ok(());
        }
        let message = format!(
            "the daemon holds {counted} queues, its maximum (--max-queues); \
             delete unused ones with `switchboard queue delete`"
        );
        Err((ErrorCode::Overloaded, message))
    }

    /// The queue, created (with a Declare record appended to `records`)
    /// when allowed: by first use where auto-creation is on and the limit
    /// leaves room, or as the dead-letter queue of a queue that exists.
    pub(super) fn ensure(
        &mut self,
        name: &str,
        records: &mut Vec<Record>,
    ) -> Result<(), (ErrorCode, String)> {
        if self.queues.contains_key(name) {
            return Ok(());
        }
        let options = if !self.counts_toward_limit(name) {
            dead_letter_options()
        } else if self.auto_create {
            self.room_for_one_more()?;
            QueueOptions::default()
        } else {
            let message =
                format!("no queue named {name} (declare it first; first use may not create queues)");
            return Err((ErrorCode::NoSuchQueue, message));
        };
        records.push(Record::Declare { queue: name.to_owned(), options: options_bytes(&options) });
        self.queues.insert(name.to_owned(), Queue::new(name.to_owned(), options));
        Ok(())
    }
}

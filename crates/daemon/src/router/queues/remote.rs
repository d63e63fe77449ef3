//! Queues kept elsewhere — by a hosted app, today the fleet's replicated
//! queues on JetStream. The router still checks the policy and answers
//! what it knows (a consumer id in use); everything about the messages
//! goes to the app over a channel, and the app answers the session itself
//! (`RouterHandle::deliver`). The tags of its deliveries have the top bit
//! set, so an ack finds its way back without the router holding them.
//! The router never waits for the app.

use std::collections::HashSet;

use bytes::Bytes;
use switchboard_proto::sys::{QueueInfo, QueueOptions};
use switchboard_proto::{Headers, SessionId};
use tokio::sync::mpsc;

use crate::queues::queue::ConsumerKey;

/// The bit every remote delivery's tag has.
pub const REMOTE_TAG: u64 = 1 << 63;

/// What the router hands the app that keeps remote queues.
#[derive(Debug)]
pub enum RemoteQueueOp {
    Put {
        session: SessionId,
        req: u32,
        queue: String,
        priority: u8,
        ttl_ms: u32,
        dedup_id: String,
        headers: Headers,
        payload: Bytes,
    },
    Consume {
        session: SessionId,
        consumer: u32,
        queue: String,
        prefetch: u32,
    },
    /// No more deliveries; it keeps what it holds.
    Stop {
        session: SessionId,
        consumer: u32,
    },
    /// Gone: what it held returns to the queue.
    Cancel {
        session: SessionId,
        consumer: u32,
    },
    Ack {
        session: SessionId,
        req: u32,
        tag: u64,
    },
    Nack {
        session: SessionId,
        req: u32,
        tag: u64,
        delay_ms: u32,
    },
    SessionClosed {
        session: SessionId,
    },
    /// A `$sys.queues` call the app answers (after the policy).
    Admin {
        session: SessionId,
        req: u32,
        admin: RemoteAdmin,
    },
}

/// The `$sys.queues` calls that concern remote queues.
#[derive(Debug)]
pub enum RemoteAdmin {
    /// `list`: the app adds its queues to this host's and answers.
    List {
        local: Vec<QueueInfo>,
    },
    /// `declare` with `fleet`: the app keeps the queue from now on.
    Declare {
        queue: String,
        options: QueueOptions,
    },
    Peek {
        queue: String,
        count: u32,
    },
    Purge {
        queue: String,
    },
    Delete {
        queue: String,
    },
}

/// The remote queues' names, their consumers here, and the app's channel.
#[derive(Debug, Default)]
pub struct RemoteQueues {
    names: HashSet<String>,
    consumers: HashSet<ConsumerKey>,
    app: Option<mpsc::UnboundedSender<RemoteQueueOp>>,
}

impl RemoteQueues {
    /// The app takes `names` (replacing any it took before).
    pub fn attach(&mut self, names: HashSet<String>, app: mpsc::UnboundedSender<RemoteQueueOp>) {
        self.names = names;
        self.app = Some(app);
    }

    pub fn detach(&mut self) {
        self.names.clear();
        self.consumers.clear();
        self.app = None;
    }

    /// Whether an app keeps remote queues (it may take more).
    pub fn attached(&self) -> bool {
        self.app.is_some()
    }

    /// The app keeps `queue` from now on (a `declare` it confirmed, or one
    /// it learned the fleet keeps).
    pub fn add(&mut self, queue: String) {
        self.names.insert(queue);
    }

    /// The app no longer keeps `queue` (deleted on the fleet).
    pub fn remove(&mut self, queue: &str) {
        self.names.remove(queue);
    }

    pub fn keeps(&self, queue: &str) -> bool {
        self.app.is_some() && self.names.contains(queue)
    }

    pub fn has_consumer(&self, key: ConsumerKey) -> bool {
        self.consumers.contains(&key)
    }

    pub fn add_consumer(&mut self, key: ConsumerKey) {
        self.consumers.insert(key);
    }

    pub fn remove_consumer(&mut self, key: ConsumerKey) -> bool {
        self.consumers.remove(&key)
    }

    /// Forgets a session's consumers; whether it had any.
    pub fn session_closed(&mut self, session: SessionId) -> bool {
        let before = self.consumers.len();
        self.consumers.retain(|key| key.0 != session);
        before != self.consumers.len()
    }

    /// Hands `op` to the app; false when no app keeps remote queues.
    pub fn send(&self, op: RemoteQueueOp) -> bool {
        self.app.as_ref().is_some_and(|app| app.send(op).is_ok())
    }
}

//! The frames of the protocol.
//!
//! Every frame is `len:u32le kind:u8 body`, where `len` counts the bytes after
//! itself. `docs/protocol.md` is the normative description of each body;
//! `encode.rs` and `codec.rs` implement it.

use bytes::Bytes;

pub use crate::caller::{Caller, PrincipalName, MAX_PRINCIPAL_NAME};
use crate::{
    ErrorCode, Headers, InstanceId, MethodName, QueueName, ServiceName, SessionId, Topic, TopicPattern,
};

/// Frame kind bytes. Stable wire values.
pub(crate) mod kind {
    pub const HELLO: u8 = 1;
    pub const WELCOME: u8 = 2;
    pub const REGISTER: u8 = 3;
    pub const REGISTERED: u8 = 4;
    pub const UNREGISTER: u8 = 5;
    pub const CALL: u8 = 6;
    pub const NOTIFY: u8 = 7;
    pub const REQUEST: u8 = 8;
    pub const REPLY: u8 = 9;
    pub const ERROR: u8 = 10;
    pub const WATCH: u8 = 11;
    pub const EVENT: u8 = 12;
    pub const GOODBYE: u8 = 13;
    pub const BROADCAST: u8 = 14;
    pub const BROADCAST_START: u8 = 15;
    pub const BROADCAST_RESULT: u8 = 16;
    pub const SUBSCRIBE: u8 = 17;
    pub const UNSUBSCRIBE: u8 = 18;
    pub const PUBLISH: u8 = 19;
    pub const MESSAGE: u8 = 20;
    pub const LAGGED: u8 = 21;
    pub const QUEUE_PUT: u8 = 22;
    pub const QUEUE_CONSUME: u8 = 23;
    pub const QUEUE_CANCEL: u8 = 24;
    pub const QUEUE_DELIVERY: u8 = 25;
    pub const QUEUE_ACK: u8 = 26;
    pub const QUEUE_NACK: u8 = 27;
    pub const REVOKE: u8 = 28;
    pub const ENDED: u8 = 29;
    pub const HOPS: u8 = 30;
    pub const QUEUE_STOP: u8 = 31;

    /// The name of a kind byte, for errors.
    pub fn name(kind: u8) -> Option<&'static str> {
        Some(match kind {
            HELLO => "Hello",
            WELCOME => "Welcome",
            REGISTER => "Register",
            REGISTERED => "Registered",
            UNREGISTER => "Unregister",
            CALL => "Call",
            NOTIFY => "Notify",
            REQUEST => "Request",
            REPLY => "Reply",
            ERROR => "Error",
            WATCH => "Watch",
            EVENT => "Event",
            GOODBYE => "Goodbye",
            BROADCAST => "Broadcast",
            BROADCAST_START => "BroadcastStart",
            BROADCAST_RESULT => "BroadcastResult",
            SUBSCRIBE => "Subscribe",
            UNSUBSCRIBE => "Unsubscribe",
            PUBLISH => "Publish",
            MESSAGE => "Message",
            LAGGED => "Lagged",
            QUEUE_PUT => "QueuePut",
            QUEUE_CONSUME => "QueueConsume",
            QUEUE_CANCEL => "QueueCancel",
            QUEUE_DELIVERY => "QueueDelivery",
            QUEUE_ACK => "QueueAck",
            QUEUE_NACK => "QueueNack",
            REVOKE => "Revoke",
            ENDED => "Ended",
            HOPS => "Hops",
            QUEUE_STOP => "QueueStop",
            _ => return None,
        })
    }
}

/// Client → daemon, first frame of every connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub version: u16,
    /// Feature bits the client understands ([`crate::FEATURE_BLOBS`]).
    pub features: u32,
    /// Free-form client name shown in `switchboard ls` (e.g. `billing-worker`).
    pub client_name: String,
    /// How the client proves who it is beyond its OS identity: empty,
    /// `secret:HEX` (an instance the supervisor started) or `token:VALUE`
    /// (a bearer token from the daemon's config). Optional on the wire.
    pub credential: String,
}

/// Daemon → client, the answer to [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    pub version: u16,
    pub features: u32,
    pub session: SessionId,
    /// Largest frame the daemon accepts (length prefix excluded).
    pub max_frame: u32,
    /// Most calls this connection may have awaiting a reply at once.
    pub max_inflight: u32,
}

/// One method of a registration: its name, and a human-readable signature
/// (`charge(account: String, cents: u64) -> Receipt`; may be empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodSpec {
    pub name: MethodName,
    pub signature: String,
}

/// Client → daemon: call `service.method` and expect a reply or an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// Chosen by the caller, non-zero, unique among its requests in flight.
    pub id: u32,
    /// Relative deadline in milliseconds.
    pub timeout_ms: u32,
    /// A chosen instance, or 0 for "any" (load-balanced).
    pub instance: InstanceId,
    pub service: ServiceName,
    pub method: MethodName,
    pub headers: Headers,
    pub payload: Bytes,
}

/// Client → daemon: one-way message to `service.method`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    /// To every instance (one-way broadcast) instead of one.
    pub all: bool,
    pub instance: InstanceId,
    pub service: ServiceName,
    pub method: MethodName,
    pub headers: Headers,
    pub payload: Bytes,
}

/// Daemon → callee: a call (id ≠ 0) or a notification (id = 0) for one of the
/// instances this connection registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Chosen by the daemon; the reply must carry it. 0 = notification.
    pub id: u32,
    /// Time left before the caller's deadline, in milliseconds.
    pub timeout_ms: u32,
    pub instance: InstanceId,
    pub caller: Caller,
    pub method: MethodName,
    pub headers: Headers,
    pub payload: Bytes,
}

/// Client → daemon: call `service.method` on every instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broadcast {
    pub id: u32,
    pub timeout_ms: u32,
    pub service: ServiceName,
    pub method: MethodName,
    pub headers: Headers,
    pub payload: Bytes,
}

/// Client → daemon: publish on a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Keep as the topic's last value for future subscribers (an empty
    /// payload with `retain` clears it).
    pub retain: bool,
    pub topic: Topic,
    pub headers: Headers,
    pub payload: Bytes,
}

/// Daemon → subscriber: a message matching subscription `sid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub sid: u32,
    /// A retained value replayed at subscription, not a live publication.
    pub retained: bool,
    pub publisher: Caller,
    pub topic: Topic,
    pub headers: Headers,
    pub payload: Bytes,
}

/// Client → daemon: store a message durably; answered by `Reply` (payload:
/// the message id, `u64le`) once it is on disk, or `Error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuePut {
    pub req: u32,
    /// 0–9, higher first.
    pub priority: u8,
    /// Time to live in milliseconds; 0 = the queue's default.
    pub ttl_ms: u32,
    pub queue: QueueName,
    /// Producer's id for duplicate suppression; empty = none; at most
    /// [`MAX_PRODUCER_ID`] bytes (the daemon refuses longer ones).
    pub dedup_id: String,
    pub headers: Headers,
    pub payload: Bytes,
}

/// The longest producer id a put may carry, in bytes. The daemon keeps each
/// id for its queue's duplicate window and writes it again at the head of
/// every queue log segment, so it must stay small.
pub const MAX_PRODUCER_ID: usize = 256;

/// Daemon → consumer: one delivery, to be acked or nacked by `tag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDelivery {
    pub consumer: u32,
    /// Names this delivery (a redelivery gets a new tag).
    pub tag: u64,
    /// The message's id, stable across redeliveries.
    pub id: u64,
    /// 1 on first delivery.
    pub attempt: u32,
    pub priority: u8,
    pub headers: Headers,
    pub payload: Bytes,
}

/// One unit of the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Hello(Hello),
    Welcome(Welcome),
    /// Serve `service` with `methods`; answered by `Registered` or `Error`.
    Register {
        req: u32,
        service: ServiceName,
        methods: Vec<MethodSpec>,
    },
    Registered {
        req: u32,
        instance: InstanceId,
    },
    /// Stop serving an instance; answered by `Reply` (empty) or `Error`.
    Unregister {
        req: u32,
        instance: InstanceId,
    },
    Call(Call),
    Notify(Notify),
    Request(Request),
    /// The successful answer to a call or a control request.
    Reply {
        id: u32,
        payload: Bytes,
    },
    /// The failed answer to a call or a control request.
    Error {
        id: u32,
        code: ErrorCode,
        message: String,
    },
    /// Subscribe to registry changes; each change arrives as an `Event`.
    Watch {
        req: u32,
    },
    Event {
        req: u32,
        payload: Bytes,
    },
    /// Daemon → client: the session is ending, and why.
    Goodbye {
        code: ErrorCode,
        message: String,
    },
    Broadcast(Broadcast),
    /// Daemon → caller: the instances a broadcast went to; exactly one
    /// `BroadcastResult` per instance follows.
    BroadcastStart {
        id: u32,
        instances: Vec<InstanceId>,
    },
    /// Daemon → caller: one instance's answer. `code` None = success and the
    /// payload is the reply; otherwise the payload is the error message.
    BroadcastResult {
        id: u32,
        instance: InstanceId,
        code: Option<ErrorCode>,
        payload: Bytes,
    },
    /// Client → daemon: deliver messages matching `pattern` as `sid`
    /// (chosen by the client); answered by `Reply` or `Error`.
    Subscribe {
        req: u32,
        sid: u32,
        pattern: TopicPattern,
    },
    Unsubscribe {
        req: u32,
        sid: u32,
    },
    Publish(Publish),
    Message(Message),
    /// `missed` messages of subscription `sid` were dropped because the
    /// subscriber did not keep up (daemon → client, and client → daemon to
    /// report drops in the client's own buffer).
    Lagged {
        sid: u32,
        missed: u64,
    },
    QueuePut(QueuePut),
    /// Client → daemon: receive from `queue` with at most `prefetch`
    /// deliveries unacknowledged; answered by `Reply` or `Error`.
    QueueConsume {
        req: u32,
        consumer: u32,
        prefetch: u32,
        queue: QueueName,
    },
    /// Client → daemon: stop consumer; its unacknowledged deliveries return
    /// to the queue. Answered by `Reply`.
    QueueCancel {
        req: u32,
        consumer: u32,
    },
    /// Client → daemon: send consumer no more deliveries, but leave the
    /// ones it holds with it until they are acknowledged, refused or the
    /// consumer cancelled (a worker finishing before it leaves; a pull of
    /// a fixed number). Answered by `Reply`, after every delivery sent to it.
    QueueStop {
        req: u32,
        consumer: u32,
    },
    QueueDelivery(QueueDelivery),
    /// Client → daemon: done with a delivery; answered by `Reply` once the
    /// acknowledgement is on disk.
    QueueAck {
        req: u32,
        tag: u64,
    },
    /// Client → daemon: return a delivery to the queue, after `delay_ms`.
    QueueNack {
        req: u32,
        tag: u64,
        delay_ms: u32,
    },
    /// Daemon → both ends of a direct channel: the grant is withdrawn (the
    /// service was paused, the policy changed, one end went away). The
    /// caller sends its next calls through the daemon again.
    Revoke {
        grant: u64,
        code: ErrorCode,
        message: String,
    },
    /// Daemon → client: something the client held was ended by the daemon
    /// (a policy reload no longer allows it): `id` is the subscription's
    /// `sid`, the consumer id, the registered instance or the watch's
    /// request id, as `what` says.
    Ended {
        what: Held,
        id: u64,
        code: ErrorCode,
        message: String,
    },
    /// Callee → daemon → caller (or callee → caller on a direct channel):
    /// what the hops of call `id` saw, one `sb-hop` header each
    /// ([`crate::trace::Hop`]). Sent just before the answer, and only when
    /// the request asked for it with an `sb-hops` header.
    Hops {
        id: u32,
        headers: Headers,
    },
}

/// What an [`Frame::Ended`] frame ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    Subscription,
    Consumer,
    Registration,
    Watch,
}

impl Held {
    pub fn to_u8(self) -> u8 {
        match self {
            Self::Subscription => 1,
            Self::Consumer => 2,
            Self::Registration => 3,
            Self::Watch => 4,
        }
    }

    pub fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            1 => Self::Subscription,
            2 => Self::Consumer,
            3 => Self::Registration,
            4 => Self::Watch,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Subscription => "subscription",
            Self::Consumer => "consumer",
            Self::Registration => "registration",
            Self::Watch => "watch",
        }
    }
}

impl Frame {
    /// A short name of the frame's kind, for logs and errors.
    pub fn kind_name(&self) -> &'static str {
        kind::name(self.kind()).unwrap_or("?")
    }

    pub(crate) fn kind(&self) -> u8 {
        match self {
            Frame::Hello(_) => kind::HELLO,
            Frame::Welcome(_) => kind::WELCOME,
            Frame::Register { .. } => kind::REGISTER,
            Frame::Registered { .. } => kind::REGISTERED,
            Frame::Unregister { .. } => kind::UNREGISTER,
            Frame::Call(_) => kind::CALL,
            Frame::Notify(_) => kind::NOTIFY,
            Frame::Request(_) => kind::REQUEST,
            Frame::Reply { .. } => kind::REPLY,
            Frame::Error { .. } => kind::ERROR,
            Frame::Watch { .. } => kind::WATCH,
            Frame::Event { .. } => kind::EVENT,
            Frame::Goodbye { .. } => kind::GOODBYE,
            Frame::Broadcast(_) => kind::BROADCAST,
            Frame::BroadcastStart { .. } => kind::BROADCAST_START,
            Frame::BroadcastResult { .. } => kind::BROADCAST_RESULT,
            Frame::Subscribe { .. } => kind::SUBSCRIBE,
            Frame::Unsubscribe { .. } => kind::UNSUBSCRIBE,
            Frame::Publish(_) => kind::PUBLISH,
            Frame::Message(_) => kind::MESSAGE,
            Frame::Lagged { .. } => kind::LAGGED,
            Frame::QueuePut(_) => kind::QUEUE_PUT,
            Frame::QueueConsume { .. } => kind::QUEUE_CONSUME,
            Frame::QueueCancel { .. } => kind::QUEUE_CANCEL,
            Frame::QueueStop { .. } => kind::QUEUE_STOP,
            Frame::QueueDelivery(_) => kind::QUEUE_DELIVERY,
            Frame::QueueAck { .. } => kind::QUEUE_ACK,
            Frame::QueueNack { .. } => kind::QUEUE_NACK,
            Frame::Revoke { .. } => kind::REVOKE,
            Frame::Ended { .. } => kind::ENDED,
            Frame::Hops { .. } => kind::HOPS,
        }
    }

    /// The payload a frame carries, if its kind has one.
    pub fn payload(&self) -> Option<&Bytes> {
        match self {
            Frame::Call(c) => Some(&c.payload),
            Frame::Notify(n) => Some(&n.payload),
            Frame::Request(r) => Some(&r.payload),
            Frame::Broadcast(b) => Some(&b.payload),
            Frame::Publish(p) => Some(&p.payload),
            Frame::Message(m) => Some(&m.payload),
            Frame::QueuePut(p) => Some(&p.payload),
            Frame::QueueDelivery(d) => Some(&d.payload),
            Frame::Reply { payload, .. }
            | Frame::Event { payload, .. }
            | Frame::BroadcastResult { payload, .. } => Some(payload),
            _ => None,
        }
    }

    /// The payload, to replace (a reader puts a received blob in place of
    /// its length).
    pub fn payload_mut(&mut self) -> Option<&mut Bytes> {
        match self {
            Frame::Call(c) => Some(&mut c.payload),
            Frame::Notify(n) => Some(&mut n.payload),
            Frame::Request(r) => Some(&mut r.payload),
            Frame::Broadcast(b) => Some(&mut b.payload),
            Frame::Publish(p) => Some(&mut p.payload),
            Frame::Message(m) => Some(&mut m.payload),
            Frame::QueuePut(p) => Some(&mut p.payload),
            Frame::QueueDelivery(d) => Some(&mut d.payload),
            Frame::Reply { payload, .. }
            | Frame::Event { payload, .. }
            | Frame::BroadcastResult { payload, .. } => Some(payload),
            _ => None,
        }
    }
}

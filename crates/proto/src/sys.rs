//! Payload schemas of the daemon's own services (`$sys.*`) and of registry
//! watch events. They travel as MessagePack maps with the field names below,
//! so any language with a MessagePack library can read them.

use serde::{Deserialize, Serialize};

/// `$sys.registry` — the service registry.
pub const REGISTRY_SERVICE: &str = "$sys.registry";
/// `$sys.registry.list`: no arguments; replies `Vec<ServiceInfo>` sorted by name.
pub const REGISTRY_LIST: &str = "list";
/// `$sys.topics` — subscriptions and retained values.
pub const TOPICS_SERVICE: &str = "$sys.topics";
/// `$sys.topics.list`: no arguments; replies [`TopicsInfo`].
pub const TOPICS_LIST: &str = "list";
/// `$sys.queues` — durable queues.
pub const QUEUES_SERVICE: &str = "$sys.queues";
/// `$sys.queues.declare`: [`QueueDeclare`]; replies nothing once durable.
pub const QUEUES_DECLARE: &str = "declare";
/// `$sys.queues.list`: no arguments; replies `Vec<QueueInfo>` sorted by name.
pub const QUEUES_LIST: &str = "list";
/// `$sys.queues.peek`: [`QueuePeek`]; replies `Vec<PeekedMessage>` in delivery order.
pub const QUEUES_PEEK: &str = "peek";
/// `$sys.queues.purge`: [`QueueRef`]; replies the number of messages removed (u64).
pub const QUEUES_PURGE: &str = "purge";
/// `$sys.queues.delete`: [`QueueRef`]; deletes an empty queue with no
/// consumers; replies nothing once durable.
pub const QUEUES_DELETE: &str = "delete";

/// What a queue does when it is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overflow {
    /// Refuse the put with `queue_full` (the default).
    #[default]
    Reject,
    /// Make room by dropping the oldest message.
    DropOldest,
}

/// A queue's settings; every field has a default, so `{}` is valid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct QueueOptions {
    pub max_messages: u64,
    pub max_bytes: u64,
    pub overflow: Overflow,
    /// Deliveries before a message goes to `<name>.dlq`; 0 = unlimited.
    pub max_attempts: u32,
    /// How long a delivery may stay unacknowledged before it returns.
    pub visibility_timeout_ms: u64,
    /// How long a message id suppresses duplicates.
    pub dedup_window_ms: u64,
    /// Time to live of messages put without one; 0 = forever.
    pub default_ttl_ms: u64,
}

impl Default for QueueOptions {
    fn default() -> Self {
        Self {
            max_messages: 1_000_000,
            max_bytes: 256 * 1024 * 1024,
            overflow: Overflow::Reject,
            max_attempts: 5,
            visibility_timeout_ms: 30_000,
            dedup_window_ms: 5 * 60_000,
            default_ttl_ms: 0,
        }
    }
}

/// Argument of `$sys.queues.declare`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueDeclare {
    pub queue: String,
    #[serde(default)]
    pub options: QueueOptions,
    /// Keep it on the fleet's JetStream, replicated, instead of this
    /// host's log (a daemon that joined a fleet).
    #[serde(default)]
    pub fleet: bool,
}

/// Argument naming one queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueRef {
    pub queue: String,
}

/// Argument of `$sys.queues.peek`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuePeek {
    pub queue: String,
    pub count: u32,
}

/// A message seen without taking it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeekedMessage {
    pub id: u64,
    pub priority: u8,
    pub attempts: u32,
    pub put_at_ms: u64,
    /// 0 = never expires.
    pub expires_at_ms: u64,
    pub headers: Vec<(String, String)>,
    #[serde(with = "serde_bytes_compat")]
    pub payload: Vec<u8>,
}

/// One queue's state and counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueInfo {
    pub queue: String,
    pub options: QueueOptions,
    /// Messages waiting (ready, delayed).
    pub depth: u64,
    pub in_flight: u64,
    pub bytes: u64,
    pub consumers: u32,
    pub put_total: u64,
    pub acked_total: u64,
    pub dead_lettered_total: u64,
    pub dropped_total: u64,
    /// Puts and acks per second over the last few seconds.
    pub put_rate: f64,
    pub ack_rate: f64,
    /// Set for a queue the fleet keeps on JetStream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetQueueInfo>,
}

/// Where the fleet keeps a queue, and whether JetStream answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetQueueInfo {
    /// The JetStream stream.
    pub stream: String,
    /// Its copies.
    pub replicas: u32,
    /// Why its state is unknown (JetStream did not answer), or empty.
    #[serde(default)]
    pub unavailable: String,
}

/// MessagePack `bin` for byte vectors (serde would otherwise write arrays).
pub(crate) mod serde_bytes_compat {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = seq.next_element()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        deserializer.deserialize_bytes(Visitor)
    }
}

/// `$sys.daemon` — facts about the daemon itself.
pub const DAEMON_SERVICE: &str = "$sys.daemon";
/// `$sys.daemon.info`: no arguments; replies [`DaemonInfo`].
pub const DAEMON_INFO: &str = "info";
/// `$sys.daemon.whoami`: no arguments; replies [`Whoami`]. Always allowed.
pub const DAEMON_WHOAMI: &str = "whoami";
/// `$sys.daemon.report_breakers`: [`BreakerReport`], a client's circuit
/// breakers that are not closed (replacing what it reported before);
/// replies nothing. Always allowed: it is about the caller itself.
pub const DAEMON_REPORT_BREAKERS: &str = "report_breakers";
/// `$sys.daemon.breakers`: no arguments; replies `Vec<ProcessBreakers>`, the
/// open and half-open breakers each connection reported.
pub const DAEMON_BREAKERS: &str = "breakers";

/// `$sys.daemon.monitor`: [`MonitorRequest`]; replies nothing at once, then
/// sends an `Event` (under the call's id) with a [`MonitorEvent`] for every
/// call, notification, broadcast and publication the pattern matches, until
/// the connection closes. Needs `admin`; while it runs, direct channels to
/// the services it watches are withdrawn and none are granted.
pub const DAEMON_MONITOR: &str = "monitor";

/// What a monitor watches.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorRequest {
    /// A topic-style pattern over `SERVICE.METHOD` (calls, notifications,
    /// broadcasts) and topics (publications): `>` for everything.
    pub pattern: String,
}

/// One message passing through the daemon, as a monitor sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorEvent {
    /// `call`, `notify`, `broadcast` or `publish`.
    pub kind: String,
    /// `SERVICE.METHOD`, or the topic.
    pub target: String,
    /// The sender, as the daemon verified it.
    pub principal: String,
    pub session: u64,
    pub pid: Option<u32>,
    /// The instance a call or notification went to (0: none, or several).
    pub instance: u64,
    /// Payload bytes.
    pub bytes: u64,
    /// The W3C trace id it carries, if any.
    pub trace_id: String,
    /// Milliseconds since the Unix epoch, when the daemon routed it.
    pub at_ms: u64,
}

/// A client's circuit breakers that are open or half-open.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerReport {
    pub breakers: Vec<BreakerInfo>,
}

/// One breaker, as its client reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerInfo {
    /// The service it guards.
    pub service: String,
    /// `open` or `half-open`.
    pub state: String,
}

/// What one connection reported, and who it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessBreakers {
    pub session: u64,
    pub client: String,
    pub principal: String,
    pub pid: Option<u32>,
    pub breakers: Vec<BreakerInfo>,
}

/// Who the daemon says this connection is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Whoami {
    pub principal: String,
    pub session: u64,
    pub uid: u32,
    pub pid: u32,
}

/// One registered service and its instances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInfo {
    pub service: String,
    pub instances: Vec<InstanceInfo>,
}

/// One instance of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    pub instance: u64,
    pub methods: Vec<String>,
    /// Human-readable signatures, in the order of `methods` (may be empty).
    #[serde(default)]
    pub signatures: Vec<String>,
    /// The client name given in the handshake.
    pub client: String,
    /// The serving process, when known from the socket's credentials.
    pub pid: Option<u32>,
    /// Calls sent to it and not yet answered.
    pub outstanding: u32,
    /// Calls and notifications delivered to it so far (through the daemon:
    /// calls on direct channels are not seen, see `direct_channels`).
    pub delivered: u64,
    /// Callers holding a direct channel to it now.
    #[serde(default)]
    pub direct_channels: u32,
}

/// Reply of `$sys.topics.list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicsInfo {
    pub subscriptions: Vec<SubscriptionInfo>,
    pub retained_topics: u32,
}

/// One subscription, with its delivery counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionInfo {
    pub pattern: String,
    pub client: String,
    pub pid: Option<u32>,
    pub delivered: u64,
    /// Messages the subscriber missed because it did not keep up.
    pub missed: u64,
    /// Messages waiting in the daemon for the subscriber to read.
    pub backlog: u32,
}

/// A change in the registry, sent to watchers as an `Event` payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryEvent {
    /// `"up"` or `"down"`.
    pub event: String,
    pub service: String,
    pub instance: u64,
    pub methods: Vec<String>,
    pub client: String,
}

/// Reply of `$sys.daemon.info`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonInfo {
    pub version: String,
    pub pid: u32,
    pub uptime_ms: u64,
    pub sessions: u32,
    pub services: u32,
    pub instances: u32,
    pub calls_in_flight: u32,
    pub max_frame: u32,
    /// Where durable queues keep their data.
    #[serde(default)]
    pub data_dir: String,
    /// How many times the daemon re-executed itself (`switchboard reexec`):
    /// the same pid, a new process image.
    #[serde(default)]
    pub generation: u32,
}

/// Encodes a `$sys` payload as a MessagePack map.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising these plain structs into a Vec cannot fail.
    rmp_serde::to_vec_named(value).unwrap_or_default()
}

/// Decodes a `$sys` payload.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, rmp_serde::decode::Error> {
    rmp_serde::from_slice(bytes)
}

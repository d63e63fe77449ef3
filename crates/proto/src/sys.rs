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
/// `$sys.daemon` — facts about the daemon itself.
pub const DAEMON_SERVICE: &str = "$sys.daemon";
/// `$sys.daemon.info`: no arguments; replies [`DaemonInfo`].
pub const DAEMON_INFO: &str = "info";

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
    /// Calls and notifications delivered to it so far.
    pub delivered: u64,
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonInfo {
    pub version: String,
    pub pid: u32,
    pub uptime_ms: u64,
    pub sessions: u32,
    pub services: u32,
    pub instances: u32,
    pub calls_in_flight: u32,
    pub max_frame: u32,
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

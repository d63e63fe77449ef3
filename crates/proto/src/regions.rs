//! Payload schemas of `$sys.regions`: named shared regions the daemon owns
//! and hands out by descriptor (docs/protocol.md, "Regions"). They travel as
//! MessagePack maps with the field names below.

use serde::{Deserialize, Serialize};

/// `$sys.regions` — named shared memory regions.
pub const REGIONS_SERVICE: &str = "$sys.regions";
/// `$sys.regions.open`: [`RegionOpen`]; replies with the region's descriptor
/// (a frame with [`crate::REGION_FLAG`]; needs a client that takes blobs).
pub const REGIONS_OPEN: &str = "open";
/// `$sys.regions.changed`: [`RegionRef`], from a writer that let go of the
/// lock; replies the sequence (u64) and publishes a [`RegionChanged`] on the
/// region's event topic.
pub const REGIONS_CHANGED: &str = "changed";
/// `$sys.regions.list`: no arguments; replies `Vec<RegionInfo>` sorted by name.
pub const REGIONS_LIST: &str = "list";

/// The prefix of each region's event topic: `$sys.regions.NAME`.
pub const REGION_EVENTS: &str = "$sys.regions.";

/// The event topic of region `name`.
pub fn event_topic(name: &str) -> String {
    format!("{REGION_EVENTS}{name}")
}

/// Argument of `$sys.regions.open`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionOpen {
    /// A dotted name, as a topic's (`camera.frames`).
    pub name: String,
    /// Data bytes: creates the region at this size if it does not exist
    /// (writers only); must match if it does. `0` opens it at whatever size
    /// it has.
    #[serde(default)]
    pub size: u64,
    /// Writable, with its lock (`region.write`), or read-only (`region.read`).
    #[serde(default)]
    pub write: bool,
}

/// Argument of `$sys.regions.changed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionRef {
    pub name: String,
}

/// What a region's event topic carries after each announced change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionChanged {
    pub name: String,
    pub sequence: u64,
}

/// One region in `$sys.regions.list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionInfo {
    pub name: String,
    /// Data bytes.
    pub size: u64,
    pub sequence: u64,
    /// Who holds it mapped now.
    pub holders: Vec<RegionHolder>,
}

/// A connection that holds a region mapped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionHolder {
    pub principal: String,
    pub pid: u32,
    pub session: u64,
    pub write: bool,
}

//! JSON ⇄ MessagePack for the CLI: the protocol crate's mapping
//! (`switchboard_proto::json`), with the CLI's errors.

use anyhow::Context;
use bytes::Bytes;

pub use switchboard_proto::json::{display_payload, from_msgpack, to_msgpack};

/// Parses JSON text (absent = `null`) into a MessagePack payload.
pub fn payload_from_arg(arg: Option<&str>) -> anyhow::Result<Bytes> {
    switchboard_proto::json::payload_from_json(arg.map(str::as_bytes))
        .with_context(|| format!("the payload is not valid JSON: {}", arg.unwrap_or_default()))
}

//! What a caller says to the fleet, and what a fleet broadcast answers
//! (docs/fleet.md).
//!
//! A call with `sb-host: NAME` goes to that host of the fleet. A broadcast
//! with `sb-fleet: 1` reaches the instances on every host: the fleet
//! bridge's stand-in answers it with one [`FleetReplies`] (MessagePack,
//! under the key `$fleet`), an entry per instance elsewhere, each with its
//! host, and the hosts that did not answer with their instances.

use serde::{Deserialize, Serialize};

/// `sb-host: NAME`: the call goes to host NAME through the fleet, even when
/// an instance on this host could take it.
pub const HOST_HEADER: &str = "sb-host";

/// `sb-fleet: 1` on a broadcast: every host's instances, not this host's only.
pub const FLEET_HEADER: &str = "sb-fleet";

/// An instance elsewhere and what it answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostReply {
    pub host: String,
    pub instance: u64,
    #[serde(flatten)]
    pub answer: Answer,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    Reply(Payload),
    Error { kind: String, message: String },
}

/// A host the broadcast expected an answer from and got none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissingHost {
    pub host: String,
    /// How many instances it had announced.
    pub instances: u32,
    /// Why: gone (silent), or no answer before the deadline.
    pub why: String,
}

/// The stand-in's answer to a fleet broadcast.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetReplies {
    pub replies: Vec<HostReply>,
    pub missing: Vec<MissingHost>,
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    #[serde(rename = "$fleet")]
    fleet: FleetReplies,
}

impl FleetReplies {
    pub fn encode(&self) -> Result<Vec<u8>, rmp_serde::encode::Error> {
        rmp_serde::to_vec_named(&Envelope { fleet: self.clone() })
    }

    /// `None` when `payload` is not a stand-in's answer (an instance's own).
    pub fn decode(payload: &[u8]) -> Option<Self> {
        rmp_serde::from_slice::<Envelope>(payload).ok().map(|envelope| envelope.fleet)
    }
}

/// Bytes carried as MessagePack `bin`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Payload(pub Vec<u8>);

impl Serialize for Payload {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Payload;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Payload, E> {
                Ok(Payload(bytes.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, bytes: Vec<u8>) -> Result<Payload, E> {
                Ok(Payload(bytes))
            }
        }
        deserializer.deserialize_byte_buf(Visit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fleet_answer_round_trips_and_an_instance_reply_is_not_one() {
        let answer = FleetReplies {
            replies: vec![
                HostReply {
                    host: "b".into(),
                    instance: 3,
                    answer: Answer::Reply(Payload(vec![0xa2, b'o', b'k'])),
                },
                HostReply {
                    host: "c".into(),
                    instance: 9,
                    answer: Answer::Error { kind: "timeout".into(), message: "slow".into() },
                },
            ],
            missing: vec![MissingHost { host: "d".into(), instances: 2, why: "gone".into() }],
        };
        assert_eq!(FleetReplies::decode(&answer.encode().unwrap()), Some(answer));
        assert_eq!(FleetReplies::decode(&[0xa2, b'o', b'k']), None);
        assert_eq!(FleetReplies::decode(&[]), None);
    }
}

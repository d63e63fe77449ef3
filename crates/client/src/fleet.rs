//! The fleet from a client (docs/fleet.md): a broadcast that reaches every
//! instance on every host of the fleet, answered one entry per instance
//! with its host, and the hosts that did not answer.

use bytes::Bytes;
use switchboard_proto::fleet::{Answer, MissingHost, FLEET_HEADER};
use switchboard_proto::ErrorCode;

use crate::calls::{CallOptions, IntoTarget};
use crate::{Bus, CallError};

/// One instance's answer to a fleet broadcast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetReply {
    /// The host it runs on; `None` for this host.
    pub host: Option<String>,
    pub instance: u64,
    pub result: Result<Bytes, CallError>,
}

/// Every answer to a fleet broadcast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetOutcome {
    pub replies: Vec<FleetReply>,
    /// Hosts that had announced the method and did not answer, with how
    /// many instances each had and why.
    pub missing: Vec<MissingHost>,
    /// False when an instance or a host did not answer in time.
    pub complete: bool,
}

impl Bus {
    /// Broadcasts to every instance of `target` on every host of the fleet
    /// this daemon joined (on this host only, when it joined none).
    pub async fn broadcast_fleet(
        &self,
        target: impl IntoTarget,
        payload: impl Into<Bytes>,
        mut options: CallOptions,
    ) -> Result<FleetOutcome, CallError> {
        let timeout = options.timeout;
        options.headers =
            options.headers.with(FLEET_HEADER, "1").map_err(|e| CallError::BadRequest(e.to_string()))?;
        let outcome = self.broadcast(target, payload, options).await?;
        let mut fleet = FleetOutcome { replies: Vec::new(), missing: Vec::new(), complete: outcome.complete };
        for reply in outcome.replies {
            let elsewhere = reply
                .result
                .as_ref()
                .ok()
                .and_then(|payload| switchboard_proto::fleet::FleetReplies::decode(payload));
            let Some(elsewhere) = elsewhere else {
                fleet.replies.push(FleetReply { host: None, instance: reply.instance, result: reply.result });
                continue;
            };
            fleet.complete &= elsewhere.missing.is_empty();
            fleet.missing.extend(elsewhere.missing);
            fleet.replies.extend(elsewhere.replies.into_iter().map(|entry| FleetReply {
                host: Some(entry.host),
                instance: entry.instance,
                result: match entry.answer {
                    Answer::Reply(payload) => Ok(Bytes::from(payload.0)),
                    Answer::Error { kind, message } => {
                        Err(CallError::from_wire(code(&kind), message, timeout))
                    }
                },
            }));
        }
        Ok(fleet)
    }
}

fn code(kind: &str) -> ErrorCode {
    ErrorCode::from_name(kind).unwrap_or(ErrorCode::Rejected)
}

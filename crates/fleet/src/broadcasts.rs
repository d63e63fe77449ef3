//! Broadcasts across the fleet. Out: a broadcast with `sb-fleet` reaches
//! the stand-in, which publishes it to `sb.bc.HOST.SERVICE` and gathers
//! one answer per host that announced the method (`gather`), until all
//! answered, fell silent, or the deadline (less a margin, so its own
//! answer is in time). In: a host makes the broadcast to its own instances
//! as the caller's principal and answers with an entry per instance (a
//! notification to every instance gets no answer).

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use switchboard::{Reject, Request};
use switchboard_proto::fleet::{Answer, HostReply, Payload};
use switchboard_proto::ErrorCode;

use crate::bridge::{link_failed, lock, Bridge};
use crate::gather::Gather;
use crate::{subjects, wire};

/// How often a gathering broadcast checks for hosts that fell silent.
const CHECK_EVERY: Duration = Duration::from_millis(200);

impl Bridge {
    pub(crate) async fn broadcast_out(&self, service: &str, request: Request) -> Result<Bytes, Reject> {
        let method = request.method.as_str();
        let expected = lock(&self.roster).offering(service, method);
        let now = tokio::time::Instant::now();
        let deadline = request.deadline.map_or(now + Duration::from_secs(30), tokio::time::Instant::from_std);
        let left = deadline.saturating_duration_since(now);
        // Answer a little before the caller stops waiting.
        let until = deadline - (left / 10).min(Duration::from_millis(100));
        let mut gather = Gather::new(expected);
        let principal = request.caller.principal.as_str();
        let headers = wire::request(method, principal, left, &request.headers);
        let inbox = self.nats.new_inbox();
        let mut answers = self.nats.subscribe(inbox.clone()).await.map_err(|err| link_failed(&err))?;
        let subject = subjects::broadcast(&self.joining.host, service);
        self.nats
            .publish_with_reply_and_headers(subject, inbox, headers, request.payload)
            .await
            .map_err(|err| link_failed(&err))?;
        let mut check = tokio::time::interval(CHECK_EVERY);
        while !gather.complete() {
            tokio::select! {
                answer = answers.next() => {
                    let Some(answer) = answer else { break };
                    let Some(host) = answer.headers.as_ref().and_then(|h| h.get(wire::HOST)) else { continue };
                    let replies: Vec<HostReply> = rmp_serde::from_slice(&answer.payload).unwrap_or_default();
                    gather.answered(host.as_str(), replies);
                }
                _ = check.tick() => {
                    let roster = lock(&self.roster);
                    gather.drop_gone(|host| roster.alive(host));
                }
                () = tokio::time::sleep_until(until) => break,
            }
        }
        let encoded = gather.finish().encode().map_err(|err| Reject::new(err.to_string()))?;
        Ok(Bytes::from(encoded))
    }

    /// A broadcast from another host, made to this host's instances.
    pub(crate) async fn broadcast_in(
        &self,
        service: &str,
        message: &async_nats::Message,
    ) -> Result<Bytes, (ErrorCode, String)> {
        let host = &self.joining.host;
        if message.reply.is_none() {
            // A notification to every instance: nothing to answer.
            let (target, bus, options) = self.arrived(service, message).await?;
            let notified = bus.notify_with(target.as_str(), message.payload.clone(), options, true).await;
            return notified
                .map(|()| Bytes::new())
                .map_err(|err| (err.code().unwrap_or(ErrorCode::Rejected), err.message()));
        }
        let replies = match self.arrived(service, message).await {
            Ok((target, bus, options)) => match bus
                .broadcast(target.as_str(), message.payload.clone(), options)
                .await
            {
                Ok(outcome) => outcome
                    .replies
                    .into_iter()
                    .map(|reply| HostReply {
                        host: host.clone(),
                        instance: reply.instance,
                        answer: match reply.result {
                            Ok(payload) => Answer::Reply(Payload(payload.to_vec())),
                            Err(err) => Answer::Error { kind: err.kind().to_owned(), message: err.message() },
                        },
                    })
                    .collect(),
                Err(err) => vec![refused(host, err.kind(), err.message())],
            },
            Err((code, message)) => vec![refused(host, code.name(), message)],
        };
        rmp_serde::to_vec_named(&replies)
            .map(Bytes::from)
            .map_err(|err| (ErrorCode::Rejected, err.to_string()))
    }
}

/// A host that refused the broadcast as a whole: one entry, instance 0.
fn refused(host: &str, kind: &str, message: String) -> HostReply {
    HostReply { host: host.to_owned(), instance: 0, answer: Answer::Error { kind: kind.to_owned(), message } }
}

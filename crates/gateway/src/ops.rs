//! The gateway's operations on the bus, the same whether an HTTP request or
//! a WebSocket message asked: typed arguments in, a JSON value or a
//! [`Failure`] out. Each runs on the session of the request's principal.
//!
//! One-way operations (a notification, a publication) have no answer on the
//! bus: the daemon refuses them without a reply. So that a caller still
//! learns it was refused, they are first checked against the policy as that
//! principal (`RouterHandle::permits`); the daemon checks them again when
//! they arrive.

use std::collections::HashMap;
use std::time::Duration;

use axum::http::StatusCode;
use bytes::Bytes;
use serde_json::{json, Value};
use switchboard::{
    Bus, CallError, CallOptions, Headers, InstanceId, PublishError, PublishOptions, PutOptions, Target, Topic,
};
use switchboard_daemon::host::{Op, Principal, RouterHandle};
use switchboard_proto::{json as payloads, ErrorCode};

use crate::status::status_of;

/// The longest timeout a request may ask for.
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// Why an operation failed: its HTTP status, its kind (the CLI's `error`)
/// and what to tell the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub status: StatusCode,
    pub kind: String,
    pub message: String,
}

impl Failure {
    pub fn new(status: StatusCode, kind: &str, message: impl Into<String>) -> Self {
        Self { status, kind: kind.to_owned(), message: message.into() }
    }

    pub fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn code(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(status_of(code), code.name(), message)
    }

    pub fn call(err: &CallError) -> Self {
        let status = err.code().map_or(StatusCode::BAD_GATEWAY, status_of);
        Self::new(status, err.kind(), err.to_string())
    }

    /// `{"error": KIND, "message": TEXT}`, the body the CLI prints.
    pub fn body(&self) -> Value {
        json!({ "error": self.kind, "message": self.message })
    }
}

pub type Outcome = Result<Value, Failure>;

/// A request's principal and its session.
#[derive(Clone)]
pub struct Caller {
    pub principal: Principal,
    pub bus: Bus,
}

impl Caller {
    /// The policy's answer for a one-way operation, as this principal.
    fn may(&self, router: &RouterHandle, op: Op, target: &str) -> Result<(), Failure> {
        router.permits(&self.principal, op, target).map_err(|(code, message)| Failure::code(code, message))
    }
}

/// What a call, notification or broadcast is sent with.
pub struct Sending {
    pub target: Target,
    pub payload: Bytes,
    pub options: CallOptions,
}

impl Sending {
    /// From the parts every front door has: `SERVICE.METHOD`, a JSON body
    /// (absent = `null`), a timeout (`500ms`, `5s`), an instance id and headers.
    pub fn parse(
        target: &str,
        body: Option<&[u8]>,
        timeout: Option<&str>,
        instance: Option<InstanceId>,
        headers: Vec<(String, String)>,
    ) -> Result<Self, Failure> {
        let target = Target::parse(target).map_err(|err| Failure::bad(err.to_string()))?;
        let payload = payloads::payload_from_json(body).map_err(|err| Failure::bad(err.to_string()))?;
        let timeout = match timeout.map(humantime::parse_duration) {
            None => switchboard::DEFAULT_TIMEOUT,
            Some(Ok(timeout)) => timeout.min(MAX_TIMEOUT),
            Some(Err(err)) => return Err(Failure::bad(format!("timeout: {err} (try 500ms, 5s)"))),
        };
        let headers = Headers::from_pairs(headers).map_err(|err| Failure::bad(format!("headers: {err}")))?;
        Ok(Self { target, payload, options: CallOptions { timeout, instance, headers, retry: None } })
    }
}

/// Parses an instance id given as text (a query parameter).
pub fn instance(text: Option<&String>) -> Result<Option<InstanceId>, Failure> {
    text.map(|i| i.parse().map_err(|err| Failure::bad(format!("instance: {err}")))).transpose()
}

/// A reply's payload as JSON.
fn reply(payload: &Bytes) -> Value {
    payloads::display_payload(payload)
}

pub async fn call(caller: &Caller, sending: Sending) -> Outcome {
    let Sending { target, payload, options } = sending;
    caller
        .bus
        .call_with(&target.to_string(), payload, options)
        .await
        .map(|r| reply(&r))
        .map_err(|e| Failure::call(&e))
}

/// A notification to one instance, or to every instance with `all`. Refused
/// when the policy forbids it or nothing serves the method (the daemon would
/// drop it without a word).
pub async fn notify(router: &RouterHandle, caller: &Caller, sending: Sending, all: bool) -> Outcome {
    let Sending { target, payload, options } = sending;
    caller.may(router, Op::Notify, &target.to_string())?;
    router
        .serving(&target.service, &target.method)
        .map_err(|(code, message)| Failure::code(code, message))?;
    caller.bus.notify_with(target.clone(), payload, options, all).await.map_err(|e| Failure::call(&e))?;
    Ok(json!({ "notified": target.to_string(), "all": all }))
}

/// One entry per instance: `{"instance", "reply"}` or `{"instance", "error", "message"}`.
pub async fn broadcast(caller: &Caller, sending: Sending) -> Outcome {
    let Sending { target, payload, options } = sending;
    let outcome = caller.bus.broadcast(target, payload, options).await.map_err(|e| Failure::call(&e))?;
    let replies: Vec<Value> = outcome
        .replies
        .iter()
        .map(|answer| match &answer.result {
            Ok(payload) => json!({ "instance": answer.instance, "reply": reply(payload) }),
            Err(err) => {
                let mut entry = Failure::call(err).body();
                entry["instance"] = json!(answer.instance);
                entry
            }
        })
        .collect();
    Ok(json!({ "complete": outcome.complete, "replies": replies }))
}

pub async fn publish(
    router: &RouterHandle,
    caller: &Caller,
    topic: &str,
    body: Option<&[u8]>,
    retain: bool,
) -> Outcome {
    let parsed = Topic::parse(topic).map_err(|err| Failure::bad(format!("topic {topic:?}: {err}")))?;
    caller.may(router, Op::Publish, topic)?;
    let payload = payloads::payload_from_json(body).map_err(|err| Failure::bad(err.to_string()))?;
    let options = PublishOptions { retain, headers: Headers::new() };
    caller.bus.publish_with(parsed, payload, options).await.map_err(|err| {
        let code = match &err {
            PublishError::InvalidTopic(_) => ErrorCode::BadRequest,
            PublishError::PayloadTooLarge { .. } => ErrorCode::PayloadTooLarge,
            PublishError::Timeout(_) => ErrorCode::Timeout,
            PublishError::Closed => ErrorCode::ShuttingDown,
        };
        Failure::code(code, err.to_string())
    })?;
    Ok(json!({ "published": topic, "retain": retain }))
}

/// What a put is sent with, from query parameters or a message's fields.
pub fn put_options(
    priority: Option<u8>,
    id: Option<String>,
    ttl: Option<&str>,
) -> Result<PutOptions, Failure> {
    if priority.is_some_and(|p| p > 9) {
        return Err(Failure::bad("priority is 0 to 9"));
    }
    let ttl =
        ttl.map(humantime::parse_duration).transpose().map_err(|err| Failure::bad(format!("ttl: {err}")))?;
    Ok(PutOptions { priority: priority.unwrap_or(0), ttl, id, headers: Headers::new() })
}

pub async fn put(caller: &Caller, queue: &str, body: Option<&[u8]>, options: PutOptions) -> Outcome {
    let named = caller.bus.queue(queue).map_err(|err| Failure::bad(format!("queue {queue:?}: {err}")))?;
    let payload = payloads::payload_from_json(body).map_err(|err| Failure::bad(err.to_string()))?;
    let id = named.put_with(payload, options).await.map_err(|e| Failure::call(&e))?;
    Ok(json!({ "queue": queue, "id": id }))
}

/// A delivery as JSON, with the receipt that acks or nacks it.
pub fn delivery_json(receipt: &str, delivery: &switchboard::Delivery) -> Value {
    let headers: HashMap<&str, &str> = delivery.headers.iter().collect();
    json!({
        "receipt": receipt,
        "id": delivery.id,
        "attempt": delivery.attempt,
        "priority": delivery.priority,
        "headers": headers,
        "payload": reply(&delivery.payload),
    })
}

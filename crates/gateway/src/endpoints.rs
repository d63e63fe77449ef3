//! The HTTP endpoints of the bus's operations: each reads its path, query
//! and body, runs the operation (`ops`, `leases`) as the request's
//! [`Caller`] and answers with its JSON or its failure.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State as Extract};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use switchboard::{Item, Message, SubscribeError, Subscription};
use switchboard_proto::json as payloads;

use crate::leases::{Settle, DEFAULT_LEASE};
use crate::ops::{self, Caller, Failure, Sending};
use crate::routes::{respond, State};

type Params = Query<HashMap<String, String>>;

/// A body, or `None` when empty (then the payload is `null`).
fn body_of(payload: &Bytes) -> Option<&[u8]> {
    (!payload.is_empty()).then_some(payload.as_ref())
}

/// `X-Sb-Name: value` request headers, as the bus message's headers.
fn bus_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter_map(|(name, value)| {
            let key = name.as_str().strip_prefix("x-sb-")?;
            Some((key.to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect()
}

fn duration(query: &HashMap<String, String>, name: &str) -> Result<Option<Duration>, Failure> {
    let parse =
        |text: &String| humantime::parse_duration(text).map_err(|err| Failure::bad(format!("{name}: {err}")));
    query.get(name).map(parse).transpose()
}

fn flag(query: &HashMap<String, String>, name: &str) -> Result<bool, Failure> {
    match query.get(name).map(String::as_str) {
        None | Some("false" | "0") => Ok(false),
        Some("true" | "1" | "") => Ok(true),
        Some(other) => Err(Failure::bad(format!("{name}={other}: say true or false"))),
    }
}

fn number<T: std::str::FromStr>(query: &HashMap<String, String>, name: &str) -> Result<Option<T>, Failure>
where
    T::Err: std::fmt::Display,
{
    let parse = |text: &String| text.parse().map_err(|err| Failure::bad(format!("{name}={text}: {err}")));
    query.get(name).map(parse).transpose()
}

/// `{service}/{method}` with its query, `X-Sb-*` headers and JSON body, as
/// what a call, notification or broadcast is sent with.
impl FromRequest<State> for Sending {
    type Rejection = Failure;

    async fn from_request(request: Request, state: &State) -> Result<Self, Failure> {
        let (mut parts, body) = request.into_parts();
        let Path((service, method)) = Path::<(String, String)>::from_request_parts(&mut parts, state)
            .await
            .map_err(|err| Failure::bad(err.body_text()))?;
        let Query(query) = Params::from_request_parts(&mut parts, state)
            .await
            .map_err(|err| Failure::bad(err.body_text()))?;
        let headers = bus_headers(&parts.headers);
        let payload = Bytes::from_request(Request::from_parts(parts, body), state).await.map_err(|err| {
            let too_large = err.status() == StatusCode::PAYLOAD_TOO_LARGE;
            Failure::new(
                err.status(),
                if too_large { "payload_too_large" } else { "bad_request" },
                err.body_text(),
            )
        })?;
        let instance = ops::instance(query.get("instance"))?;
        let timeout = query.get("timeout").map(String::as_str);
        Sending::parse(&format!("{service}.{method}"), body_of(&payload), timeout, instance, headers)
    }
}

pub async fn call(caller: Caller, sending: Sending) -> Response {
    respond(StatusCode::OK, ops::call(&caller, sending).await)
}

pub async fn notify(
    Extract(state): Extract<State>,
    caller: Caller,
    Query(query): Params,
    sending: Sending,
) -> Response {
    let outcome = async { ops::notify(&state.0.router, &caller, sending, flag(&query, "all")?).await };
    respond(StatusCode::ACCEPTED, outcome.await)
}

pub async fn broadcast(caller: Caller, sending: Sending) -> Response {
    respond(StatusCode::OK, ops::broadcast(&caller, sending).await)
}

pub async fn publish(
    Extract(state): Extract<State>,
    caller: Caller,
    Path(topic): Path<String>,
    Query(query): Params,
    payload: Bytes,
) -> Response {
    let outcome = async {
        let retain = flag(&query, "retain")?;
        ops::publish(&state.0.router, &caller, &topic, body_of(&payload), retain).await
    };
    respond(StatusCode::ACCEPTED, outcome.await)
}

/// A message as the JSON the SSE stream and the WebSocket send.
pub fn message_json(message: &Message) -> serde_json::Value {
    serde_json::json!({
        "topic": message.topic.as_str(),
        "payload": payloads::display_payload(&message.payload),
        "retained": message.retained,
        "publisher": message.publisher.principal.to_string(),
    })
}

/// Subscribes as `caller`, with a pattern's error as a failure.
pub async fn subscribe_to(caller: &Caller, pattern: &str) -> Result<Subscription, Failure> {
    caller.bus.subscribe(pattern).await.map_err(|err| match err {
        SubscribeError::InvalidPattern(err) => Failure::bad(format!("pattern {pattern:?}: {err}")),
        SubscribeError::Refused(err) => Failure::call(&err),
    })
}

/// `GET /v1/subscribe?pattern=P`: Server-Sent Events, `message` (retained
/// values first) and `lagged` (messages this subscriber missed), until the
/// client goes away.
pub async fn subscribe(caller: Caller, Query(query): Params) -> Response {
    let pattern = query.get("pattern").map_or(">", String::as_str);
    let subscription = match subscribe_to(&caller, pattern).await {
        Ok(subscription) => subscription,
        Err(failure) => return failure.into_response(),
    };
    let events = futures_util::stream::unfold(subscription, |mut subscription| async move {
        let event = match subscription.next().await? {
            Item::Message(message) => {
                Event::default().event("message").data(message_json(&message).to_string())
            }
            Item::Lagged(missed) => {
                Event::default().event("lagged").data(serde_json::json!({ "missed": missed }).to_string())
            }
        };
        Some((Ok::<_, Infallible>(event), subscription))
    });
    Sse::new(events).keep_alive(KeepAlive::default()).into_response()
}

/// `POST /v1/queues/{queue}/messages?priority=&id=&ttl=`: a put, answered once it is on disk.
pub async fn put(
    caller: Caller,
    Path(queue): Path<String>,
    Query(query): Params,
    payload: Bytes,
) -> Response {
    let outcome = async {
        let ttl = query.get("ttl").map(String::as_str);
        let options = ops::put_options(number(&query, "priority")?, query.get("id").cloned(), ttl)?;
        ops::put(&caller, &queue, body_of(&payload), options).await
    };
    respond(StatusCode::CREATED, outcome.await)
}

/// `GET /v1/queues/{queue}/messages?count=&wait=&lease=`: up to `count`
/// messages, each with the receipt that acks or nacks it.
pub async fn pull(
    Extract(state): Extract<State>,
    caller: Caller,
    Path(queue): Path<String>,
    Query(query): Params,
) -> Response {
    let outcome = async {
        let count = number(&query, "count")?.unwrap_or(1);
        let wait = duration(&query, "wait")?.unwrap_or(Duration::ZERO);
        let lease = duration(&query, "lease")?.unwrap_or(DEFAULT_LEASE);
        state.0.leases.pull(&caller, &queue, count, wait, lease).await
    };
    respond(StatusCode::OK, outcome.await)
}

pub async fn ack(
    Extract(state): Extract<State>,
    caller: Caller,
    Path((queue, receipt)): Path<(String, String)>,
) -> Response {
    respond(StatusCode::OK, state.0.leases.settle(&caller, &queue, &receipt, Settle::Ack).await)
}

/// `POST …/nack?delay=5s`: back to the queue, after the delay.
pub async fn nack(
    Extract(state): Extract<State>,
    caller: Caller,
    Path((queue, receipt)): Path<(String, String)>,
    Query(query): Params,
) -> Response {
    let outcome = async {
        let delay = duration(&query, "delay")?.unwrap_or(Duration::ZERO);
        state.0.leases.settle(&caller, &queue, &receipt, Settle::Nack(delay)).await
    };
    respond(StatusCode::OK, outcome.await)
}

//! `GET /v1/ws`: one WebSocket speaking JSON for everything the HTTP
//! endpoints do, for browsers and languages without a client. The upgrade
//! is a request like any other (its principal from a bearer token or the
//! session cookie; its `Origin` checked like a POST's).
//!
//! The client sends `{"id": N, "op": …}`; every op is answered once with
//! `{"id": N, "ok": VALUE}` or `{"id": N, "error", "message", "status"}`.
//! Ops: `call`, `notify`, `broadcast` (`target`, `payload`, `timeout`,
//! `instance`, `headers`, `all`), `publish` (`topic`, `payload`, `retain`),
//! `subscribe` (`pattern`) and `unsubscribe` (`sub`), `put` (`queue`,
//! `payload`, `priority`, `dedup_id`, `ttl`), `consume` (`queue`,
//! `prefetch`) and `cancel` (`consumer`), `ack` / `nack` (`receipt`,
//! `delay`). A subscription's messages come as `{"sub": ID, "message": …}`
//! or `{"sub": ID, "lagged": N}`, a consumer's as `{"consumer": ID,
//! "delivery": …}` (ID is the op's id). Ops run concurrently; what the
//! socket holds (subscriptions, consumers, unsettled deliveries) ends with
//! it, and unsettled deliveries return to their queues.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::State as Extract;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Value};
use switchboard::{Delivery, Item};
use switchboard_daemon::host::new_secret;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::endpoints::{message_json, subscribe_to};
use crate::leases::Settle;
use crate::ops::{self, delivery_json, Caller, Failure, Outcome, Sending};
use crate::routes::{State, MAX_BODY};

/// The most subscriptions and consumers one socket may hold.
const MAX_STREAMS: usize = 256;
/// Messages waiting to be written to the socket; a reader that falls
/// behind makes its subscriptions lag, never the gateway grow.
const OUTBOX: usize = 1024;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Incoming {
    id: u64,
    op: String,
    target: Option<String>,
    payload: Option<Value>,
    timeout: Option<String>,
    instance: Option<u64>,
    #[serde(default)]
    headers: HashMap<String, String>,
    #[serde(default)]
    all: bool,
    topic: Option<String>,
    #[serde(default)]
    retain: bool,
    pattern: Option<String>,
    sub: Option<u64>,
    queue: Option<String>,
    priority: Option<u8>,
    dedup_id: Option<String>,
    ttl: Option<String>,
    prefetch: Option<u32>,
    consumer: Option<u64>,
    receipt: Option<String>,
    delay: Option<String>,
}

impl Incoming {
    fn need<'a>(&self, field: &'a Option<String>, name: &str) -> Result<&'a str, Failure> {
        field.as_deref().ok_or_else(|| Failure::bad(format!("op {} needs \"{name}\"", self.op)))
    }

    fn payload(&self) -> Option<Vec<u8>> {
        self.payload.as_ref().map(|value| value.to_string().into_bytes())
    }

    fn sending(&self) -> Result<Sending, Failure> {
        let target = self.need(&self.target, "target")?;
        let headers = self.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        Sending::parse(target, self.payload().as_deref(), self.timeout.as_deref(), self.instance, headers)
    }
}

pub async fn upgrade(Extract(state): Extract<State>, caller: Caller, socket: WebSocketUpgrade) -> Response {
    socket.max_message_size(MAX_BODY).on_upgrade(move |socket| Connection::new(state, caller).serve(socket))
}

/// What one socket holds.
struct Connection {
    state: State,
    caller: Caller,
    outbox: mpsc::Sender<Value>,
    outgoing: Option<mpsc::Receiver<Value>>,
    streams: Arc<Mutex<HashMap<u64, JoinHandle<()>>>>,
    unsettled: Arc<Mutex<HashMap<String, Delivery>>>,
    /// Set when the socket ended: an op still running opens no new stream.
    ended: std::sync::atomic::AtomicBool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Connection {
    fn new(state: State, caller: Caller) -> Self {
        let (outbox, outgoing) = mpsc::channel(OUTBOX);
        let streams = Arc::default();
        let (outgoing, unsettled, ended) = (Some(outgoing), Arc::default(), Default::default());
        Self { state, caller, outbox, outgoing, streams, unsettled, ended }
    }

    async fn serve(mut self, socket: WebSocket) {
        use futures_util::{SinkExt, StreamExt};
        let (mut sink, mut stream) = socket.split();
        let Some(mut outgoing) = self.outgoing.take() else { return };
        let writer = tokio::spawn(async move {
            while let Some(value) = outgoing.recv().await {
                if sink.send(WsMessage::Text(value.to_string().into())).await.is_err() {
                    break;
                }
            }
        });
        let this = Arc::new(self);
        while let Some(Ok(frame)) = stream.next().await {
            let text = match frame {
                WsMessage::Text(text) => text,
                WsMessage::Close(_) => break,
                WsMessage::Binary(_) => {
                    let failure = Failure::bad("send JSON text messages");
                    let _ = this.outbox.send(answer(Value::Null, Err(failure))).await;
                    continue;
                }
                _ => continue,
            };
            match serde_json::from_str::<Incoming>(&text) {
                Ok(incoming) => {
                    let this = this.clone();
                    tokio::spawn(async move {
                        let id = json!(incoming.id);
                        let outcome = this.run(incoming).await;
                        let _ = this.outbox.send(answer(id, outcome)).await;
                    });
                }
                Err(err) => {
                    let failure = Failure::bad(format!("not an op: {err}"));
                    let _ = this.outbox.send(answer(Value::Null, Err(failure))).await;
                }
            }
        }
        this.ended.store(true, std::sync::atomic::Ordering::SeqCst);
        for (_, stream) in lock(&this.streams).drain() {
            stream.abort();
        }
        lock(&this.unsettled).clear();
        writer.abort();
    }

    async fn run(&self, incoming: Incoming) -> Outcome {
        let router = &self.state.0.router;
        let caller = &self.caller;
        match incoming.op.as_str() {
            "call" => ops::call(caller, incoming.sending()?).await,
            "notify" => ops::notify(router, caller, incoming.sending()?, incoming.all).await,
            "broadcast" => ops::broadcast(caller, incoming.sending()?).await,
            "publish" => {
                let topic = incoming.need(&incoming.topic, "topic")?;
                ops::publish(router, caller, topic, incoming.payload().as_deref(), incoming.retain).await
            }
            "put" => {
                let queue = incoming.need(&incoming.queue, "queue")?;
                let options = ops::put_options(incoming.priority, incoming.dedup_id.clone(), incoming.ttl.as_deref())?;
                ops::put(caller, queue, incoming.payload().as_deref(), options).await
            }
            "subscribe" => self.subscribe(&incoming).await,
            "consume" => self.consume(&incoming).await,
            "unsubscribe" | "cancel" => {
                let id = if incoming.op == "cancel" { incoming.consumer } else { incoming.sub };
                let id = id.ok_or_else(|| Failure::bad(format!("op {} needs its stream's id", incoming.op)))?;
                let stream = lock(&self.streams).remove(&id);
                let stream = stream.ok_or_else(|| Failure::bad(format!("this socket has no stream {id}")))?;
                stream.abort();
                Ok(json!({ "ended": id }))
            }
            "ack" | "nack" => self.settle(&incoming).await,
            other => Err(Failure::bad(format!(
                "unknown op {other:?}: call, notify, broadcast, publish, subscribe, unsubscribe, put, consume, cancel, ack, nack"
            ))),
        }
    }

    fn room(&self) -> Result<(), Failure> {
        if self.ended.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Failure::bad("the socket has ended"));
        }
        if lock(&self.streams).len() >= MAX_STREAMS {
            return Err(Failure::code(
                switchboard_proto::ErrorCode::Overloaded,
                format!("this socket already holds {MAX_STREAMS} subscriptions and consumers (the limit)"),
            ));
        }
        Ok(())
    }

    /// Keeps a stream's task, or ends it if the socket ended meanwhile
    /// (`serve` sets `ended` before it takes the lock to end them all).
    fn hold(&self, id: u64, task: JoinHandle<()>) {
        let mut streams = lock(&self.streams);
        if self.ended.load(std::sync::atomic::Ordering::SeqCst) {
            task.abort();
        } else if let Some(replaced) = streams.insert(id, task) {
            replaced.abort(); // an op id used twice: the newer stream wins
        }
    }

    async fn subscribe(&self, incoming: &Incoming) -> Outcome {
        self.room()?;
        let pattern = incoming.need(&incoming.pattern, "pattern")?;
        let mut subscription = subscribe_to(&self.caller, pattern).await?;
        let (outbox, sub) = (self.outbox.clone(), incoming.id);
        let forward = tokio::spawn(async move {
            while let Some(item) = subscription.next().await {
                let event = match item {
                    Item::Message(message) => json!({ "sub": sub, "message": message_json(&message) }),
                    Item::Lagged(missed) => json!({ "sub": sub, "lagged": missed }),
                };
                if outbox.send(event).await.is_err() {
                    break;
                }
            }
        });
        self.hold(sub, forward);
        Ok(json!({ "sub": sub, "pattern": pattern }))
    }

    async fn consume(&self, incoming: &Incoming) -> Outcome {
        self.room()?;
        let name = incoming.need(&incoming.queue, "queue")?;
        let queue =
            self.caller.bus.queue(name).map_err(|err| Failure::bad(format!("queue {name:?}: {err}")))?;
        let mut consumer =
            queue.consume(incoming.prefetch.unwrap_or(1)).await.map_err(|e| Failure::call(&e))?;
        let (outbox, unsettled, id) = (self.outbox.clone(), self.unsettled.clone(), incoming.id);
        let forward = tokio::spawn(async move {
            while let Some(delivery) = consumer.next().await {
                let Ok(receipt) = new_secret() else { break };
                let event = json!({ "consumer": id, "delivery": delivery_json(&receipt, &delivery) });
                lock(&unsettled).insert(receipt, delivery);
                if outbox.send(event).await.is_err() {
                    break;
                }
            }
        });
        self.hold(id, forward);
        Ok(json!({ "consumer": id, "queue": name }))
    }

    /// Settles a delivery this socket received, or one pulled over HTTP.
    async fn settle(&self, incoming: &Incoming) -> Outcome {
        let receipt = incoming.need(&incoming.receipt, "receipt")?;
        let delay = incoming.delay.as_deref().map(humantime::parse_duration).transpose();
        let delay = delay.map_err(|err| Failure::bad(format!("delay: {err}")))?.unwrap_or_default();
        let how = if incoming.op == "ack" { Settle::Ack } else { Settle::Nack(delay) };
        let held = lock(&self.unsettled).remove(receipt);
        let Some(delivery) = held else {
            let queue = incoming.need(&incoming.queue, "queue (for a message pulled over HTTP)")?;
            return self.state.0.leases.settle(&self.caller, queue, receipt, how).await;
        };
        how.apply(delivery).await
    }
}

/// The answer to op `id`.
fn answer(id: Value, outcome: Outcome) -> Value {
    match outcome {
        Ok(value) => json!({ "id": id, "ok": value }),
        Err(failure) => {
            let mut body = failure.body();
            body["id"] = id;
            body["status"] = json!(failure.status.as_u16());
            body
        }
    }
}

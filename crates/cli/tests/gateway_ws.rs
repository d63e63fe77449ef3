//! The gateway's WebSocket (`/v1/ws`) against the real daemon: a client
//! calls, subscribes and consumes a queue over one socket, as its token's
//! principal; refusals come back typed; an upgrade from a foreign Origin is
//! refused before it happens; what the socket held returns to the queue
//! when it closes.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::http::free_port;
use support::{Daemon, Guard};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const SHOP: &str = "shop-token-0123456789abcdef";

type Socket = WebSocketStream<TcpStream>;

async fn open(port: u16, origin: Option<&str>) -> Result<Socket, tokio_tungstenite::tungstenite::Error> {
    let mut request = format!("ws://127.0.0.1:{port}/v1/ws").into_client_request().unwrap();
    request.headers_mut().insert("authorization", format!("Bearer {SHOP}").parse().unwrap());
    if let Some(origin) = origin {
        request.headers_mut().insert("origin", origin.parse().unwrap());
    }
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    tokio_tungstenite::client_async(request, tcp).await.map(|(socket, _)| socket)
}

async fn send(socket: &mut Socket, op: Value) {
    socket.send(Message::text(op.to_string())).await.unwrap();
}

/// The next JSON message, within 10 s.
async fn next(socket: &mut Socket) -> Value {
    loop {
        let frame =
            tokio::time::timeout(Duration::from_secs(10), socket.next()).await.unwrap().unwrap().unwrap();
        if let Message::Text(text) = frame {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

/// The socket, and messages read while waiting for others.
struct Ws {
    socket: Socket,
    stash: Vec<Value>,
}

impl Ws {
    async fn send(&mut self, op: Value) {
        send(&mut self.socket, op).await;
    }

    /// The first message (read before or now) that `matches`.
    async fn until(&mut self, matches: impl Fn(&Value) -> bool) -> Value {
        if let Some(at) = self.stash.iter().position(&matches) {
            return self.stash.remove(at);
        }
        loop {
            let message = next(&mut self.socket).await;
            if matches(&message) {
                return message;
            }
            self.stash.push(message);
        }
    }
}

fn answer(id: u64) -> impl Fn(&Value) -> bool {
    move |m| m["id"] == id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_client_calls_subscribes_and_consumes_a_queue() {
    let port = free_port();
    let (daemon, _work) = Daemon::start_with_config(
        &format!(
            "[security]\ntokens = {{ shop = \"{SHOP}\" }}\n\
             [[policy]]\nprincipal = \"token:shop\"\n\
             allow = [\"call shop.>\", \"subscribe orders.>\", \"publish orders.>\", \"queue.put jobs\", \"queue.get jobs\"]\n\
             [gateway]\nlisten = \"127.0.0.1:{port}\"\n"
        ),
        &[],
    );
    let _echo = Guard(daemon.responder(&["shop.echo", "--echo", "-q"]));
    let bus = daemon.bus().await;

    // An upgrade from another site's page never becomes a socket.
    let foreign = open(port, Some("http://evil.example")).await;
    assert!(foreign.is_err_and(|err| err.to_string().contains("403")), "a foreign Origin is refused");

    let socket = open(port, Some(&format!("http://127.0.0.1:{port}"))).await.unwrap();
    let mut ws = Ws { socket, stash: Vec::new() };
    // A call, and a refused one: typed, with its HTTP status.
    ws.send(json!({"id": 1, "op": "call", "target": "shop.echo", "payload": {"a": [1, 2]}})).await;
    assert_eq!(ws.until(answer(1)).await, json!({"id": 1, "ok": {"a": [1, 2]}}));
    ws.send(json!({"id": 2, "op": "call", "target": "billing.charge", "payload": 1})).await;
    let refused = ws.until(answer(2)).await;
    assert_eq!(
        (refused["error"].clone(), refused["status"].clone()),
        (json!("permission_denied"), json!(403))
    );
    ws.send(json!({"id": 3, "op": "levitate"})).await;
    assert_eq!(ws.until(answer(3)).await["error"], "bad_request");
    ws.send(json!({"id": 4, "op": "call"})).await;
    assert!(ws.until(answer(4)).await["message"].as_str().unwrap().contains("target"));

    // A subscription: the retained value, then live ones, tagged with its id.
    bus.publish_with(
        switchboard::Topic::parse("orders.last").unwrap(),
        switchboard::encode(&json!({"id": 6})).unwrap(),
        switchboard::PublishOptions { retain: true, ..Default::default() },
    )
    .await
    .unwrap();
    bus.whoami().await.unwrap(); // the daemon has taken (and retained) it
    ws.send(json!({"id": 10, "op": "subscribe", "pattern": "orders.>"})).await;
    let retained = ws.until(|m| m["sub"] == 10).await;
    assert_eq!(retained["message"]["payload"], json!({"id": 6}));
    assert_eq!(retained["message"]["retained"], true);
    ws.send(json!({"id": 11, "op": "publish", "topic": "orders.new", "payload": {"id": 7}})).await;
    let live = ws.until(|m| m["sub"] == 10 && m["message"]["topic"] == "orders.new").await;
    assert_eq!(live["message"]["publisher"], "token:shop");
    ws.send(json!({"id": 12, "op": "subscribe", "pattern": "secret.>"})).await;
    assert_eq!(ws.until(answer(12)).await["status"], 403);

    // A queue: put two, consume with prefetch 1, ack one and nack the other.
    for (id, n) in [(20, 1), (21, 2)] {
        ws.send(json!({"id": id, "op": "put", "queue": "jobs", "payload": {"n": n}})).await;
        assert!(ws.until(answer(id)).await["ok"]["id"].is_u64());
    }
    ws.send(json!({"id": 30, "op": "consume", "queue": "jobs", "prefetch": 1})).await;
    let first = ws.until(|m| m["consumer"] == 30).await;
    assert_eq!(first["delivery"]["payload"], json!({"n": 1}));
    let receipt = first["delivery"]["receipt"].clone();
    ws.send(json!({"id": 31, "op": "ack", "receipt": receipt})).await;
    assert_eq!(ws.until(answer(31)).await["ok"]["acked"], first["delivery"]["id"]);
    ws.send(json!({"id": 32, "op": "ack", "receipt": receipt, "queue": "jobs"})).await;
    assert_eq!(ws.until(answer(32)).await["error"], "stale_delivery");
    let second = ws.until(|m| m["consumer"] == 30).await;
    assert_eq!(second["delivery"]["payload"], json!({"n": 2}));

    // Closing the socket gives back what it held and did not settle.
    ws.socket.close(None).await.unwrap();
    drop(ws);
    let mut consumer = bus.queue("jobs").unwrap().consume(1).await.unwrap();
    let back = tokio::time::timeout(Duration::from_secs(10), consumer.next()).await.unwrap().unwrap();
    assert_eq!((switchboard::decode::<Value>(&back.payload).unwrap(), back.attempt), (json!({"n": 2}), 2));
}

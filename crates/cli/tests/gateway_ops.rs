//! The gateway's one-way, broadcast, topic, queue and browser-session
//! endpoints against the real daemon (a supervised service included), over
//! plain HTTP on loopback: what each answers, and every refusal with its
//! status — 401, 403, 404, 409, 413, 429, 503 — and the CLI's JSON body.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod support;

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::json;
use support::http::{free_port, Http};
use support::supervised::{bus_aware_cache, supervise};
use switchboard::{Bus, Bytes, Overflow, QueueOptions};
use tokio::sync::mpsc;

const SHOP: &str = "shop-token-0123456789abcdef";
const OPS: &str = "ops-token-0123456789abcdefg";

fn config(port: u16) -> String {
    format!(
        "[security]\ntokens = {{ shop = \"{SHOP}\", ops = \"{OPS}\" }}\n\
         [[policy]]\nprincipal = \"token:shop\"\n\
         allow = [\"call shop.>\", \"notify shop.>\", \"publish orders.>\", \"queue.put jobs\", \"queue.get jobs\"]\n\
         [[policy]]\nprincipal = \"token:ops\"\n\
         allow = [\"call >\", \"notify >\", \"publish >\", \"queue.put >\", \"queue.get >\", \"control >\"]\n\
         [gateway]\nlisten = \"127.0.0.1:{port}\"\n{}",
        bus_aware_cache(0)
    )
}

/// Serves `shop.note` (notifications, passed to the channel) and `shop.who`
/// (answers its instance id), as one instance.
async fn shop(bus: &Bus, notes: mpsc::UnboundedSender<(u64, Bytes)>) -> switchboard::Service {
    bus.serve("shop")
        .unwrap()
        .method("note", move |request| {
            let notes = notes.clone();
            async move {
                let _ = notes.send((request.instance, request.payload));
                Ok(Bytes::new())
            }
        })
        .method("who", |request| async move { Ok(switchboard::encode(&request.instance).unwrap()) })
        .start()
        .await
        .unwrap()
}

/// Asserts status and error kind, and that a message says why.
fn refused(got: (u16, serde_json::Value), status: u16, kind: &str) {
    let (got, body) = got;
    assert_eq!((got, body["error"].as_str().unwrap_or_default()), (status, kind), "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_broadcast_publish_and_queues_over_http() {
    let port = free_port();
    let s = supervise(&config(port));
    s.wait_state("cache", "Running", Duration::from_secs(20));
    let bus = s.daemon.bus().await;
    let (notes, mut noted) = mpsc::unbounded_channel();
    let (_one, _two) = (shop(&bus, notes.clone()).await, shop(&bus, notes).await);
    let mut orders = bus.subscribe("orders.>").await.unwrap();
    let tiny = QueueOptions { max_messages: 1, overflow: Overflow::Reject, ..QueueOptions::default() };
    bus.queue("tiny").unwrap().declare(tiny).await.unwrap();
    let http = Http::on_port(port);

    let http = tokio::task::spawn_blocking(move || {
        // Notifications: one instance, then all; refused when the policy
        // says no or nothing serves the method (the bus would drop it).
        let (status, body) = http.post("/v1/notify/shop/note", Some(SHOP), r#"{"n":1}"#);
        assert_eq!((status, body), (202, json!({"notified": "shop.note", "all": false})));
        assert_eq!(http.post("/v1/notify/shop/note?all=true", Some(SHOP), r#"{"n":2}"#).0, 202);
        refused(http.post("/v1/notify/shop/note", None, "1"), 403, "permission_denied");
        refused(http.post("/v1/notify/cache/get", Some(SHOP), "1"), 403, "permission_denied");
        refused(http.post("/v1/notify/nobody/home", Some(OPS), "1"), 404, "no_such_service");
        refused(http.post("/v1/notify/shop/note?all=maybe", Some(SHOP), "1"), 400, "bad_request");

        // A broadcast: one entry per instance, named.
        let (status, body) = http.post("/v1/broadcast/shop/who", Some(SHOP), "");
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["complete"], true);
        let replies = body["replies"].as_array().unwrap();
        assert_eq!(replies.len(), 2, "{body}");
        for reply in replies {
            assert_eq!(reply["reply"], reply["instance"], "each instance answers its own id: {body}");
        }
        refused(http.post("/v1/broadcast/cache/get", Some(SHOP), ""), 403, "permission_denied");

        // Publications.
        let (status, body) = http.post("/v1/publish/orders.new?retain=true", Some(SHOP), r#"{"id":7}"#);
        assert_eq!((status, body), (202, json!({"published": "orders.new", "retain": true})));
        refused(http.post("/v1/publish/secret.plans", Some(SHOP), "1"), 403, "permission_denied");
        refused(http.post("/v1/publish/orders..new", Some(SHOP), "1"), 400, "bad_request");
        http
    })
    .await
    .unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let (instance, payload) =
            tokio::time::timeout(Duration::from_secs(5), noted.recv()).await.unwrap().unwrap();
        seen.push((instance, switchboard::decode::<serde_json::Value>(&payload).unwrap()));
    }
    seen.sort_by_key(|(instance, note)| (note["n"].as_u64(), *instance));
    assert_eq!(seen.iter().filter(|(_, note)| note["n"] == 2).count(), 2, "`all` reached both: {seen:?}");
    assert_ne!(seen[1].0, seen[2].0);
    let switchboard::Item::Message(order) =
        tokio::time::timeout(Duration::from_secs(5), orders.next()).await.unwrap().unwrap()
    else {
        panic!("a message, not a lag")
    };
    assert_eq!(
        (order.topic.as_str(), order.publisher.principal.to_string()),
        ("orders.new", "token:shop".to_owned())
    );
    let late = bus.subscribe("orders.new").await.unwrap().next().await;
    assert!(
        matches!(late, Some(switchboard::Item::Message(m)) if m.retained),
        "retained for late subscribers"
    );

    tokio::task::spawn_blocking(move || queues_and_controls(&http)).await.unwrap();
}

fn queues_and_controls(http: &Http) {
    // Puts: answered once on disk, with the message's id.
    for (n, priority) in [(1, 0), (2, 9), (3, 0)] {
        let (status, body) = http.post(
            &format!("/v1/queues/jobs/messages?priority={priority}"),
            Some(SHOP),
            &format!("{{\"n\":{n}}}"),
        );
        assert_eq!(status, 201, "{body}");
        assert!(body["id"].as_u64().is_some(), "{body}");
    }
    refused(http.post("/v1/queues/jobs/messages?priority=12", Some(SHOP), "1"), 400, "bad_request");
    refused(http.post("/v1/queues/payroll/messages", Some(SHOP), "1"), 403, "permission_denied");
    assert_eq!(http.post("/v1/queues/tiny/messages", Some(OPS), "1").0, 201);
    refused(http.post("/v1/queues/tiny/messages", Some(OPS), "2"), 429, "queue_full");

    // A pull of two: the highest priority first, each with its receipt.
    let (status, body) = http.get("/v1/queues/jobs/messages?count=2&wait=2s", Some(SHOP));
    assert_eq!(status, 200, "{body}");
    let taken = body["messages"].as_array().unwrap().clone();
    assert_eq!(
        taken.iter().map(|m| m["payload"]["n"].as_u64().unwrap()).collect::<Vec<_>>(),
        [2, 1],
        "{body}"
    );
    let receipt = |at: usize| taken[at]["receipt"].as_str().unwrap().to_owned();
    // Only the principal that took it may settle it, once.
    refused(
        http.post(&format!("/v1/queues/jobs/messages/{}/ack", receipt(0)), Some(OPS), ""),
        409,
        "stale_delivery",
    );
    let (status, body) = http.post(&format!("/v1/queues/jobs/messages/{}/ack", receipt(0)), Some(SHOP), "");
    assert_eq!((status, body["acked"].clone()), (200, taken[0]["id"].clone()), "{body}");
    refused(
        http.post(&format!("/v1/queues/jobs/messages/{}/ack", receipt(0)), Some(SHOP), ""),
        409,
        "stale_delivery",
    );
    let (status, body) = http.post(&format!("/v1/queues/jobs/messages/{}/nack", receipt(1)), Some(SHOP), "");
    assert_eq!(status, 200, "{body}");
    // The pull stopped at two: the third waited for the next, with the nacked one back.
    let (status, body) = http.get("/v1/queues/jobs/messages?count=10&wait=2s", Some(SHOP));
    assert_eq!(status, 200, "{body}");
    let mut again: Vec<(u64, u64)> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["payload"]["n"].as_u64().unwrap(), m["attempt"].as_u64().unwrap()))
        .collect();
    again.sort_unstable();
    assert_eq!(again, [(1, 2), (3, 1)], "{body}");
    let (status, body) = http.get("/v1/queues/jobs/messages?count=1&wait=100ms", Some(SHOP));
    assert_eq!((status, body["messages"].clone()), (200, json!([])), "nothing left, after the wait");
    refused(http.get("/v1/queues/jobs/messages?count=0", Some(SHOP)), 400, "bad_request");
    refused(http.get("/v1/queues/jobs/messages?wait=soon", Some(SHOP)), 400, "bad_request");

    // A supervised service paused through the gateway: its calls are 503.
    let pause = r#"{"service":"cache"}"#;
    refused(http.post("/v1/call/$sys.services/pause", Some(SHOP), pause), 403, "permission_denied");
    assert_eq!(http.post("/v1/call/$sys.services/pause", Some(OPS), pause).0, 200);
    refused(http.post("/v1/call/cache/get", Some(OPS), ""), 503, "service_paused");
    assert_eq!(http.post("/v1/call/$sys.services/continue", Some(OPS), pause).0, 200);
    assert_eq!(http.post("/v1/call/cache/get", Some(OPS), ""), (200, json!("value")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_session_cookie_stands_for_its_token_until_signed_out() {
    let port = free_port();
    let s = supervise(&config(port));
    let http = Http::on_port(port);
    tokio::task::spawn_blocking(move || {
        refused(http.post("/v1/session", None, ""), 401, "permission_denied");
        refused(http.post("/v1/session", Some("not-a-token-0123456789abcdef"), ""), 401, "permission_denied");
        let answer = http.request("POST", "/v1/session", &[&format!("Authorization: Bearer {OPS}")], "");
        assert_eq!((answer.status, answer.json()), (200, json!({"principal": "token:ops"})));
        let set = answer.header("set-cookie").unwrap().to_owned();
        assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"), "{set}");
        let cookie = format!("Cookie: {}", set.split(';').next().unwrap());
        let whoami = http.request("POST", "/v1/call/$sys.daemon/whoami", &[&cookie], "");
        assert_eq!((whoami.status, whoami.json()["principal"].clone()), (200, json!("token:ops")), "{}", whoami.body);
        // A cookie is no way around the Origin check.
        let foreign = http.request("POST", "/v1/call/$sys.daemon/whoami", &[&cookie, "Origin: http://evil.example"], "");
        assert_eq!(foreign.status, 403, "{}", foreign.body);
        assert_eq!(http.request("DELETE", "/v1/session", &[&cookie], "").status, 204);
        let after = http.request("POST", "/v1/call/$sys.daemon/whoami", &[&cookie], "");
        assert_eq!(after.status, 401, "{}", after.body);

        // A body over the gateway's limit: 413 with the JSON body too.
        let mut stream = std::net::TcpStream::connect(&http.addr).unwrap();
        let head = format!(
            "POST /v1/call/cache/get HTTP/1.1\r\nHost: {}\r\nContent-Length: 9000000\r\nConnection: close\r\n\r\n",
            http.addr
        );
        stream.write_all(head.as_bytes()).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(answer.contains(r#""error":"payload_too_large""#), "{answer}");
    })
    .await
    .unwrap();
    drop(s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_waits_for_services_that_start_with_the_daemon_to_settle() {
    let port = free_port();
    let root = if rustix::process::geteuid().is_root() { "run_as_root = true" } else { "" };
    let s = supervise(&format!(
        "[gateway]\nlisten = \"127.0.0.1:{port}\"\n\
         [services.slow]\ncommand = \"sh\"\nargs = [\"-c\", \"sleep 30\"]\nready = \"bus\"\nstart_timeout = \"2s\"\n{root}\n"
    ));
    let http = Http::on_port(port);
    tokio::task::spawn_blocking(move || {
        let (status, body) = http.get("/readyz", None);
        assert_eq!(status, 503, "{body}");
        assert!(body["message"].as_str().unwrap().contains("slow (StartPending)"), "{body}");
        assert_eq!(http.send("GET", "/healthz", &[], "").0, 200, "alive all along");
        // Its start times out: it has settled (as failed), and the daemon is ready.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while http.get("/readyz", None).0 != 200 {
            assert!(std::time::Instant::now() < deadline, "never ready");
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .unwrap();
    drop(s);
}

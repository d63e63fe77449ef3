//! The HTTP gateway against the real daemon, over real loopback TCP with
//! plain HTTP/1.1 requests (what curl sends): calls as the request's
//! principal, every error with its status and the CLI's JSON body, the Host
//! and Origin checks, /metrics, /healthz and /readyz.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::http::{free_port, Http};
use support::{Daemon, Guard};
use switchboard::{Bytes, Reject};

const SHOP: &str = "shop-token-0123456789abcdef";
const OPS: &str = "ops-token-0123456789abcdefg";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_errors_guards_and_metrics_over_http() {
    let port = free_port();
    let (daemon, _work) = Daemon::start_with_config(&format!(
            "[security]\ntokens = {{ shop = \"{SHOP}\", ops = \"{OPS}\" }}\n\
             [[policy]]\nprincipal = \"token:shop\"\nallow = [\"call shop.*\", \"call nobody.*\", \"call slow.*\"]\n\
             [[policy]]\nprincipal = \"token:ops\"\nallow = [\"metrics\"]\n\
             [gateway]\nlisten = \"127.0.0.1:{port}\"\n"
        ), &["--max-frame", "65536"]);
    let _echo = Guard(daemon.responder(&["shop.echo", "--echo", "-q"]));
    let server = daemon.bus().await;
    let _slow = server
        .serve("slow")
        .unwrap()
        .method("wait", |_| async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            Ok::<_, Reject>(Bytes::new())
        })
        .method("refuse", |_| async { Err::<Bytes, _>(Reject::new("not today")) })
        .start()
        .await
        .unwrap();
    // An instance that dies while it holds a call.
    let mut hanging = daemon.responder(&["shop.hang", "--exec", "sleep 10", "-q"]);
    let http = Http::on_port(port);

    let checks = tokio::task::spawn_blocking(move || {
        assert_eq!(http.send("GET", "/healthz", &[], ""), (200, "ok\n".into()));
        assert_eq!(http.send("GET", "/readyz", &[], "").0, 200);

        // A call as the token's principal: JSON in, JSON out.
        let (status, reply) = http.call("/v1/call/shop/echo", Some(SHOP), r#"{"a":[1,2],"b":"x"}"#);
        assert_eq!((status, reply.clone()), (200, serde_json::json!({"a": [1, 2], "b": "x"})), "{reply}");
        // Every failure: its status and {"error", "message"}.
        let expect = |path: &str, token: Option<&str>, body: &str, status: u16, kind: &str| {
            let (got, reply) = http.call(path, token, body);
            assert_eq!((got, reply["error"].as_str().unwrap_or_default()), (status, kind), "{path}: {reply}");
            assert!(reply["message"].as_str().is_some_and(|m| !m.is_empty()), "{reply}");
        };
        expect("/v1/call/shop/echo", None, "1", 403, "permission_denied");
        expect("/v1/call/shop/echo", Some("not-a-token-at-all-0123456789"), "1", 401, "permission_denied");
        expect("/v1/call/nobody/home", Some(SHOP), "1", 404, "no_such_service");
        expect("/v1/call/shop/nosuch", Some(SHOP), "1", 404, "no_such_method");
        expect("/v1/call/slow/wait?timeout=200ms", Some(SHOP), "", 504, "timeout");
        expect("/v1/call/shop/echo", Some(SHOP), "{not json", 400, "bad_request");
        expect("/v1/call/shop/echo?timeout=soon", Some(SHOP), "1", 400, "bad_request");
        let big = format!("\"{}\"", "x".repeat(100_000));
        expect("/v1/call/shop/echo", Some(SHOP), &big, 413, "payload_too_large");
        expect("/v1/call/slow/refuse", Some(SHOP), "", 422, "rejected");
        let killer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            let _ = hanging.kill();
            let _ = hanging.wait();
        });
        expect("/v1/call/shop/hang", Some(SHOP), "", 502, "instance_gone");
        killer.join().unwrap();

        // No cross-site requests, no DNS rebinding.
        let auth = format!("Authorization: Bearer {SHOP}");
        let (status, body) =
            http.send("POST", "/v1/call/shop/echo", &[&auth, "Origin: http://evil.example"], "1");
        assert_eq!(status, 403, "{body}");
        assert!(body.contains("cross-origin"), "{body}");
        let same = format!("Origin: http://{}", http.addr);
        assert_eq!(http.send("POST", "/v1/call/shop/echo", &[&auth, &same], "1").0, 200);
        let (status, body) = http.send("GET", "/healthz", &["Host: evil.example"], "");
        assert_eq!(status, 403, "{body}");

        // Metrics: the `metrics` permission, and they count the calls above.
        let (status, text) = http.send("GET", "/metrics", &[&format!("Authorization: Bearer {OPS}")], "");
        assert_eq!(status, 200, "{text}");
        assert!(
            text.contains(r#"switchboard_calls_total{service="shop",method="echo",path="routed"} 2"#),
            "the two calls that reached it: {text}"
        );
        assert_eq!(http.send("GET", "/metrics", &[&auth], "").0, 403);
    });
    checks.await.unwrap();
}

#[test]
fn a_gateway_off_loopback_is_refused_by_check() {
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("daemon.toml");
    std::fs::write(&config, "[gateway]\nlisten = \"0.0.0.0:8080\"\n").unwrap();
    let out = std::process::Command::new(support::BIN)
        .args(["check", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("not loopback"), "{said}");
}

/// An open `GET /v1/subscribe` response, read as it comes.
struct Events {
    stream: TcpStream,
    seen: String,
}

impl Events {
    fn open(addr: &str, pattern: &str, token: &str) -> Self {
        let mut stream = TcpStream::connect(addr).unwrap();
        let request = format!(
            "GET /v1/subscribe?pattern={pattern} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).unwrap();
        stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        Self { stream, seen: String::new() }
    }

    /// Reads until `text` has come, at most 20 s; what came.
    fn until(&mut self, text: &str) -> &str {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut buf = vec![0u8; 64 * 1024];
        while !self.seen.contains(text) {
            assert!(std::time::Instant::now() < deadline, "no {text:?} in:\n{}", self.seen);
            match self.stream.read(&mut buf) {
                Ok(0) => panic!("the stream ended before {text:?}:\n{}", self.seen),
                Ok(n) => self.seen.push_str(&String::from_utf8_lossy(&buf[..n])),
                Err(_) => {} // the read timeout: try again
            }
        }
        &self.seen
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_streams_retained_then_live_messages_and_says_when_it_lagged() {
    let port = free_port();
    let (daemon, _work) = Daemon::start_with_config(
        &format!(
            "[security]\ntokens = {{ shop = \"{SHOP}\", ops = \"{OPS}\" }}\n\
             [[policy]]\nprincipal = \"token:shop\"\nallow = [\"subscribe db.>\"]\n\
             [gateway]\nlisten = \"127.0.0.1:{port}\"\n"
        ),
        &[],
    );
    let bus = daemon.bus().await;
    bus.publish_with(
        switchboard::Topic::parse("db.config").unwrap(),
        switchboard::encode(&serde_json::json!({"mode": "fast"})).unwrap(),
        switchboard::PublishOptions { retain: true, ..Default::default() },
    )
    .await
    .unwrap();
    // A publication is sent, not confirmed: a round trip after it on the
    // same connection means the daemon has taken it (and retained it).
    bus.whoami().await.unwrap();
    let addr = format!("127.0.0.1:{port}");
    let mut events = tokio::task::spawn_blocking(move || {
        let mut events = Events::open(&addr, "db.%3E", SHOP);
        assert!(events.until("\r\n\r\n").starts_with("HTTP/1.1 200"), "{}", events.seen);
        let seen = events.until("db.config").to_owned();
        assert!(seen.contains("event: message") && seen.contains(r#""retained":true"#), "{seen}");
        assert!(seen.contains(r#""payload":{"mode":"fast"}"#), "{seen}");
        events
    })
    .await
    .unwrap();

    bus.publish("db.orders", switchboard::encode(&1).unwrap()).await.unwrap();
    events = tokio::task::spawn_blocking(move || {
        let seen = events.until("db.orders").to_owned();
        assert!(seen.contains(r#""retained":false"#), "{seen}");
        events
    })
    .await
    .unwrap();

    // A reader that stops reading falls behind, and is told how far.
    let chunk = Bytes::from(vec![b'x'; 4096]);
    for _ in 0..20_000 {
        bus.publish("db.flood", chunk.clone()).await.unwrap();
    }
    tokio::task::spawn_blocking(move || {
        let seen = events.until("event: lagged").to_owned();
        assert!(seen.contains(r#""missed":"#), "{seen}");
    })
    .await
    .unwrap();

    // A pattern the principal may not subscribe to: 403 before any event.
    let http = Http::on_port(port);
    let auth = format!("Authorization: Bearer {SHOP}");
    let (status, body) = tokio::task::spawn_blocking(move || {
        http.send("GET", "/v1/subscribe?pattern=secret.%3E", &[&auth], "")
    })
    .await
    .unwrap();
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("permission_denied"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_names_what_is_served() {
    let port = free_port();
    let (_daemon, _work) =
        Daemon::start_with_config(&format!("[gateway]\nlisten = \"127.0.0.1:{port}\"\n"), &[]);
    let http = Http::on_port(port);
    tokio::task::spawn_blocking(move || {
        let (status, body) = http.send("GET", "/v1/openapi.json", &[], "");
        assert_eq!(status, 200, "{body}");
        let document: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(document["openapi"], "3.1.0");
        let paths: Vec<&String> = document["paths"].as_object().unwrap().keys().collect();
        for path in [
            "/v1/call/{service}/{method}",
            "/v1/subscribe",
            "/metrics",
            "/healthz",
            "/readyz",
            "/v1/openapi.json",
        ] {
            assert!(paths.iter().any(|p| *p == path), "{path} not in {paths:?}");
        }
        // Every path it names is served (a bare GET or POST is not a 404).
        for (path, operations) in document["paths"].as_object().unwrap() {
            let path = path.replace("{service}", "svc").replace("{method}", "m");
            for method in operations.as_object().unwrap().keys() {
                if path == "/v1/subscribe" {
                    continue; // a stream: its answer is tested above
                }
                let (status, body) = http.send(&method.to_uppercase(), &path, &[], "");
                assert!(status != 404 || body.contains("no_such_"), "{method} {path}: {status} {body}");
            }
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_gateway_serves_without_a_config_and_a_second_listen_in_the_file_is_refused() {
    let port = free_port();
    let daemon = Daemon::start_with(&["--gateway", &format!("127.0.0.1:{port}")]);
    let http = Http::on_port(port);
    let answer = tokio::task::spawn_blocking(move || http.request("GET", "/", &[], "")).await.unwrap();
    assert_eq!(answer.status, 200);
    assert!(answer.body.contains("<title>Switchboard</title>"), "the console page");
    assert!(answer.header("content-security-policy").is_some_and(|p| p.contains("default-src 'self'")));
    drop(daemon);

    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("daemon.toml");
    std::fs::write(&config, format!("[gateway]\nlisten = \"127.0.0.1:{}\"\n", free_port())).unwrap();
    let out = std::process::Command::new(support::BIN)
        .args([
            "up",
            "--listen",
            &format!("unix:{}", work.path().join("s").display()),
            "--config",
            config.to_str().unwrap(),
        ])
        .args([
            "--data-dir",
            work.path().join("data").to_str().unwrap(),
            "--gateway",
            &format!("127.0.0.1:{port}"),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("both here and on the command line (--gateway)"), "{said}");
}

//! `switchboard-bench gateway`: what an HTTP call through the gateway costs.
//! In one run, the same sequential 16-byte echo four ways: through the
//! gateway (HTTP → the daemon → the echo service), over the gateway's
//! WebSocket, to a minimal HTTP echo server (hyper), and over the socket (a
//! routed call, as the gateway's own are). Both HTTP cases use the same
//! keep-alive client. The goal:
//! gateway p50 ≤ 1.2 × (echo server p50 + socket call p50).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::children;
use crate::stats::{median, Sample};

/// A keep-alive HTTP/1.1 client on one connection: a request, then its
/// answer read to its `Content-Length`.
struct KeepAlive {
    stream: TcpStream,
    host: String,
    buffer: Vec<u8>,
}

impl KeepAlive {
    fn connect(port: u16) -> anyhow::Result<Self> {
        let stream =
            TcpStream::connect(("127.0.0.1", port)).with_context(|| format!("connect to port {port}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Self { stream, host: format!("127.0.0.1:{port}"), buffer: Vec::with_capacity(4096) })
    }

    /// POSTs `body` to `path`; the answer's body.
    fn post(&mut self, path: &str, body: &str) -> anyhow::Result<Vec<u8>> {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.host,
            body.len()
        );
        self.stream.write_all(request.as_bytes())?;
        self.buffer.clear();
        let mut chunk = [0u8; 4096];
        loop {
            let n = self.stream.read(&mut chunk)?;
            anyhow::ensure!(n > 0, "the server closed the connection");
            self.buffer.extend_from_slice(&chunk[..n]);
            let Some(end) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
            let head = String::from_utf8_lossy(&self.buffer[..end]).to_ascii_lowercase();
            anyhow::ensure!(head.starts_with("http/1.1 200"), "{head}");
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|value| value.trim().parse().ok())
                .context("an answer without Content-Length")?;
            if self.buffer.len() >= end + 4 + length {
                return Ok(self.buffer[end + 4..end + 4 + length].to_vec());
            }
        }
    }
}

/// Sequential POSTs, the first tenth as warm-up.
fn http_latency(port: u16, path: &str, body: &str, samples: usize) -> anyhow::Result<Sample> {
    let mut client = KeepAlive::connect(port)?;
    let mut times = Vec::with_capacity(samples);
    for i in 0..samples + samples / 10 {
        let started = Instant::now();
        let reply = client.post(path, body)?;
        let took = started.elapsed();
        anyhow::ensure!(reply == body.as_bytes(), "echo returned {}", String::from_utf8_lossy(&reply));
        if i >= samples / 10 {
            times.push(took);
        }
    }
    Ok(Sample::latency(times))
}

/// Sequential calls over one WebSocket to the gateway: `{"id", "op":
/// "call"}` out, its answer in.
async fn ws_latency(port: u16, body: &str, samples: usize) -> anyhow::Result<Sample> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.set_nodelay(true)?;
    let url = format!("ws://127.0.0.1:{port}/v1/ws");
    let (mut socket, _) = tokio_tungstenite::client_async(url, tcp).await?;
    let payload: serde_json::Value = serde_json::from_str(body)?;
    let mut times = Vec::with_capacity(samples);
    for i in 0..samples + samples / 10 {
        let op = serde_json::json!({ "id": i, "op": "call", "target": "bench.echo", "payload": payload });
        let started = Instant::now();
        socket.send(Message::text(op.to_string())).await?;
        let answer = loop {
            match socket.next().await.context("the gateway closed the socket")?? {
                Message::Text(text) => break text,
                _ => continue,
            }
        };
        let took = started.elapsed();
        let answer: serde_json::Value = serde_json::from_str(&answer)?;
        anyhow::ensure!(answer["ok"] == payload, "the echo answered {answer}");
        if i >= samples / 10 {
            times.push(took);
        }
    }
    Ok(Sample::latency(times))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub fn run(count: usize, repeats: usize) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("switchboard-bench-gateway-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (gateway_port, echo_port) = (free_port()?, free_port()?);
    let config = dir.join("daemon.toml");
    std::fs::write(
        &config,
        format!(
            "[[policy]]\nprincipal = \"anonymous\"\nallow = [\"call bench.echo\"]\n\
             [gateway]\nlisten = \"127.0.0.1:{gateway_port}\"\n"
        ),
    )?;
    let socket = dir.join("bus.sock");
    let path = |p: &std::path::Path| p.to_str().unwrap_or_default().to_owned();
    let addr = format!("unix:{}", socket.display());
    let data = dir.join("data");
    let _children = [
        children::spawn(&["child-daemon", &path(&socket), &path(&data), "--config", &path(&config)])?,
        children::spawn(&["child-sb-echo", &addr])?,
        children::spawn(&["child-http-echo", &echo_port.to_string()])?,
    ];
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let bus = runtime.block_on(switchboard::Bus::connect(addr.as_str()))?;
    bus.set_direct_calls(false); // as the gateway's calls: through the daemon
    let body = format!("\"{}\"", "x".repeat(14)); // 16 bytes of JSON
    let (mut gateway, mut echo, mut socket_call, mut websocket) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for repeat in 0..repeats {
        // Rotate the order, so no case always runs first on a warm machine.
        for case in (0..4).map(|i| (i + repeat) % 4) {
            match case {
                0 => gateway.push(http_latency(gateway_port, "/v1/call/bench/echo", &body, count)?),
                1 => echo.push(http_latency(echo_port, "/echo", &body, count)?),
                2 => websocket.push(runtime.block_on(ws_latency(gateway_port, &body, count))?),
                _ => socket_call.push(runtime.block_on(crate::workloads::call_latency(
                    bus.clone(),
                    16,
                    count,
                ))?),
            }
        }
    }
    let p50 = |samples: &[Sample]| median(&mut samples.iter().map(|s| s.p50_us).collect::<Vec<_>>());
    let p99 = |samples: &[Sample]| median(&mut samples.iter().map(|s| s.p99_us).collect::<Vec<_>>());
    println!("gateway benchmark: {count} sequential 16 B echo calls per case, median of {repeats} repeats");
    println!("{:<42} {:>10} {:>10}", "case", "p50 µs", "p99 µs");
    for (name, samples) in [
        ("HTTP call through the gateway", &gateway),
        ("WebSocket call through the gateway", &websocket),
        ("HTTP echo server (hyper)", &echo),
        ("socket call through the daemon", &socket_call),
    ] {
        println!("{name:<42} {:>10.1} {:>10.1}", p50(samples), p99(samples));
    }
    let ratio = p50(&gateway) / (p50(&echo) + p50(&socket_call));
    println!("gateway p50 / (echo server p50 + socket call p50) = {ratio:.2} (goal ≤ 1.2)");
    let ratio = p50(&websocket) / (p50(&echo) + p50(&socket_call));
    println!("WebSocket p50 / (echo server p50 + socket call p50) = {ratio:.2}");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

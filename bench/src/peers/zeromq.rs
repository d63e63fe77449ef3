//! ZeroMQ (the distribution's libzmq through the `zmq` crate 0.9, which links
//! it with pkg-config instead of building it from source): REQ/REP and
//! PUB/SUB over `ipc://` — no broker, so it is the floor a brokered bus is
//! judged against for latency, and a peer that drops silently at its
//! high-water mark (default 1,000 messages) for pub/sub.
//!
//! Settings, named because they matter: libzmq defaults (HWM 1,000 each
//! side); the publisher waits 200 ms after binding so subscriptions reach it
//! (ZeroMQ's "slow joiner": a PUB drops what it sends before a SUB's
//! subscription arrived).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::children::{self, Child};
use crate::pubsub::{now_ns, SubReport};
use crate::stats::Sample;

/// A running REP echo and the endpoints the cases use.
pub struct Zmq {
    pub rep: String,
    pub publish: String,
    _echo: Child,
}

impl Zmq {
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        let ipc = |name: &str| -> String { format!("ipc://{}", PathBuf::from(dir).join(name).display()) };
        let rep = ipc("zmq-rep.ipc");
        let echo = children::spawn(&["child-zmq-echo", &rep])?;
        Ok(Self { rep, publish: ipc("zmq-pub.ipc"), _echo: echo })
    }
}

fn ready() -> anyhow::Result<()> {
    println!("ready");
    std::io::stdout().flush()?;
    Ok(())
}

/// Child: a REP socket answering every request with itself.
pub fn echo(endpoint: &str) -> anyhow::Result<()> {
    let context = zmq::Context::new();
    let socket = context.socket(zmq::REP)?;
    socket.bind(endpoint)?;
    ready()?;
    loop {
        let request = socket.recv_bytes(0)?;
        socket.send(request, 0)?;
    }
}

/// Sequential REQ round trips: latency.
pub fn request_latency(endpoint: &str, size: usize, samples: usize) -> anyhow::Result<Sample> {
    let context = zmq::Context::new();
    let socket = context.socket(zmq::REQ)?;
    socket.set_rcvtimeo(5000)?;
    socket.connect(endpoint)?;
    let payload = vec![7u8; size];
    let mut times = Vec::with_capacity(samples);
    for i in 0..samples + samples / 10 {
        let started = Instant::now();
        socket.send(&payload, 0)?;
        let reply = socket.recv_bytes(0)?;
        anyhow::ensure!(reply.len() == size, "echo returned {} bytes", reply.len());
        if i >= samples / 10 {
            times.push(started.elapsed());
        }
    }
    Ok(Sample::latency(times))
}

/// Child: a SUB socket counting what arrives, until `expected` or 2 s of quiet.
pub fn subscriber(endpoint: &str, expected: u64) -> anyhow::Result<()> {
    let context = zmq::Context::new();
    let socket = context.socket(zmq::SUB)?;
    socket.set_subscribe(b"")?;
    let patience =
        |received| i32::try_from(crate::pubsub::patience(received).as_millis()).unwrap_or(i32::MAX);
    socket.set_rcvtimeo(patience(0))?;
    socket.connect(endpoint)?;
    ready()?;
    let mut report = SubReport::default();
    while report.received < expected {
        match socket.recv_bytes(0) {
            Ok(_) => {
                if report.received == 0 {
                    socket.set_rcvtimeo(patience(1))?;
                }
                report.received += 1;
                report.last_ns = now_ns();
            }
            Err(zmq::Error::EAGAIN) => break,
            Err(err) => return Err(err.into()),
        }
    }
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// Child: a PUB socket sending `count` messages as fast as it goes.
pub fn publisher(endpoint: &str, count: u64, size: usize) -> anyhow::Result<()> {
    let context = zmq::Context::new();
    let socket = context.socket(zmq::PUB)?;
    socket.bind(endpoint)?;
    // Let the subscribers' subscriptions arrive (the slow joiner).
    std::thread::sleep(Duration::from_millis(200));
    ready()?;
    let mut go = String::new();
    std::io::stdin().read_line(&mut go)?;
    let payload = vec![7u8; size];
    let start = now_ns();
    for _ in 0..count {
        socket.send(&payload, 0)?;
    }
    println!("{start}");
    // Linger: give queued messages the chance to leave before the context closes.
    socket.set_linger(2000)?;
    Ok(())
}

//! Drives hostile input at a live daemon: arbitrary byte streams, valid
//! handshakes followed by garbage, truncated frames, and well-formed frames
//! with hostile contents (reserved names, unknown ids, other sessions'
//! instances and delivery tags, floods of subscriptions). After every round a
//! well-behaved client must still get its echo back and the daemon process
//! must still run; otherwise the round's input is saved and the run fails.
//!
//! ```sh
//! cargo build --release -p switchboard-cli --examples
//! target/release/examples/fuzz_live --minutes 10
//! ```
//!
//! Every input it sends can be kept (`--corpus DIR`, a bounded sample);
//! `crates/proto/tests/corpus/` holds such a sample, which seeds the
//! decoder's property tests.
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::{Bytes, BytesMut};
use switchboard::Bus;
use switchboard_proto::{
    Broadcast, Call, Frame, Headers, Hello, MethodName, MethodSpec, Notify, Publish, QueueName, QueuePut,
    ServiceName, Topic, TopicPattern, PROTOCOL_VERSION,
};

/// A small, fast, reproducible generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let len = self.below(max as u64 + 1) as usize;
        (0..len).map(|_| self.next() as u8).collect()
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const SERVICES: &[&str] =
    &["fuzz", "$sys.registry", "$sys.services", "$sys.queues", "$sys.daemon", "nosuch", "fuzz.deep"];
const METHODS: &[&str] =
    &["echo", "list", "info", "whoami", "declare", "purge", "peek", "__control", "reload", "x"];
const TOPICS: &[&str] = &["fuzz.t", "sys.services.x", "a.b.c", "fuzz"];
const PATTERNS: &[&str] = &[">", "fuzz.*", "*.*.*", "sys.>", "a.b.c"];

fn hello(rng: &mut Rng) -> Frame {
    let credential = match rng.below(4) {
        0 => "secret:00112233445566778899aabbccddeeff".to_owned(),
        1 => "token:nope".to_owned(),
        2 => String::from_utf8_lossy(&rng.bytes(40)).into_owned(),
        _ => String::new(),
    };
    Frame::Hello(Hello {
        version: PROTOCOL_VERSION,
        features: rng.next() as u32,
        client_name: "fuzz".into(),
        credential,
    })
}

/// A well-formed frame a client could send, with hostile contents.
#[allow(clippy::too_many_lines)] // a table: one arm per frame kind
fn hostile_frame(rng: &mut Rng) -> Option<Frame> {
    let service = ServiceName::parse(rng.pick(SERVICES)).ok()?;
    let method = MethodName::parse(rng.pick(METHODS)).ok()?;
    let size = if rng.below(20) == 0 { 60_000 } else { 64 };
    let payload = Bytes::from(rng.bytes(size));
    let id = match rng.below(3) {
        0 => 0,
        1 => rng.below(4) as u32,
        _ => rng.next() as u32,
    };
    let headers = Headers::new();
    let echo = MethodName::parse("echo").ok()?;
    Some(match rng.below(16) {
        0 => Frame::Call(Call {
            id,
            timeout_ms: rng.below(2000) as u32,
            instance: rng.below(5),
            service,
            method,
            headers,
            payload,
        }),
        1 => Frame::Notify(Notify {
            all: rng.below(2) == 0,
            instance: rng.below(5),
            service,
            method,
            headers,
            payload,
        }),
        2 => Frame::Broadcast(Broadcast {
            id,
            timeout_ms: rng.below(500) as u32,
            service,
            method,
            headers,
            payload,
        }),
        3 => Frame::Register {
            req: id,
            service,
            methods: (0..rng.below(4))
                .map(|_| MethodSpec { name: echo.clone(), signature: String::new() })
                .collect(),
        },
        4 => Frame::Unregister { req: id, instance: rng.below(10) },
        5 => Frame::Reply { id, payload },
        6 => Frame::Error {
            id,
            code: switchboard_proto::ErrorCode::from_u16(rng.below(30) as u16),
            message: "x".into(),
        },
        7 => Frame::Watch { req: id },
        8 => Frame::Subscribe {
            req: id,
            sid: rng.below(8) as u32,
            pattern: TopicPattern::parse(rng.pick(PATTERNS)).ok()?,
        },
        9 => Frame::Unsubscribe { req: id, sid: rng.below(8) as u32 },
        10 => Frame::Publish(Publish {
            retain: rng.below(3) == 0,
            topic: Topic::parse(rng.pick(TOPICS)).ok()?,
            headers,
            payload,
        }),
        11 => Frame::Lagged { sid: rng.below(8) as u32, missed: rng.next() },
        12 => Frame::QueuePut(QueuePut {
            req: id,
            priority: rng.below(10) as u8,
            ttl_ms: rng.below(100) as u32,
            queue: QueueName::parse(if rng.below(2) == 0 { "fuzz.q" } else { "fuzz.q.dlq" }).ok()?,
            dedup_id: String::new(),
            headers,
            payload,
        }),
        13 => Frame::QueueConsume {
            req: id,
            consumer: rng.below(4) as u32,
            prefetch: rng.below(100) as u32,
            queue: QueueName::parse("fuzz.q").ok()?,
        },
        14 => Frame::QueueAck { req: id, tag: rng.below(50) },
        _ => hello(rng),
    })
}

/// One round's input: what is written to one fresh connection.
fn round_input(rng: &mut Rng) -> Vec<u8> {
    let mut buf = BytesMut::new();
    match rng.below(5) {
        0 => return rng.bytes(4096),
        1 => {
            hello(rng).encode(&mut buf);
            buf.extend_from_slice(&rng.bytes(2048));
        }
        2 => {
            hello(rng).encode(&mut buf);
            let mut frame = BytesMut::new();
            if let Some(f) = hostile_frame(rng) {
                f.encode(&mut frame);
            }
            let cut = rng.below(frame.len() as u64) as usize;
            buf.extend_from_slice(&frame[..cut]);
        }
        3 => {
            // A length prefix far larger than what follows, or than any limit.
            hello(rng).encode(&mut buf);
            buf.extend_from_slice(&(rng.next() as u32).to_le_bytes());
            buf.extend_from_slice(&rng.bytes(64));
        }
        _ => {
            hello(rng).encode(&mut buf);
            for _ in 0..rng.below(40) + 1 {
                if let Some(frame) = hostile_frame(rng) {
                    frame.encode(&mut buf);
                }
            }
        }
    }
    buf.to_vec()
}

struct Args {
    minutes: f64,
    seed: u64,
    corpus: Option<PathBuf>,
}

fn args() -> anyhow::Result<Args> {
    let mut args = Args { minutes: 10.0, seed: 0x5eed_1234_abcd_0001, corpus: None };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--minutes" => args.minutes = value()?.parse()?,
            "--seed" => args.seed = value()?.parse()?,
            "--corpus" => args.corpus = Some(PathBuf::from(value()?)),
            "-h" | "--help" => {
                println!("fuzz_live [--minutes M] [--seed S] [--corpus DIR]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    Ok(args)
}

/// The daemon under test, killed (by PID, ours) when dropped.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_daemon(dir: &Path) -> anyhow::Result<(Daemon, PathBuf)> {
    let exe = std::env::current_exe()?;
    let bin = exe.parent().and_then(Path::parent).map(|d| d.join("switchboard")).context("no target dir")?;
    let socket = dir.join("bus.sock");
    let mut child = Command::new(&bin)
        .args(["up", "--max-frame", "65536", "--handshake-timeout", "500ms", "--listen"])
        .arg(format!("unix:{}", socket.display()))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env("SWITCHBOARD_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {} (build it first)", bin.display()))?;
    let mut out = child.stdout.take().context("stdout")?;
    let mut seen = String::new();
    let mut buf = [0u8; 256];
    while !seen.contains("ready") {
        let n = out.read(&mut buf)?;
        if n == 0 {
            bail!("the daemon exited before it was ready");
        }
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    Ok((Daemon(child), socket))
}

fn send(socket: &Path, input: &[u8]) {
    let Ok(mut stream) = UnixStream::connect(socket) else { return };
    let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
    let _ = stream.set_read_timeout(Some(Duration::from_millis(20)));
    let _ = stream.write_all(input);
    let mut sink = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_millis(30);
    while Instant::now() < deadline {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = args()?;
    let dir = tempfile::tempdir()?;
    let (mut daemon, socket) = start_daemon(dir.path())?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let addr = format!("unix:{}", socket.display());
    let bus = runtime.block_on(Bus::connect(&addr))?;
    let _echo =
        runtime.block_on(bus.serve("fuzz")?.method("echo", |r| async move { Ok(r.payload) }).start())?;
    let mut rng = Rng(args.seed | 1);
    let deadline = Instant::now() + Duration::from_secs_f64(args.minutes * 60.0);
    let (mut rounds, mut bytes, mut kept) = (0u64, 0u64, 0usize);
    if let Some(corpus) = &args.corpus {
        std::fs::create_dir_all(corpus)?;
    }
    let mut last_report = Instant::now();
    while Instant::now() < deadline {
        let input = round_input(&mut rng);
        send(&socket, &input);
        rounds += 1;
        bytes += input.len() as u64;
        if let Some(corpus) = &args.corpus {
            if kept < 60 && input.len() <= 8192 && rng.below(50) == 0 {
                std::fs::write(corpus.join(format!("live-{:016x}.bin", rng.next())), &input)?;
                kept += 1;
            }
        }
        let crashed = daemon.0.try_wait()?.map(|status| format!("the daemon exited: {status}"));
        let healthy = match crashed {
            Some(why) => Err(why),
            None if rounds % 20 == 0 => {
                let echo = runtime.block_on(bus.call_with(
                    "fuzz.echo",
                    "alive",
                    switchboard::CallOptions::timeout(Duration::from_secs(5)),
                ));
                echo.map(drop).map_err(|err| format!("the daemon stopped answering: {err}"))
            }
            None => Ok(()),
        };
        if let Err(why) = healthy {
            let path =
                std::env::temp_dir().join(format!("switchboard-fuzz-crash-{}.bin", std::process::id()));
            std::fs::write(&path, &input)?;
            bail!("{why} after {rounds} rounds; the last input is in {}", path.display());
        }
        if last_report.elapsed() > Duration::from_secs(30) {
            eprintln!("{rounds} rounds, {} KiB sent, daemon fine", bytes / 1024);
            last_report = Instant::now();
        }
    }
    println!("{rounds} rounds, {} KiB of hostile input, no crash, every health check answered", bytes / 1024);
    Ok(())
}

//! `switchboard-bench blobs`: what a large call costs as a blob, against its
//! limit and against the socket path, in one run.
//!
//! One round trip at each size, four ways:
//! - **the limit**: two processes and a socket pair, no Switchboard. The
//!   caller makes a memory file, writes the payload into it (the one copy
//!   in), passes its descriptor; the echo passes it back; the caller maps
//!   what came back and reads its first and last bytes (none out).
//! - **blob, direct** and **blob, routed**: the same through Switchboard —
//!   `bus.blob(len)`, fill, seal, call `bench.echo`, which replies with the
//!   request (the same memory file); the caller reads the reply's first and
//!   last bytes. Over the direct channel, and through the daemon.
//! - **socket path**: the same payload as bytes through the daemon, with
//!   blobs off at both ends (`SWITCHBOARD_BLOBS=off`) and a daemon whose
//!   frames fit it.
//!
//! Goals (issue 17): blob ≤ 1.2 × the limit, and ≥ 5 × faster than the
//! socket path at 16 MiB. The sizes below 1 MiB show where a blob starts to
//! win, which is what `switchboard::AUTO_BLOB` should be.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;

use crate::children;
use crate::raw_memfd;
use crate::stats::{median, Sample};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;
/// Sizes measured: where blobs start to win, and the 1 and 16 MiB.
const SIZES: [usize; 7] = [64 * KIB, 128 * KIB, 256 * KIB, 512 * KIB, MIB, 4 * MIB, 16 * MIB];
/// A daemon frame that fits the largest payload on the socket path.
const MAX_FRAME: usize = 32 * MIB;

/// How a caller child sends its payloads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Way {
    BlobDirect,
    BlobRouted,
    Socket,
}

impl Way {
    const ALL: [Way; 3] = [Way::BlobDirect, Way::BlobRouted, Way::Socket];

    fn name(self) -> &'static str {
        match self {
            Way::BlobDirect => "blob-direct",
            Way::BlobRouted => "blob-routed",
            Way::Socket => "socket",
        }
    }

    fn parse(text: &str) -> anyhow::Result<Self> {
        Self::ALL
            .into_iter()
            .find(|way| way.name() == text)
            .context("way: blob-direct, blob-routed or socket")
    }
}

/// Round trips per sample at `size`: about 256 MiB moved, 20 to 500 of them.
fn round_trips(size: usize, quick: bool) -> usize {
    let count = (256 * MIB / size).clamp(20, 500);
    if quick {
        (count / 10).max(5)
    } else {
        count
    }
}

pub fn run(repeats: usize, quick: bool) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("switchboard-bench-blobs-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    // One daemon and echo for blobs, one for the socket path: both serve
    // `bench.echo`, and neither echo may answer the other's callers.
    let (blob_addr, _blob_side) = echo_side(&dir.join("blobs"), "on")?;
    let (socket_addr, _socket_side) = echo_side(&dir.join("socket"), "off")?;
    let raw_socket = dir.join("raw.sock");
    let _raw = children::spawn(&["child-memfd-echo", path(&raw_socket)?])?;
    let raw = UnixStream::connect(&raw_socket).context("connect to the memfd echo")?;

    println!("blob benchmark: call round trips, p50 µs, median of {repeats} repeats");
    println!(
        "{:>8} {:>6} {:>10} {:>12} {:>12} {:>12} {:>9} {:>9}",
        "size", "trips", "limit", "blob direct", "blob routed", "socket", "÷ limit", "socket ÷"
    );
    for size in SIZES {
        let count = round_trips(size, quick);
        let mut samples: [Vec<f64>; 4] = Default::default();
        for repeat in 0..repeats {
            // Rotate the order, so no way always runs first.
            for case in (0..4).map(|i| (i + repeat) % 4) {
                let sample = match case {
                    0 => limit(&raw, size, count)?,
                    1 => caller(&blob_addr, Way::BlobDirect, size, count)?,
                    2 => caller(&blob_addr, Way::BlobRouted, size, count)?,
                    _ => caller(&socket_addr, Way::Socket, size, count)?,
                };
                samples[case].push(sample.p50_us);
            }
        }
        let [limit_us, direct_us, routed_us, socket_us] = samples.map(|mut s| median(&mut s));
        println!(
            "{:>8} {:>6} {:>10.1} {:>12.1} {:>12.1} {:>12.1} {:>9.2} {:>9.2}",
            human(size),
            count,
            limit_us,
            direct_us,
            routed_us,
            socket_us,
            direct_us / limit_us,
            socket_us / routed_us
        );
    }
    println!("÷ limit: blob direct ÷ the limit (goal ≤ 1.2); socket ÷: socket path ÷ blob routed (goal ≥ 5 at 16 MiB)");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn path(path: &std::path::Path) -> anyhow::Result<&str> {
    path.to_str().context("a temporary path that is not UTF-8")
}

/// A daemon (frames up to [`MAX_FRAME`]) in `dir` with a `bench.echo` whose
/// process has `SWITCHBOARD_BLOBS=blobs`; its address and the processes.
fn echo_side(dir: &std::path::Path, blobs: &str) -> anyhow::Result<(String, (children::Child, Running))> {
    std::fs::create_dir_all(dir)?;
    let socket = dir.join("bus.sock");
    let addr = format!("unix:{}", socket.display());
    let frame = MAX_FRAME.to_string();
    let daemon =
        children::spawn(&["child-daemon", path(&socket)?, path(&dir.join("data"))?, "--max-frame", &frame])?;
    let echo = spawn_child(&["child-sb-echo", &addr], &[("SWITCHBOARD_BLOBS", blobs)])?;
    Ok((addr, (daemon, echo)))
}

fn human(size: usize) -> String {
    if size >= MIB {
        format!("{} MiB", size / MIB)
    } else {
        format!("{} KiB", size / KIB)
    }
}

/// The limit: `count` raw memfd round trips through the memfd echo.
fn limit(echo: &UnixStream, size: usize, count: usize) -> anyhow::Result<Sample> {
    let mut latencies = Vec::with_capacity(count);
    for round in 0..count {
        let mark = round as u8;
        let start = Instant::now();
        let file = raw_memfd::filled(size, mark)?;
        raw_memfd::send_fd(echo, file.as_fd())?;
        drop(file);
        let back = raw_memfd::recv_fd(echo)?;
        let (first, last) = raw_memfd::first_and_last(&back, size)?;
        anyhow::ensure!(first == mark && last == mark, "the echo returned other bytes");
        latencies.push(start.elapsed());
    }
    Ok(Sample::latency(latencies))
}

/// Child: accepts one connection on `socket` and passes back every
/// descriptor that arrives on it.
pub fn memfd_echo(socket: &std::path::Path) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket)?;
    println!("ready");
    std::io::stdout().flush()?;
    let (stream, _) = listener.accept()?;
    loop {
        let fd: OwnedFd = match raw_memfd::recv_fd(&stream) {
            Ok(fd) => fd,
            Err(_) => return Ok(()), // the bench is done
        };
        raw_memfd::send_fd(&stream, fd.as_fd())?;
    }
}

/// Runs a caller child the way `way` says and returns its sample.
fn caller(addr: &str, way: Way, size: usize, count: usize) -> anyhow::Result<Sample> {
    let blobs = if way == Way::Socket { "off" } else { "on" };
    let args = ["child-blob-caller", addr, way.name(), &size.to_string(), &count.to_string()];
    let mut child = spawn_child(&args, &[("SWITCHBOARD_BLOBS", blobs)])?;
    let mut line = String::new();
    child.1.read_line(&mut line)?;
    let nanos: Vec<u64> =
        serde_json::from_str(line.trim()).with_context(|| format!("caller said {line:?}"))?;
    Ok(Sample::latency(nanos.into_iter().map(Duration::from_nanos).collect()))
}

/// Child: `count` sequential round trips of `size` bytes to `bench.echo`,
/// sent `way`; prints the latencies in nanoseconds as one JSON line.
pub fn blob_caller(addr: &str, way: &str, size: usize, count: usize) -> anyhow::Result<()> {
    let way = Way::parse(way)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let bus = switchboard::Bus::connect(addr).await?;
        bus.set_direct_calls(way == Way::BlobDirect);
        println!("ready");
        std::io::stdout().flush()?;
        let mut nanos = Vec::with_capacity(count);
        for round in 0..count {
            let mark = round as u8;
            let start = Instant::now();
            let payload = if way == Way::Socket {
                Bytes::from(vec![mark; size])
            } else {
                let mut blob = bus.blob(size)?;
                blob.fill(mark);
                Bytes::from(blob.seal()?)
            };
            let reply = bus.call("bench.echo", payload).await?;
            anyhow::ensure!(
                reply.len() == size && reply[0] == mark && reply[size - 1] == mark,
                "a wrong echo"
            );
            nanos.push(start.elapsed().as_nanos() as u64);
        }
        println!("{}", serde_json::to_string(&nanos)?);
        Ok(())
    })
}

/// A child of this binary and its output, killed when dropped.
struct Running(std::process::Child, BufReader<std::process::ChildStdout>);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a child of this binary with `env` set, once it said `ready`.
fn spawn_child(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Running> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let out = BufReader::new(child.stdout.take().context("child stdout")?);
    let mut running = Running(child, out);
    let mut line = String::new();
    running.1.read_line(&mut line)?;
    anyhow::ensure!(line.trim() == "ready", "{args:?} did not start: {line:?}");
    Ok(running)
}

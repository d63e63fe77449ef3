//! `switchboard-bench`: the same workloads on Switchboard and on its
//! baselines, in one run, reported as medians of repeats and as ratios.
//!
//! `cargo run --release -p switchboard-bench -- all` runs everything;
//! `--quick` finishes in well under a minute (the test suite's smoke run).
// Only `raw_memfd` (the blob benchmark's limit) maps memory itself.
#![deny(unsafe_code)]

mod blob_fanout;
mod blobs;
mod children;
mod fleet;
mod gateway;
mod load;
mod netns;
mod peers;
mod pubsub;
mod python;
mod queues;
mod raw_memfd;
mod stats;
mod supervision;
mod workloads;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use stats::Row;

#[derive(Parser)]
#[command(name = "switchboard-bench", about = "Switchboard against its baselines, in one run")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every workload, print the table and write the JSON rows.
    All {
        /// Small counts and 3 repeats: checks every case runs (under a minute).
        #[arg(long)]
        quick: bool,
        /// Repeats per case (at least 3; default 5, or 3 with --quick).
        #[arg(long)]
        repeats: Option<usize>,
        /// Where to write the rows as JSON.
        #[arg(long, default_value = "bench-results.json")]
        out: PathBuf,
        /// Only workload groups whose name contains this (limit, call, pubsub, queue,
        /// store, policy, supervisor, python).
        #[arg(long, value_name = "GROUP")]
        only: Option<String>,
        /// Where the daemon keeps queue data. Must be on the disk being
        /// judged (not a tmpfs).
        #[arg(long, default_value = "target/bench-data")]
        data_dir: PathBuf,
        /// Fail instead of skipping a peer that is not installed.
        #[arg(long)]
        require_peers: bool,
        /// A `switchboard` binary of another build (say, the commit before a
        /// change, built into its own target directory) to run beside this
        /// build's daemon: the call, pub/sub and queue cases run on both,
        /// alternately, and its rows carry this build ÷ that one. Give this
        /// build's own binary to measure the A/A spread.
        #[arg(long, value_name = "SWITCHBOARD")]
        baseline_daemon: Option<PathBuf>,
    },
    /// Sequential 16 B calls to `bench.echo` on a running daemon, for
    /// profiling (`strace -c`, `perf`) one side at a time.
    Profile {
        /// Daemon address; a `child-sb-echo` must be serving there.
        #[arg(long)]
        addr: String,
        #[arg(long, default_value_t = 20_000)]
        count: usize,
        /// Keep this many calls outstanding (64 profiles the throughput case).
        #[arg(long, default_value_t = 1)]
        in_flight: usize,
        /// Every call through the daemon (no direct channel).
        #[arg(long)]
        routed: bool,
    },
    /// An HTTP call through the gateway against a minimal HTTP echo server
    /// (hyper) plus a call over the socket, in one run: medians of repeats.
    Gateway {
        #[arg(long, default_value_t = 5_000)]
        count: usize,
        #[arg(long, default_value_t = 3)]
        repeats: usize,
    },
    /// 64 KiB to 16 MiB call round trips as blobs (over a direct channel and
    /// through the daemon) against the limit (a raw memfd round trip between
    /// two processes) and against the socket path: medians of repeats.
    /// A 1 MiB publication to 4 subscriber processes as a blob, written
    /// and checksummed whole, against iceoryx2's loaned samples (built with
    /// `--features iceoryx2`, which needs libclang): medians of repeats.
    BlobFanout {
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// 20 publications per run instead of 300 (the test suite's smoke run).
        #[arg(long)]
        quick: bool,
    },
    Blobs {
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// Fewer round trips per sample (the test suite's smoke run).
        #[arg(long)]
        quick: bool,
    },
    /// A call across hosts of a fleet (three NATS servers, three daemons)
    /// against a plain NATS request, a fleet broadcast to 3 hosts × 10
    /// instances, and a local call with the fleet joined and not: medians of
    /// repeats. Needs nats-server.
    Fleet {
        #[arg(long, default_value_t = 3_000)]
        count: usize,
        #[arg(long, default_value_t = 3)]
        repeats: usize,
    },
    #[command(hide = true)]
    ChildHttpEcho { port: u16 },
    #[command(hide = true)]
    ChildRawEcho { socket: PathBuf, size: usize },
    /// Runs a peer's server; ends it when the bench dies.
    #[command(hide = true)]
    ChildExec {
        /// Say ready once this loopback port accepts connections.
        #[arg(long)]
        wait_port: Option<u16>,
        /// Say ready once this path exists (a Unix socket).
        #[arg(long)]
        wait_path: Option<PathBuf>,
        /// KEY=VALUE set in the server's environment (repeatable).
        #[arg(long)]
        env: Vec<String>,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    #[command(hide = true)]
    ChildNatsEcho { url: String },
    #[command(hide = true)]
    ChildMemfdEcho { socket: PathBuf },
    #[command(hide = true)]
    ChildBlobCaller { addr: String, way: String, size: usize, count: usize },
    #[command(hide = true)]
    ChildDbusEcho { address: String },
    #[command(hide = true)]
    ChildNatsSub { url: String, expected: u64 },
    #[command(hide = true)]
    ChildNatsPub { url: String, count: u64, size: usize },
    #[command(hide = true)]
    ChildRawRelay { socket: PathBuf, upstream: PathBuf },
    #[command(hide = true)]
    ChildDaemon {
        socket: PathBuf,
        data_dir: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
        /// Largest frame, for payloads past the default on the socket path.
        #[arg(long)]
        max_frame: Option<u32>,
    },
    #[command(hide = true)]
    ChildZmqEcho { endpoint: String },
    #[command(hide = true)]
    ChildZmqSub { endpoint: String, expected: u64 },
    #[command(hide = true)]
    ChildZmqPub { endpoint: String, count: u64, size: usize },
    #[command(hide = true)]
    ChildNotifyReady,
    #[command(hide = true)]
    ChildIdle,
    #[command(hide = true)]
    ChildSbEcho {
        addr: String,
        /// Instances to register on the one connection.
        #[arg(long, default_value_t = 1)]
        instances: usize,
    },
    #[command(hide = true)]
    ChildBlobSub { addr: String, count: usize },
    #[command(hide = true)]
    ChildIceSub { service: String, count: usize },
    #[command(hide = true)]
    ChildSbSub {
        addr: String,
        expected: u64,
        #[arg(action = clap::ArgAction::Set)]
        latency: bool,
    },
    #[command(hide = true)]
    ChildSbPub { addr: String, count: u64, size: usize, gap_us: u64 },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::All { quick, repeats, out, only, data_dir, require_peers, baseline_daemon } => {
            let repeats = repeats.unwrap_or(if quick { 3 } else { 5 }).max(3);
            let options = workloads::RunOptions {
                quick,
                repeats,
                only: only.as_deref(),
                data_root: &data_dir,
                require_peers,
                baseline_daemon: baseline_daemon.as_deref(),
            };
            all(&options, &out)
        }
        Command::Profile { addr, count, in_flight, routed } => {
            workloads::profile(&addr, count, in_flight, routed)
        }
        Command::Gateway { count, repeats } => gateway::run(count, repeats.max(1)),
        Command::Fleet { count, repeats } => fleet::run(count, repeats.max(1)),
        Command::Blobs { repeats, quick } => blobs::run(repeats.max(1), quick),
        Command::BlobFanout { repeats, quick } => blob_fanout::run(repeats.max(1), quick),
        child => run_child(child),
    }
}

/// Runs `child` in a process that exits when the bench does.
fn orphan_safe(child: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<()> {
    children::exit_with_parent();
    child()
}

/// Runs one of the hidden `child-…` commands: a process a benchmark starts.
fn run_child(command: Command) -> anyhow::Result<()> {
    match command {
        Command::All { .. }
        | Command::Profile { .. }
        | Command::Gateway { .. }
        | Command::Fleet { .. }
        | Command::Blobs { .. }
        | Command::BlobFanout { .. } => anyhow::bail!("not a child process's command"),
        Command::ChildMemfdEcho { socket } => {
            children::exit_with_parent();
            blobs::memfd_echo(&socket)
        }
        Command::ChildBlobCaller { addr, way, size, count } => {
            children::exit_with_parent();
            blobs::blob_caller(&addr, &way, size, count)
        }
        Command::ChildHttpEcho { port } => {
            children::exit_with_parent();
            children::http_echo(port)
        }
        // Not `exit_with_parent`: exec must stop its server before it exits.
        Command::ChildExec { wait_port, wait_path, env, command } => {
            children::exec(&command, &env, wait_port, wait_path.as_deref())
        }
        Command::ChildDbusEcho { address } => {
            children::exit_with_parent();
            peers::dbus::echo(&address)
        }
        Command::ChildNatsEcho { url } => {
            children::exit_with_parent();
            peers::nats::echo(&url)
        }
        Command::ChildNatsSub { url, expected } => {
            children::exit_with_parent();
            peers::nats::subscriber(&url, expected)
        }
        Command::ChildNatsPub { url, count, size } => {
            children::exit_with_parent();
            peers::nats::publisher(&url, count, size)
        }
        Command::ChildRawEcho { socket, size } => {
            children::exit_with_parent();
            children::raw_echo(&socket, size)
        }
        Command::ChildRawRelay { socket, upstream } => {
            children::exit_with_parent();
            children::raw_relay(&socket, &upstream)
        }
        Command::ChildDaemon { socket, data_dir, config, max_frame } => {
            children::exit_with_parent();
            children::daemon(&socket, &data_dir, config, max_frame)
        }
        Command::ChildZmqEcho { endpoint } => {
            children::exit_with_parent();
            peers::zeromq::echo(&endpoint)
        }
        Command::ChildZmqSub { endpoint, expected } => {
            children::exit_with_parent();
            peers::zeromq::subscriber(&endpoint, expected)
        }
        Command::ChildZmqPub { endpoint, count, size } => {
            children::exit_with_parent();
            peers::zeromq::publisher(&endpoint, count, size)
        }
        // Supervised by the daemon, which kills them when it goes.
        Command::ChildNotifyReady => supervision::notify_ready(),
        Command::ChildIdle => supervision::idle(),
        Command::ChildSbEcho { addr, instances } => {
            children::exit_with_parent();
            children::sb_echo(&addr, instances)
        }
        Command::ChildBlobSub { addr, count } => orphan_safe(|| blob_fanout::sb_subscriber(&addr, count)),
        Command::ChildIceSub { service, count } => {
            orphan_safe(|| peers::iceoryx2::subscriber(&service, count))
        }
        Command::ChildSbSub { addr, expected, latency } => {
            orphan_safe(|| pubsub::subscriber(&addr, expected, latency))
        }
        Command::ChildSbPub { addr, count, size, gap_us } => {
            children::exit_with_parent();
            pubsub::publisher(&addr, count, size, gap_us)
        }
    }
}

/// `all`: runs, prints the table, writes the rows, checks every case ran.
fn all(options: &workloads::RunOptions<'_>, out: &std::path::Path) -> anyhow::Result<()> {
    let rows = workloads::run_all(options)?;
    stats::print_table(&rows);
    if cfg!(debug_assertions) {
        println!("\n(debug build: these numbers only show that every case runs; measure with --release)");
    }
    std::fs::write(out, serde_json::to_string_pretty(&rows)?)?;
    println!("\nrows written to {}", out.display());
    check_complete(&rows)
}

/// Every case must have produced numbers; this is what `--quick` checks.
fn check_complete(rows: &[Row]) -> anyhow::Result<()> {
    let broken: Vec<&str> = rows
        .iter()
        .filter(|r| !(r.rate_per_s.is_finite() && r.rate_per_s > 0.0))
        .map(|r| r.case.as_str())
        .collect();
    if broken.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("cases without numbers: {broken:?}")
    }
}

//! The workloads, each run on Switchboard and on its baseline, alternating
//! within every repeat so machine noise hits both alike.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use switchboard::{Bus, Target};

use crate::children::{self, Child};
use crate::stats::{Row, Sample};

/// The peers' system names, as rows carry them.
const PEERS: [&str; 4] = ["nats", "dbus", "zeromq", "rabbitmq"];
const RABBIT: &str = "rabbitmq (durable, persistent, confirms)";
const NATS_REQUEST: &str = "nats request";
/// Switchboard as a user gets it: calls take a direct channel when granted.
const SWITCHBOARD: &str = "switchboard";
/// Every call through the daemon (direct channels off).
const SWITCHBOARD_ROUTED: &str = "switchboard routed";
/// The same, on the daemon binary given as `--baseline-daemon`.
const BASELINE: &str = "switchboard, baseline build";
const BASELINE_ROUTED: &str = "switchboard routed, baseline build";
const ZMQ_REQ: &str = "zeromq req/rep (ipc)";
const ZMQ_PUBSUB: &str = "zeromq pub/sub (ipc)";

/// Calls kept in flight in the throughput case.
const IN_FLIGHT: usize = 64;

struct Counts {
    latency_samples: usize,
    throughput_calls: usize,
    /// Messages delivered in total per pub/sub throughput run.
    pubsub_messages: u64,
    /// Paced messages per fan-out latency run.
    fanout_messages: u64,
    /// Confirmed puts per run, and messages per end-to-end run.
    queue_puts: usize,
    queue_e2e: usize,
    /// Python on both ends: round trips, calls at 64 in flight, messages.
    python_calls: usize,
    python_rate_calls: usize,
    python_messages: u64,
}

/// Everything the workloads talk to, started once per run.
struct Setup {
    dir: PathBuf,
    data_dir: PathBuf,
    _children: Vec<Child>,
    raw_echo: [PathBuf; 2],
    relay: [PathBuf; 2],
    bus_addr: String,
    /// The baseline build's daemon, with its own echo service.
    baseline_addr: Option<String>,
}

const SIZES: [usize; 2] = [16, 1024];

fn size_name(size: usize) -> &'static str {
    if size == 16 {
        "16 B"
    } else {
        "1 KiB"
    }
}

impl Setup {
    fn start(data_root: &Path, baseline: Option<&Path>) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("switchboard-bench-{}", std::process::id()));
        let data_dir = data_root.join(format!("run-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let mut kids = Vec::new();
        let mut raw_echo = [PathBuf::new(), PathBuf::new()];
        let mut relay = [PathBuf::new(), PathBuf::new()];
        for (i, size) in SIZES.iter().enumerate() {
            raw_echo[i] = dir.join(format!("echo-{size}.sock"));
            relay[i] = dir.join(format!("relay-{size}.sock"));
            kids.push(children::spawn(&["child-raw-echo", path(&raw_echo[i]), &size.to_string()])?);
            kids.push(children::spawn(&["child-raw-relay", path(&relay[i]), path(&raw_echo[i])])?);
        }
        let bus_socket = dir.join("bus.sock");
        kids.push(children::spawn(&["child-daemon", path(&bus_socket), path(&data_dir)])?);
        let bus_addr = format!("unix:{}", bus_socket.display());
        kids.push(children::spawn(&["child-sb-echo", &bus_addr])?);
        let baseline_addr = match baseline {
            Some(binary) => {
                let socket = dir.join("baseline.sock");
                let data = data_dir.join("baseline");
                let listen = format!("unix:{}", socket.display());
                let command = [
                    "child-exec",
                    "--wait-path",
                    path(&socket),
                    "--",
                    path(binary),
                    "up",
                    "--listen",
                    &listen,
                ];
                kids.push(children::spawn(&[&command[..], &["--data-dir", path(&data)]].concat())?);
                kids.push(children::spawn(&["child-sb-echo", &listen])?);
                Some(listen)
            }
            None => None,
        };
        Ok(Self { dir, data_dir, _children: kids, raw_echo, relay, bus_addr, baseline_addr })
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

/// One daemon and echo service whose config is switched between no policy
/// and a policy of 20 rules (19 denies the calls do not match, and an
/// allow), by reloading: same processes, so only the policy differs. Calls
/// are routed: on a direct channel the policy is checked once, at the grant,
/// and this case is about the check in front of every routed call.
struct PolicyBench {
    _children: Vec<Child>,
    bus: Bus,
    config: PathBuf,
}

impl PolicyBench {
    fn start(dir: &Path, runtime: &tokio::runtime::Runtime) -> anyhow::Result<Self> {
        let config = dir.join("policy.toml");
        std::fs::write(&config, "")?;
        let socket = dir.join("policy.sock");
        let data = dir.join("policy-data");
        let daemon =
            children::spawn(&["child-daemon", path(&socket), path(&data), "--config", path(&config)])?;
        let addr = format!("unix:{}", socket.display());
        let echo = children::spawn(&["child-sb-echo", &addr])?;
        let bus = runtime.block_on(Bus::connect(&addr))?;
        bus.set_direct_calls(false);
        Ok(Self { _children: vec![daemon, echo], bus, config })
    }

    async fn set(&self, rules: bool) -> anyhow::Result<()> {
        let text = if rules {
            let denies: Vec<String> = (0..19).map(|i| format!("\"call other{i}.*\"")).collect();
            format!(
                "[[policy]]\nprincipal = \"*\"\nallow = [\"call bench.*\"]\ndeny = [{}]\n",
                denies.join(", ")
            )
        } else {
            String::new()
        };
        std::fs::write(&self.config, text)?;
        self.bus.call("$sys.services.reload", Bytes::new()).await?;
        Ok(())
    }

    /// Latency without, then with, the policy (the other way round on odd repeats).
    async fn measure(&self, samples: usize, repeat: usize) -> anyhow::Result<(Sample, Sample)> {
        let mut results = [None, None];
        let order = if repeat.is_multiple_of(2) { [false, true] } else { [true, false] };
        for rules in order {
            self.set(rules).await?;
            results[usize::from(rules)] = Some(call_latency(self.bus.clone(), 16, samples).await?);
        }
        let [plain, checked] = results;
        Ok((plain.context("no sample")?, checked.context("no sample")?))
    }
}

/// One case's samples across repeats.
struct Case {
    group: &'static str,
    name: String,
    system: &'static str,
    samples: Vec<Sample>,
    lost_pct: Vec<f64>,
}

/// Samples gathered per case across repeats, in first-seen order.
#[derive(Default)]
struct Collected {
    cases: Vec<Case>,
}

impl Collected {
    fn add(
        &mut self,
        group: &'static str,
        name: String,
        system: &'static str,
        sample: Sample,
        lost_pct: Option<f64>,
    ) {
        let at = match self.cases.iter().position(|c| c.name == name && c.system == system) {
            Some(at) => at,
            None => {
                self.cases.push(Case { group, name, system, samples: Vec::new(), lost_pct: Vec::new() });
                self.cases.len() - 1
            }
        };
        self.cases[at].samples.push(sample);
        self.cases[at].lost_pct.extend(lost_pct);
    }

    fn rows(self) -> Vec<Row> {
        let mut rows: Vec<Row> = self
            .cases
            .into_iter()
            .map(|mut case| {
                let mut row = Row::from_samples(case.group, &case.name, case.system, &case.samples);
                if !case.lost_pct.is_empty() {
                    row.lost_pct = Some(crate::stats::median(&mut case.lost_pct));
                }
                row
            })
            .collect();
        compare_with_switchboard(&mut rows);
        // The queue store against redb: by rate.
        let redb = rows.iter().find(|r| r.group == "store" && r.system == "redb").map(|r| r.rate_per_s);
        if let (Some(redb), Some(log)) =
            (redb, rows.iter_mut().find(|r| r.group == "store" && r.system == "segment log"))
        {
            log.ratio = Some(log.rate_per_s / redb);
            log.baseline = Some("redb".into());
            log.ratio_of = Some("rate");
        }
        // Calls are judged against their raw limit of the same payload size:
        // a direct call against one hop, a routed one against the relay's two.
        for size in SIZES {
            let s = size_name(size);
            for (system, limit) in [(SWITCHBOARD, "unix ping-pong"), (SWITCHBOARD_ROUTED, "two-hop relay")] {
                let limit = format!("{limit} {s}");
                let Some(p50) = rows.iter().find(|r| r.case == limit).map(|r| r.p50_us) else {
                    continue;
                };
                let case = format!("call round trip {s}");
                if let Some(call) = rows.iter_mut().find(|r| r.case == case && r.system == system) {
                    call.ratio = Some(call.p50_us / p50);
                    call.baseline = Some(limit);
                    call.ratio_of = Some("p50");
                }
            }
        }
        // The policy: checked calls against unchecked ones.
        let unchecked = rows.iter().find(|r| r.system == "no policy").map(|r| r.p50_us);
        if let (Some(p50), Some(row)) = (unchecked, rows.iter_mut().find(|r| r.system == "20-rule policy")) {
            (row.ratio, row.baseline, row.ratio_of) =
                (Some(row.p50_us / p50), Some("no policy".into()), Some("p50"));
        }
        // The supervisor: restart against spawning directly, memory against none.
        let raw_spawn = rows.iter().find(|r| r.system == "raw spawn").map(|r| (r.case.clone(), r.p50_us));
        if let Some((case, p50)) = raw_spawn {
            if let Some(row) = rows.iter_mut().find(|r| r.case == case && r.system == SWITCHBOARD) {
                (row.ratio, row.baseline, row.ratio_of) =
                    (Some(row.p50_us / p50), Some("raw spawn".into()), Some("p50"));
            }
        }
        let bare = rows
            .iter()
            .find(|r| r.case.ends_with(", 0 idle services"))
            .map(|r| (r.case.clone(), r.rate_per_s));
        if let Some((case, none)) = bare {
            if let Some(row) =
                rows.iter_mut().find(|r| r.group == "supervisor" && r.case.ends_with("200 idle services"))
            {
                (row.ratio, row.baseline, row.ratio_of) =
                    (Some(row.rate_per_s / none), Some(case), Some("RSS"));
            }
        }
        rows
    }
}

/// Every peer row (and the baseline build's) gets Switchboard ÷ it for the
/// same case.
fn compare_with_switchboard(rows: &mut [Row]) {
    // Every peer row gets Switchboard ÷ peer for the same case.
    let switchboard: Vec<(String, f64, f64)> = rows
        .iter()
        .filter(|r| r.system == SWITCHBOARD)
        .map(|r| (r.case.clone(), r.p50_us, r.rate_per_s))
        .collect();
    let routed: Vec<(String, f64, f64)> = rows
        .iter()
        .filter(|r| r.system == SWITCHBOARD_ROUTED)
        .map(|r| (r.case.clone(), r.p50_us, r.rate_per_s))
        .collect();
    let compared = |system: &str| PEERS.iter().any(|p| system.starts_with(p)) || system == BASELINE;
    for row in rows.iter_mut().filter(|r| compared(&r.system) || r.system == BASELINE_ROUTED) {
        let ours = if row.system == BASELINE_ROUTED { &routed } else { &switchboard };
        let Some((_, p50, rate)) = ours.iter().find(|(case, _, _)| *case == row.case) else {
            continue;
        };
        let by_rate =
            row.case.contains("in flight") || row.case.contains("received") || row.case.contains("put");
        if by_rate {
            row.ratio = Some(rate / row.rate_per_s);
            row.ratio_of = Some("rate");
        } else {
            row.ratio = Some(p50 / row.p50_us);
            row.ratio_of = Some("p50");
        }
        row.baseline = Some(row.system.clone());
    }
}

/// What `all` was asked to run.
pub struct RunOptions<'a> {
    pub quick: bool,
    pub repeats: usize,
    pub only: Option<&'a str>,
    pub data_root: &'a Path,
    pub require_peers: bool,
    pub baseline_daemon: Option<&'a Path>,
}

impl Counts {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                latency_samples: 2_000,
                throughput_calls: 20_000,
                pubsub_messages: 50_000,
                fanout_messages: 200,
                queue_puts: 20_000,
                queue_e2e: 10_000,
                python_calls: 500,
                python_rate_calls: 2_048,
                python_messages: 10_000,
            }
        } else {
            Self {
                latency_samples: 20_000,
                throughput_calls: 200_000,
                pubsub_messages: 1_000_000,
                fanout_messages: 1_000,
                queue_puts: 300_000,
                queue_e2e: 100_000,
                python_calls: 5_000,
                python_rate_calls: 32_768,
                python_messages: 200_000,
            }
        }
    }
}

/// What every measurement of a run shares.
struct Bench<'a> {
    setup: &'a Setup,
    peers: &'a crate::peers::Peers,
    runtime: &'a tokio::runtime::Runtime,
    counts: Counts,
    quick: bool,
    /// Connections to each build's daemon: direct calls, and routed ones.
    callers: Vec<(&'static str, Bus)>,
    /// Each build's daemon address.
    daemons: Vec<(&'static str, String)>,
}

/// Runs every case `repeats` times and returns the table rows.
pub fn run_all(options: &RunOptions<'_>) -> anyhow::Result<Vec<Row>> {
    let RunOptions { quick, repeats, only, data_root, require_peers, baseline_daemon } = *options;
    let wanted = |group: &str| only.is_none_or(|only| group.contains(only));
    let setup = Setup::start(data_root, baseline_daemon)?;
    let peers = crate::peers::Peers::start(&setup.dir, &setup.data_dir, require_peers)?;
    if crate::queues::on_tmpfs(data_root) {
        eprintln!(
            "warning: {} is a tmpfs: fsync costs nothing there, so queue numbers prove nothing",
            data_root.display()
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    // Calls on the first connection of each daemon take a direct channel to
    // the echo service (the default); calls on the second go through the daemon.
    let mut callers = Vec::new();
    let mut daemons = vec![(SWITCHBOARD, setup.bus_addr.clone())];
    daemons.extend(setup.baseline_addr.clone().map(|addr| (BASELINE, addr)));
    for (system, addr) in &daemons {
        let direct = runtime.block_on(Bus::connect(addr))?;
        let routed = runtime.block_on(Bus::connect(addr))?;
        routed.set_direct_calls(false);
        if wanted("call") {
            runtime.block_on(open_direct(&direct))?;
        }
        let routed_name = if *system == SWITCHBOARD { SWITCHBOARD_ROUTED } else { BASELINE_ROUTED };
        callers.extend([(*system, direct), (routed_name, routed)]);
    }
    let bench = Bench {
        setup: &setup,
        peers: &peers,
        runtime: &runtime,
        counts: Counts::new(quick),
        quick,
        callers,
        daemons,
    };
    let policy = if wanted("policy") { Some(PolicyBench::start(&setup.dir, &runtime)?) } else { None };
    let python = if wanted("python") { python_or_skip(require_peers)? } else { None };
    let mut collected = Collected::default();
    for repeat in 0..repeats {
        eprintln!("repeat {}/{repeats}", repeat + 1);
        for (i, size) in SIZES.iter().copied().enumerate() {
            if wanted("limit") {
                bench.limits(i, size, &mut collected)?;
            }
            if wanted("call") {
                bench.calls(size, &mut collected)?;
            }
            if wanted("pubsub") {
                bench.pubsub(size, &mut collected)?;
            }
        }
        if wanted("queue") {
            bench.queues(repeat, &mut collected)?;
        }
        if let Some(policy) = &policy {
            let (plain, checked) = runtime.block_on(policy.measure(bench.counts.latency_samples, repeat))?;
            let case = "call round trip 16 B, policy".to_owned();
            collected.add("policy", case.clone(), "no policy", plain, None);
            collected.add("policy", case, "20-rule policy", checked, None);
        }
        if wanted("supervisor") {
            bench.supervisor(&mut collected)?;
        }
        if let Some(python) = &python {
            bench.python(python, &mut collected)?;
        }
    }
    Ok(collected.rows())
}

/// The project's Python, or a note that its cases are skipped.
fn python_or_skip(required: bool) -> anyhow::Result<Option<crate::python::Python>> {
    match crate::python::Python::find() {
        Ok(python) => Ok(Some(python)),
        Err(why) if required => anyhow::bail!("{why}"),
        Err(why) => {
            eprintln!("{why}: Python cases skipped");
            Ok(None)
        }
    }
}

impl Bench<'_> {
    /// Python client against nats-py and dbus-fast, Python on both ends.
    fn python(&self, python: &crate::python::Python, collected: &mut Collected) -> anyhow::Result<()> {
        use crate::python::{Target, CALL_CASE, PUBSUB_CASE, RATE_CASE};
        let counts = &self.counts;
        let mut targets = vec![(SWITCHBOARD, Target { kind: "switchboard", address: &self.setup.bus_addr })];
        if let Some(nats) = &self.peers.nats {
            targets.push(("nats-py", Target { kind: "nats", address: &nats.url }));
        }
        if let Some(dbus) = &self.peers.dbus {
            targets.push(("dbus-fast (dbus-daemon)", Target { kind: "dbus", address: &dbus.address }));
        }
        for (system, target) in &targets {
            if let Some(sample) = python.calls(target, counts.python_calls, 1)? {
                collected.add("python", CALL_CASE.to_owned(), system, sample, None);
            }
            if let Some(sample) = python.calls(target, counts.python_rate_calls, IN_FLIGHT)? {
                collected.add("python", RATE_CASE.to_owned(), system, sample, None);
            }
            if target.kind != "dbus" {
                if let Some((sample, lost)) = python.pubsub(target, counts.python_messages)? {
                    collected.add("python", PUBSUB_CASE.to_owned(), system, sample, lost);
                }
            }
        }
        Ok(())
    }

    /// The raw socket limits: one hop, and two through a relay.
    fn limits(&self, i: usize, size: usize, collected: &mut Collected) -> anyhow::Result<()> {
        let (s, samples) = (size_name(size), self.counts.latency_samples);
        let raw = raw_round_trips(&self.setup.raw_echo[i], size, samples)?;
        collected.add("limit", format!("unix ping-pong {s}"), "raw socket", raw, None);
        let relay = raw_round_trips(&self.setup.relay[i], size, samples)?;
        collected.add("limit", format!("two-hop relay {s}"), "raw socket", relay, None);
        Ok(())
    }

    fn calls(&self, size: usize, collected: &mut Collected) -> anyhow::Result<()> {
        let (s, counts, runtime) = (size_name(size), &self.counts, self.runtime);
        let latency_case = format!("call round trip {s}");
        let throughput_case = format!("calls, {IN_FLIGHT} in flight {s}");
        for (system, bus) in &self.callers {
            // From a task, as a service issues calls (calling straight from
            // `block_on` adds one zero-timeout epoll_wait per call).
            let latency = runtime.block_on(runtime.spawn(call_latency(
                bus.clone(),
                size,
                counts.latency_samples,
            )))??;
            collected.add("call", latency_case.clone(), system, latency, None);
            let tput = runtime.block_on(call_throughput(bus, size, counts.throughput_calls))?;
            collected.add("call", throughput_case.clone(), system, tput, None);
        }
        for (name, dbus) in [("dbus-daemon", &self.peers.dbus), ("dbus-broker", &self.peers.dbus_broker)] {
            if let Some(dbus) = dbus {
                let latency =
                    crate::peers::dbus::call_latency(&dbus.address, size, counts.latency_samples / 4)?;
                collected.add("call", latency_case.clone(), name, latency, None);
            }
        }
        let latency =
            crate::peers::zeromq::request_latency(&self.peers.zmq.rep, size, counts.latency_samples)?;
        collected.add("call", latency_case.clone(), ZMQ_REQ, latency, None);
        if let Some(nats) = &self.peers.nats {
            let latency = crate::peers::nats::request_latency(&nats.url, size, counts.latency_samples)?;
            collected.add("call", latency_case, NATS_REQUEST, latency, None);
            let tput = crate::peers::nats::request_throughput(&nats.url, size, counts.throughput_calls)?;
            collected.add("call", throughput_case, NATS_REQUEST, tput, None);
        }
        Ok(())
    }

    fn pubsub(&self, size: usize, collected: &mut Collected) -> anyhow::Result<()> {
        let s = size_name(size);
        let lost =
            |r: &crate::pubsub::PubSubResult| 100.0 * (r.published - r.received) as f64 / r.published as f64;
        for subscribers in [1, 4] {
            let messages = self.counts.pubsub_messages / subscribers as u64;
            let case = format!("pub/sub 1 → {subscribers} {s}, received");
            for (system, addr) in &self.daemons {
                let result = crate::pubsub::run(addr, subscribers, messages, size, 0)?;
                collected.add("pubsub", case.clone(), system, result.sample, Some(lost(&result)));
            }
            if let Some(nats) = &self.peers.nats {
                let system = crate::pubsub::System::Nats;
                let result = crate::pubsub::run_on(system, &nats.url, subscribers, messages, size, 0)?;
                collected.add("pubsub", case.clone(), "nats", result.sample, Some(lost(&result)));
            }
            let system = crate::pubsub::System::Zmq;
            let result =
                crate::pubsub::run_on(system, &self.peers.zmq.publish, subscribers, messages, size, 0)?;
            collected.add("pubsub", case, ZMQ_PUBSUB, result.sample, Some(lost(&result)));
        }
        for (system, addr) in &self.daemons {
            let fanout = crate::pubsub::run(addr, 4, self.counts.fanout_messages, size, 1000)?;
            collected.add("pubsub", format!("fan-out latency 1 → 4 {s}"), system, fanout.sample, None);
        }
        Ok(())
    }

    fn queues(&self, repeat: usize, collected: &mut Collected) -> anyhow::Result<()> {
        let (counts, runtime, data_dir) = (&self.counts, self.runtime, &self.setup.data_dir);
        let probe = if self.quick { Duration::from_millis(200) } else { Duration::from_secs(1) };
        let fsync = crate::queues::fsync_rate(data_dir, probe)?;
        collected.add("queue", "disk: 4 KiB write + fdatasync".into(), "this disk", fsync, None);
        let (puts_case, e2e_case) = ("confirmed puts 256 B, 16 × 64 in flight", "put → consume → ack 256 B");
        let jetstream = "nats jetstream (file, default sync)";
        let name = format!("bench-puts-{repeat}");
        for (system, addr) in &self.daemons {
            let puts = runtime.block_on(crate::queues::confirmed_puts(addr, &name, counts.queue_puts))?;
            collected.add("queue", puts_case.into(), system, puts, None);
        }
        if let Some(nats) = &self.peers.nats {
            let js = crate::peers::nats::jetstream_puts(&nats.url, counts.queue_puts)?;
            collected.add("queue", puts_case.into(), jetstream, js, None);
        }
        let name = format!("bench-e2e-{repeat}");
        for (system, addr) in &self.daemons {
            let e2e = runtime.block_on(crate::queues::end_to_end(addr, &name, counts.queue_e2e))?;
            collected.add("queue", e2e_case.into(), system, e2e, None);
        }
        if let Some(rabbit) = &self.peers.rabbit {
            let puts = crate::peers::rabbitmq::confirmed_puts(&rabbit.url, counts.queue_puts)?;
            collected.add("queue", puts_case.into(), RABBIT, puts, None);
            let e2e = crate::peers::rabbitmq::end_to_end(&rabbit.url, counts.queue_e2e)?;
            collected.add("queue", e2e_case.into(), RABBIT, e2e, None);
        }
        if let Some(nats) = &self.peers.nats {
            let js = crate::peers::nats::jetstream_end_to_end(&nats.url, counts.queue_e2e)?;
            collected.add("queue", e2e_case.into(), jetstream, js, None);
        }
        // The store decision (docs/PERFORMANCE.md): same batches, same disk.
        let records = counts.queue_puts / 10;
        let log = crate::queues::store_segment_log(data_dir, records)?;
        collected.add("store", "64 × 256 B per durable commit".into(), "segment log", log, None);
        let redb = crate::queues::store_redb(data_dir, records)?;
        collected.add("store", "64 × 256 B per durable commit".into(), "redb", redb, None);
        Ok(())
    }

    fn supervisor(&self, collected: &mut Collected) -> anyhow::Result<()> {
        let restarts = if self.quick { 20 } else { 200 };
        let (supervised, floor) = crate::supervision::restart_to_ready(&self.setup.dir, restarts)?;
        let case = "kill -9 → new instance READY=1".to_owned();
        collected.add("supervisor", case.clone(), SWITCHBOARD, supervised, None);
        collected.add("supervisor", case, "raw spawn", floor, None);
        let services = 200;
        let (many, none) = crate::supervision::memory(&self.setup.dir, services)?;
        let case = |n| format!("daemon RSS in MiB (in rate column), {n} idle services");
        collected.add("supervisor", case(services), SWITCHBOARD, Sample::rate(many), None);
        collected.add("supervisor", case(0), SWITCHBOARD, Sample::rate(none), None);
        Ok(())
    }
}

/// Sequential round trips of `size`-byte messages through a raw socket path.
fn raw_round_trips(socket: &Path, size: usize, samples: usize) -> anyhow::Result<Sample> {
    let mut stream = UnixStream::connect(socket).with_context(|| format!("connect {}", socket.display()))?;
    let message = vec![7u8; size];
    let mut reply = vec![0u8; size];
    let mut times = Vec::with_capacity(samples);
    for i in 0..samples + samples / 10 {
        let started = Instant::now();
        stream.write_all(&message)?;
        stream.read_exact(&mut reply)?;
        if i >= samples / 10 {
            times.push(started.elapsed());
        }
    }
    Ok(Sample::latency(times))
}

fn echo_target() -> Target {
    // A fixed, valid name.
    Target::parse("bench.echo").unwrap_or_else(|_| unreachable!())
}

/// Sequential calls through the daemon to the echo service.
pub async fn call_latency(bus: Bus, size: usize, samples: usize) -> anyhow::Result<Sample> {
    let target = echo_target();
    let payload = Bytes::from(vec![7u8; size]);
    let mut times = Vec::with_capacity(samples);
    for i in 0..samples + samples / 10 {
        let started = Instant::now();
        let reply = bus.call(&target, payload.clone()).await?;
        let took = started.elapsed();
        anyhow::ensure!(reply.len() == size, "echo returned {} bytes", reply.len());
        if i >= samples / 10 {
            times.push(took);
        }
    }
    Ok(Sample::latency(times))
}

/// Calls the echo service until its calls take a direct channel (they
/// start through the daemon while the grant is asked for).
async fn open_direct(bus: &Bus) -> anyhow::Result<()> {
    let target = echo_target();
    let deadline = Instant::now() + Duration::from_secs(5);
    while bus.direct_instance(target.service.as_str()).is_none() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "no direct channel to {} after 5 s (a direct channel serves a service with one instance; \
             use --routed, or an echo with --instances 1)",
            target.service
        );
        bus.call(&target, Bytes::from_static(b"warm")).await?;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

/// `total` calls with `IN_FLIGHT` outstanding at all times.
async fn call_throughput(bus: &Bus, size: usize, total: usize) -> anyhow::Result<Sample> {
    let target = Rc::new(echo_target());
    let payload = Bytes::from(vec![7u8; size]);
    let bus = bus.clone();
    crate::load::closed_loop(IN_FLIGHT, total / IN_FLIGHT, move |_| {
        let (bus, target, payload) = (bus.clone(), target.clone(), payload.clone());
        async move {
            bus.call(&*target, payload).await?;
            Ok(())
        }
    })
    .await
}

/// Calls against an already running daemon and echo service: sequential,
/// or with `in_flight` outstanding; direct unless `routed`.
pub fn profile(addr: &str, count: usize, in_flight: usize, routed: bool) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let bus = runtime.block_on(Bus::connect(addr))?;
    if routed {
        bus.set_direct_calls(false);
    } else {
        runtime.block_on(open_direct(&bus))?;
    }
    if in_flight > 1 {
        let sample = runtime.block_on(call_throughput(&bus, 16, count))?;
        println!("{count} calls, {IN_FLIGHT} in flight: {:.0} calls/s", sample.rate);
        return Ok(());
    }
    let sample = runtime.block_on(async { tokio::spawn(call_latency(bus, 16, count)).await? })?;
    println!("{count} calls: p50 {:.1} µs, p99 {:.1} µs", sample.p50_us, sample.p99_us);
    Ok(())
}

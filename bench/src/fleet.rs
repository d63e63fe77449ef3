//! `switchboard-bench fleet`: what the fleet costs. In one run, on one
//! three-server NATS cluster (one server per host, each host its own NATS
//! user as in docs/fleet.md) with three daemons joined to it — as root each
//! host in its own network namespace, linked to the others through a bridge
//! as machines on a LAN; otherwise all on loopback ports:
//!
//! - a call from host a to the echo service on host b, through both daemons
//!   and NATS, against a plain NATS request between the same two servers
//!   (async-nats on both ends) — goal ≤ 1.3× its p50;
//! - a fleet broadcast from a to 3 hosts × 10 instances;
//! - a local call on a (joined) against the same call on a daemon that
//!   joined nothing — goal within 5 % — in short alternating rounds, with a
//!   second client of the daemon alone as an A/A control.
//!
//! Each case's p50 is the median of `repeats` runs, the order of the
//! cases rotated between runs.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use switchboard::{Bus, Bytes, CallOptions};

use crate::children;
use crate::netns::Namespaces;
use crate::stats::{median, Sample};

const HOSTS: [&str; 3] = ["a", "b", "c"];
const BENCH_USER: &str = "bench";

/// A NATS server, killed when dropped.
struct NatsServer(std::process::Child);

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Every host's NATS endpoint: in its own namespace (`isolated`) or on
/// loopback ports.
fn endpoints(isolated: bool) -> anyhow::Result<Vec<Endpoint>> {
    (0..HOSTS.len())
        .map(|index| {
            Ok(if isolated {
                (Namespaces::address(index), 4222, 6222)
            } else {
                ("127.0.0.1".to_owned(), free_port()?, free_port()?)
            })
        })
        .collect()
}

/// Where host `index`'s NATS server listens: its address, client port and
/// cluster port.
type Endpoint = (String, u16, u16);

/// Server `index`'s config: a cluster of `endpoints`, a user per host
/// confined to its own subjects, and the bench's own user for clients that
/// bring no credentials.
fn nats_config(index: usize, endpoints: &[Endpoint]) -> String {
    let (address, client, cluster) = &endpoints[index];
    let routes: Vec<String> = endpoints
        .iter()
        .enumerate()
        .filter(|(j, _)| *j != index)
        .map(|(_, (a, _, c))| format!("\"nats://{a}:{c}\""))
        .collect();
    let mut users: Vec<String> = HOSTS
        .iter()
        .map(|host| {
            format!(
                "{{ user: \"{host}\", password: \"{host}\", permissions: {{ \
                 publish: {{ allow: [\"sb.*.{host}\", \"sb.*.{host}.>\"] }}, \
                 subscribe: {{ allow: [\"sb.>\", \"_INBOX_{host}.>\"] }}, allow_responses: true }} }}"
            )
        })
        .collect();
    users.push(format!("{{ user: \"{BENCH_USER}\", password: \"{BENCH_USER}\" }}"));
    format!(
        "host: \"{address}\"\nport: {client}\nserver_name: \"bench-{index}\"\n\
         cluster {{ name: \"bench\", listen: \"{address}:{cluster}\", routes: [{}] }}\n\
         authorization {{ users: [{}] }}\nno_auth_user: \"{BENCH_USER}\"\n",
        routes.join(", "),
        users.join(", ")
    )
}

/// Starts host `index`'s NATS server (in the calling thread's namespace).
fn start_nats(dir: &Path, index: usize, endpoints: &[Endpoint]) -> anyhow::Result<NatsServer> {
    let conf = dir.join(format!("nats-{index}.conf"));
    std::fs::write(&conf, nats_config(index, endpoints))?;
    let child = Command::new("nats-server")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("nats-server (scripts/install-peers.sh installs it)")?;
    Ok(NatsServer(child))
}

/// Waits until every server takes connections.
fn wait_for_nats(endpoints: &[Endpoint]) -> anyhow::Result<()> {
    for (address, client, _) in endpoints {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect((address.as_str(), *client)).is_err() {
            anyhow::ensure!(Instant::now() < deadline, "nats-server on {address}:{client} did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}

/// Starts a daemon in `dir` with `config`; its address.
fn daemon(dir: &Path, name: &str, config: &str) -> anyhow::Result<(children::Child, String)> {
    let path = |p: &Path| p.to_str().unwrap_or_default().to_owned();
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(&file, config)?;
    let socket = dir.join(format!("{name}.sock"));
    let data = dir.join(format!("data-{name}"));
    let child = children::spawn(&["child-daemon", &path(&socket), &path(&data), "--config", &path(&file)])?;
    Ok((child, format!("unix:{}", socket.display())))
}

/// Calls `bench.echo` until it answers from `expected` hosts' worth of
/// instances in a fleet broadcast (the fleet has joined and announced).
async fn until_joined(bus: &Bus, instances: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let outcome =
            bus.broadcast_fleet("bench.echo", Bytes::from_static(b"x"), CallOptions::default()).await?;
        if outcome.replies.iter().filter(|r| r.result.is_ok()).count() == instances {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "the fleet did not form in 20 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn broadcast_latency(bus: &Bus, instances: usize, samples: usize) -> anyhow::Result<Sample> {
    let mut times = Vec::with_capacity(samples);
    for i in 0..samples + samples / 10 {
        let started = Instant::now();
        let outcome =
            bus.broadcast_fleet("bench.echo", Bytes::from_static(b"ping"), CallOptions::default()).await?;
        let took = started.elapsed();
        let answered = outcome.replies.iter().filter(|r| r.result.is_ok()).count();
        anyhow::ensure!(answered == instances, "{answered} of {instances} instances answered");
        if i >= samples / 10 {
            times.push(took);
        }
    }
    Ok(Sample::latency(times))
}

/// What runs on one host: its NATS server, its daemon, its echo instances.
struct HostProcesses {
    _nats: NatsServer,
    _kids: Vec<children::Child>,
    addr: String,
}

/// Starts host `index` in the calling thread's namespace. Every host has 10
/// echo instances (b's answer the cross-host call, all the broadcast).
fn start_host(
    dir: &Path,
    index: usize,
    endpoints: &[Endpoint],
    policy: &str,
) -> anyhow::Result<HostProcesses> {
    let host = HOSTS[index];
    let nats = start_nats(dir, index, endpoints)?;
    let (address, client, _) = &endpoints[index];
    let config = format!(
        "{policy}[fleet]\nname = \"{host}\"\nnats = \"nats://{address}:{client}\"\nuser = \"{host}\"\n\
         password = \"{host}\"\nexport = [\"bench\"]\nimport = [\"bench\"]\n"
    );
    let (daemon, addr) = daemon(dir, host, &config)?;
    let echo = children::spawn(&["child-sb-echo", &addr, "--instances", "10"])?;
    Ok(HostProcesses { _nats: nats, _kids: vec![daemon, echo], addr })
}

pub fn run(count: usize, repeats: usize) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("switchboard-bench-fleet-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let isolated = Namespaces::available();
    let namespaces = if isolated {
        Some(Namespaces::create(&format!("sbb{}", std::process::id()), &HOSTS)?)
    } else {
        eprintln!("not root: the hosts share loopback (no network namespaces)");
        None
    };
    let endpoints = endpoints(isolated)?;
    // The same policy everywhere, so the daemon alone differs only in [fleet].
    let policy = "[[policy]]\nprincipal = \"*\"\nallow = [\"call bench.*\"]\n";
    // Each host's processes start from inside its namespace; a is last, so
    // this thread stays in a's for the clients (and the daemon alone).
    let mut hosts = Vec::new();
    for index in [1, 2, 0] {
        if let Some(namespaces) = &namespaces {
            namespaces.enter(index)?;
        }
        hosts.push((index, start_host(&dir, index, &endpoints, policy)?));
    }
    hosts.sort_by_key(|(index, _)| *index);
    let addrs: Vec<String> = hosts.iter().map(|(_, host)| host.addr.clone()).collect();
    wait_for_nats(&endpoints)?;
    // The daemon alone has the same 10 echo instances of its own, so the
    // local calls differ only in the fleet.
    let (alone, alone_addr) = daemon(&dir, "alone", policy)?;
    let mut kids = vec![alone, children::spawn(&["child-sb-echo", &alone_addr, "--instances", "10"])?];
    // The plain NATS echo runs on b; the clients connect without
    // credentials: the servers take them as the bench's own user
    // (`no_auth_user`).
    let url = |index: usize| format!("nats://{}:{}", endpoints[index].0, endpoints[index].1);
    let (nats_a, nats_b) = (url(0), url(1));
    if let Some(namespaces) = &namespaces {
        namespaces.enter(1)?;
        kids.push(children::spawn(&["child-nats-echo", &nats_b])?);
        namespaces.enter(0)?;
    } else {
        kids.push(children::spawn(&["child-nats-echo", &nats_b])?);
    }

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let on_a = runtime.block_on(Bus::connect(addrs[0].as_str()))?;
    // The local calls get clients of their own, which made no fleet call.
    let local_a = runtime.block_on(Bus::connect(addrs[0].as_str()))?;
    let on_alone = runtime.block_on(Bus::connect(alone_addr.as_str()))?;
    let control = runtime.block_on(Bus::connect(alone_addr.as_str()))?;
    runtime.block_on(until_joined(&on_a, 30))?;
    let remote = CallOptions {
        headers: switchboard::Headers::from_pairs([(switchboard_proto::fleet::HOST_HEADER, "b")])?,
        ..CallOptions::default()
    };
    let payload = Bytes::from(vec![7u8; 16]);
    let (mut fleet_call, mut nats_request, mut broadcast) = (Vec::new(), Vec::new(), Vec::new());
    for repeat in 0..repeats {
        for case in (0..3).map(|i| (i + repeat) % 3) {
            match case {
                0 => fleet_call.push(runtime.block_on(call_latency(&on_a, &payload, &remote, count))?),
                1 => nats_request.push(crate::peers::nats::request_latency(&nats_a, 16, count)?),
                _ => broadcast.push(runtime.block_on(broadcast_latency(&on_a, 30, (count / 10).max(10)))?),
            }
        }
    }
    let rounds = 10 * repeats;
    let [joined, not_joined, same] = runtime.block_on(local_rounds(
        [&local_a, &on_alone, &control],
        &payload,
        rounds,
        (count / 10).max(100),
    ))?;
    let network = if isolated { "a network namespace per host, veth links" } else { "loopback" };
    println!(
        "fleet benchmark: {count} sequential 16 B calls per case, median of {repeats} repeats, {network}"
    );
    report(&fleet_call, &nats_request, &broadcast, [&joined, &not_joined, &same]);
    println!("({rounds} alternating rounds of local calls)");
    drop(kids);
    drop(hosts);
    drop(namespaces);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The table: each case's median p50 and p99, and the two ratios.
fn report(fleet_call: &[Sample], nats_request: &[Sample], broadcast: &[Sample], local: [&[Sample]; 3]) {
    let p50 = |samples: &[Sample]| median(&mut samples.iter().map(|s| s.p50_us).collect::<Vec<_>>());
    let p99 = |samples: &[Sample]| median(&mut samples.iter().map(|s| s.p99_us).collect::<Vec<_>>());
    let [joined, not_joined, same] = local;
    println!("{:<52} {:>10} {:>10}", "case", "p50 µs", "p99 µs");
    for (name, samples) in [
        ("call a → b through both daemons and NATS", fleet_call),
        ("plain NATS request a → b (async-nats)", nats_request),
        ("fleet broadcast from a, 3 hosts × 10 instances", broadcast),
        ("local call on a, joined to the fleet", joined),
        ("local call on a daemon joined to nothing", not_joined),
        ("the same, a second client (A/A control)", same),
    ] {
        println!("{name:<52} {:>10.1} {:>10.1}", p50(samples), p99(samples));
    }
    println!("fleet call p50 / NATS request p50 = {:.2} (goal ≤ 1.3)", p50(fleet_call) / p50(nats_request));
    println!(
        "local call joined / not joined = {:.3} (goal within 5 %; A/A control {:.3})",
        p50(joined) / p50(not_joined),
        p50(same) / p50(not_joined)
    );
}

/// Local calls through each of `buses` in short rounds, their order rotated
/// every round: the machine's latency shifts within seconds, so the cases
/// take turns instead of each having one long stretch.
async fn local_rounds(
    buses: [&Bus; 3],
    payload: &Bytes,
    rounds: usize,
    count: usize,
) -> anyhow::Result<[Vec<Sample>; 3]> {
    let mut samples: [Vec<Sample>; 3] = Default::default();
    for round in 0..rounds {
        for which in (0..3).map(|i| (i + round) % 3) {
            samples[which].push(call_latency(buses[which], payload, &CallOptions::default(), count).await?);
        }
    }
    Ok(samples)
}

async fn call_latency(
    bus: &Bus,
    payload: &Bytes,
    options: &CallOptions,
    samples: usize,
) -> anyhow::Result<Sample> {
    let mut times = Vec::with_capacity(samples);
    for i in 0..samples + samples / 10 {
        let started = Instant::now();
        let reply = bus.call_with("bench.echo", payload.clone(), options.clone()).await?;
        let took = started.elapsed();
        anyhow::ensure!(reply == *payload, "the echo answered {} bytes", reply.len());
        if i >= samples / 10 {
            times.push(took);
        }
    }
    Ok(Sample::latency(times))
}

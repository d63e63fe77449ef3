//! The supervisor: how fast a killed service is back and ready, against the
//! floor of spawning the same program and hearing its `READY=1` directly;
//! and what supervising 200 idle services costs the daemon in memory,
//! against the same daemon supervising none.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use switchboard::{Bus, Item};
use switchboard_proto::supervision::{ServiceStatus, STATE_TOPIC_PREFIX};

use crate::children;
use crate::stats::Sample;

/// How long one restart may take before the bench gives up on it.
const STEP_LIMIT: Duration = Duration::from_secs(10);

fn root_line() -> &'static str {
    if rustix::process::geteuid().is_root() {
        "run_as_root = true\n"
    } else {
        ""
    }
}

fn start_daemon(dir: &Path, name: &str, config: Option<&str>) -> anyhow::Result<(children::Child, String)> {
    let socket = dir.join(format!("{name}.sock"));
    let data = dir.join(format!("{name}-data"));
    let mut args = vec!["child-daemon".to_owned(), path(&socket), path(&data)];
    if let Some(config) = config {
        let file = dir.join(format!("{name}.toml"));
        std::fs::write(&file, config)?;
        args.extend(["--config".to_owned(), path(&file)]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Ok((children::spawn(&args)?, format!("unix:{}", socket.display())))
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// Kill -9 → the new instance Running again (it says `READY=1`), through
/// the daemon; and the same program spawned by the bench until its READY=1.
pub fn restart_to_ready(dir: &Path, restarts: usize) -> anyhow::Result<(Sample, Sample)> {
    let exe = std::env::current_exe()?.display().to_string();
    let config = format!(
        "[services.crashy]\ncommand = {exe:?}\nargs = [\"child-notify-ready\"]\nready = \"notify\"\n\
         backoff = {{ initial = \"0ms\", multiplier = 1.0, jitter = 0.0 }}\n\
         budget = {{ restarts = 1000000, window = \"1s\" }}\n{}",
        root_line()
    );
    let (_daemon, addr) = start_daemon(dir, "restart", Some(&config))?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let supervised = runtime.block_on(async {
        let bus = Bus::connect(&addr).await?;
        let mut states = bus.subscribe(&format!("{STATE_TOPIC_PREFIX}crashy")).await?;
        let mut pid = next_running(&mut states, None).await?;
        let mut took = Vec::with_capacity(restarts);
        for _ in 0..restarts {
            let started = Instant::now();
            kill(pid)?;
            pid = next_running(&mut states, Some(pid)).await?;
            took.push(started.elapsed());
        }
        anyhow::Ok(Sample::latency(took))
    })?;
    Ok((supervised, spawn_floor(dir, &exe, restarts)?))
}

/// Waits for a status with the instance Running under a pid other than `old`.
async fn next_running(states: &mut switchboard::Subscription, old: Option<u32>) -> anyhow::Result<u32> {
    let deadline = Instant::now() + STEP_LIMIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(Some(item)) = tokio::time::timeout(left, states.next()).await else {
            bail!("the supervised service was not Running again within {STEP_LIMIT:?}");
        };
        let Item::Message(message) = item else { continue };
        let status: ServiceStatus = switchboard_proto::sys::decode(&message.payload)?;
        let Some(instance) = status.instances.first() else { continue };
        if instance.state == "Running" && instance.pid.is_some() && instance.pid != old {
            return instance.pid.context("pid");
        }
    }
}

fn kill(pid: u32) -> anyhow::Result<()> {
    let pid = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw).context("pid")?;
    rustix::process::kill_process(pid, rustix::process::Signal::KILL)?;
    Ok(())
}

/// Spawn the same program with a notify socket of our own until READY=1.
fn spawn_floor(dir: &Path, exe: &str, count: usize) -> anyhow::Result<Sample> {
    let socket_path = dir.join("floor.notify");
    let _ = std::fs::remove_file(&socket_path);
    let socket = UnixDatagram::bind(&socket_path)?;
    socket.set_read_timeout(Some(STEP_LIMIT))?;
    let mut took = Vec::with_capacity(count);
    let mut buf = [0u8; 256];
    for _ in 0..count {
        let started = Instant::now();
        let mut child = std::process::Command::new(exe)
            .arg("child-notify-ready")
            .env("NOTIFY_SOCKET", &socket_path)
            .stdout(std::process::Stdio::null())
            .spawn()?;
        let n = socket.recv(&mut buf).context("no READY=1 from the spawned program")?;
        took.push(started.elapsed());
        let _ = child.kill();
        let _ = child.wait();
        if !buf[..n].starts_with(b"READY=1") {
            bail!("unexpected notify message {:?}", String::from_utf8_lossy(&buf[..n]));
        }
    }
    Ok(Sample::latency(took))
}

/// The resident memory of a daemon supervising `services` idle services,
/// and of one supervising none, in MiB.
pub fn memory(dir: &Path, services: usize) -> anyhow::Result<(f64, f64)> {
    let exe = std::env::current_exe()?.display().to_string();
    let root = root_line();
    let config: String = (0..services)
        .map(|i| format!("[services.idle{i}]\ncommand = {exe:?}\nargs = [\"child-idle\"]\n{root}"))
        .collect();
    let (daemon, addr) = start_daemon(dir, "many", Some(&config))?;
    let (bare, bare_addr) = start_daemon(dir, "bare", None)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let bus = Bus::connect(&addr).await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let reply = bus.call("$sys.services.status", bytes::Bytes::new()).await?;
            let statuses: Vec<ServiceStatus> = switchboard_proto::sys::decode(&reply)?;
            if statuses.iter().filter(|s| s.state == "Running").count() == services {
                break;
            }
            if Instant::now() > deadline {
                bail!("{services} services were not all Running within a minute");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // One client on the bare daemon too, so both have the same sessions.
        let _bare = Bus::connect(&bare_addr).await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        anyhow::Ok(())
    })?;
    Ok((rss_mib(daemon.pid())?, rss_mib(bare.pid())?))
}

fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")?;
    Ok(kib / 1024.0)
}

/// A supervised program that says READY=1 and then idles.
pub fn notify_ready() -> anyhow::Result<()> {
    let socket = std::env::var("NOTIFY_SOCKET").context("NOTIFY_SOCKET is not set")?;
    UnixDatagram::unbound()?.send_to(b"READY=1", socket)?;
    idle()
}

/// A supervised program that does nothing until it is stopped.
pub fn idle() -> anyhow::Result<()> {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

//! `switchboard reexec`: replace the running daemon with the binary on disk
//! while its services run on; and the daemon's side of it — the preflight
//! that decides whether a successor can take over, and the `execve`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use switchboard::{CallError, CallOptions};
use switchboard_daemon::handoff::{self, HandOff};
use switchboard_proto::supervision as sup;

use super::connect;
use crate::{output, Connection};

/// Replace the running daemon with the binary on disk, keeping its services.
///
/// The daemon checks that the binary at the path it was started from runs
/// and reads this daemon's hand-off, and that the config file passes
/// `switchboard check`; then it stops accepting, answers calls in flight
/// with `shutting_down`, and re-executes itself (same pid) carrying its
/// listening sockets, its supervised processes (same pids, output and
/// notify sockets kept), instance secrets and retained topic values. Queues
/// are on disk already. Clients reconnect by themselves and re-register.
///
/// This waits until the new daemon process answers and prints how long the
/// swap took. SIGUSR2 to the daemon does the same without waiting. Needs a
/// daemon started with `--threads 1` (the default): the kernel ends a
/// supervised process when the thread that started it ends, and `execve`
/// ends every thread but one.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    connection: Connection,
    /// How long to wait for the new daemon process to answer.
    #[arg(long, value_name = "DURATION", value_parser = crate::parse_duration, default_value = "30s")]
    timeout: Duration,
    /// Print the outcome as JSON.
    #[arg(long)]
    json: bool,
    /// Print the hand-off format this binary reads, and exit (what a
    /// running daemon asks its successor's binary before handing off).
    #[arg(long, hide = true)]
    format: bool,
}

/// What `reexec --format` prints.
fn format_line() -> String {
    format!("switchboard hand-off format {}", handoff::FORMAT)
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.format {
        output::line(format_line())?;
        return Ok(ExitCode::SUCCESS);
    }
    let started = Instant::now();
    let bus = connect(&args.connection, "switchboard-reexec").await?;
    let before = bus.daemon_info().await?;
    let target = format!("{}.{}", sup::SERVICES_SERVICE, sup::REEXEC);
    let asked = bus.call_with(target.as_str(), bytes::Bytes::new(), CallOptions::timeout(args.timeout)).await;
    let binary = match asked {
        Ok(reply) => switchboard_proto::sys::decode::<String>(&reply).unwrap_or_default(),
        // The reply can lose the race with the daemon's goodbye: the swap
        // is under way either way, and the new process says whether it came.
        Err(CallError::ShuttingDown | CallError::ConnectionLost) => String::new(),
        Err(err) => return Err(anyhow::Error::new(err).context("the daemon will not re-execute itself")),
    };
    drop(bus);
    let deadline = started + args.timeout;
    let after = loop {
        if let Ok(bus) = connect(&args.connection, "switchboard-reexec").await {
            match bus.daemon_info().await {
                Ok(info) if info.pid != before.pid || info.generation > before.generation => break info,
                _ => {}
            }
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "the daemon (pid {}) did not come back within {:?}; look at its log (journalctl -u switchboard)",
                before.pid,
                args.timeout
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let took = started.elapsed();
    if after.pid != before.pid {
        anyhow::bail!(
            "a different daemon (pid {}, was {}) answers now: the old one stopped instead of re-executing",
            after.pid,
            before.pid
        );
    }
    if args.json {
        let outcome = serde_json::json!({
            "pid": after.pid,
            "generation": after.generation,
            "version": after.version,
            "binary": binary,
            "took_ms": took.as_millis(),
        });
        output::line(outcome)?;
    } else {
        output::line(format!(
            "switchboard: re-executed {} (pid {}, version {}, generation {}) in {} ms",
            if binary.is_empty() { "the daemon" } else { &binary },
            after.pid,
            after.version,
            after.generation,
            took.as_millis()
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether a successor can take over: only with one runtime thread (see
/// [`Args`]), and only if the binary runs and reads this hand-off format.
/// Names the binary, or says why not.
pub fn preflight(binary: &Path, threads: usize) -> Result<String, String> {
    if threads > 1 {
        return Err(format!(
            "this daemon runs {threads} threads (--threads): its services were started from worker threads, \
             and the kernel would end them when execve ends those threads; restart it with --threads 1 to \
             allow reexec"
        ));
    }
    let asked = std::process::Command::new(binary)
        .args(["reexec", "--format"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .map_err(|err| format!("cannot run {}: {err}", binary.display()))?;
    let answer = String::from_utf8_lossy(&asked.stdout).trim().to_owned();
    if !asked.status.success() || answer != format_line() {
        return Err(format!(
            "{} cannot take over: it answered {answer:?} to `reexec --format`, and this daemon hands off \
             {:?}",
            binary.display(),
            format_line()
        ));
    }
    Ok(binary.display().to_string())
}

/// Replaces this process with `binary`, same arguments, handing it
/// `handoff`. Returns only if that failed, with the hand-off taken back so
/// this process can carry on with it.
pub fn exec(binary: &Path, handoff: HandOff, restore_env: &[(String, OsString)]) -> HandOff {
    use std::os::unix::process::CommandExt;
    let prepared = match handoff.prepare_exec() {
        Ok(prepared) => prepared,
        Err((err, handoff)) => {
            tracing::error!("{err}; carrying on in this process");
            return handoff;
        }
    };
    let (name, value) = prepared.env();
    tracing::info!(binary = %binary.display(), "re-executing");
    let err = std::process::Command::new(binary)
        .args(std::env::args_os().skip(1))
        .envs(restore_env.iter().map(|(k, v)| (k, v)))
        .env(name, value)
        .exec();
    tracing::error!(binary = %binary.display(), "cannot re-execute: {err}; carrying on in this process");
    prepared.take_back()
}

/// The binary this process runs, found before anything could replace the
/// file (an upgrade renames a new file over it: the path then names the
/// new binary, while `/proc/self/exe` keeps naming the old one).
pub fn own_binary() -> anyhow::Result<PathBuf> {
    std::env::current_exe().context("finding the daemon's own binary")
}

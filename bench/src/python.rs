//! Python on both ends of every pair: the Switchboard Python client against
//! nats-py (on this run's nats-server) and dbus-fast (on its dbus-daemon).
//!
//! The workloads live in `clients/python/bench/pybench.py`, run with the
//! project's virtualenv (`target/py-venv`, which `scripts/python-env.sh`
//! makes; `$SWITCHBOARD_PYTHON` names another interpreter). Each case is one
//! run of the script: it starts its own responder or subscriber process and
//! prints one JSON line. A missing interpreter or peer library is skipped
//! with a note, as a missing peer server is.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use serde::Deserialize;

use crate::stats::Sample;

pub const CALL_CASE: &str = "python call round trip 16 B";
pub const RATE_CASE: &str = "python calls, 64 in flight 16 B";
pub const PUBSUB_CASE: &str = "python pub/sub 1→1 16 B received";

/// What one run of the script printed.
#[derive(Deserialize)]
struct Report {
    p50_us: Option<f64>,
    p99_us: Option<f64>,
    rate: Option<f64>,
    lost_pct: Option<f64>,
    skipped: Option<String>,
}

/// The interpreter and the script, when both are here.
pub struct Python {
    interpreter: PathBuf,
    script: PathBuf,
}

/// Where a system's server is, as the script takes it.
pub struct Target<'a> {
    /// `switchboard`, `nats` or `dbus`.
    pub kind: &'static str,
    pub address: &'a str,
}

impl Python {
    /// The virtualenv's Python with the client installed, or why not.
    pub fn find() -> Result<Self, String> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let script = root.join("clients/python/bench/pybench.py");
        let interpreter = std::env::var_os("SWITCHBOARD_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target/py-venv/bin/python"));
        let imports = Command::new(&interpreter).args(["-c", "import switchboard, msgpack"]).output();
        match imports {
            Ok(out) if out.status.success() => Ok(Self { interpreter, script }),
            Ok(out) => Err(format!(
                "{} cannot import the client ({}): run scripts/python-env.sh",
                interpreter.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(err) => {
                Err(format!("no Python at {} ({err}): run scripts/python-env.sh", interpreter.display()))
            }
        }
    }

    /// Sequential round trips (`in_flight` 1) or a rate with `in_flight` calls outstanding.
    pub fn calls(
        &self,
        target: &Target<'_>,
        count: usize,
        in_flight: usize,
    ) -> anyhow::Result<Option<Sample>> {
        let (count, in_flight) = (count.to_string(), in_flight.to_string());
        let report =
            self.run(&["call", target.kind, target.address, "--count", &count, "--in-flight", &in_flight])?;
        Ok(report.map(|r| r.sample()))
    }

    /// Publications received per second by one subscriber, and the share lost.
    pub fn pubsub(&self, target: &Target<'_>, count: u64) -> anyhow::Result<Option<(Sample, Option<f64>)>> {
        let count = count.to_string();
        let report = self.run(&["pubsub", target.kind, target.address, "--count", &count])?;
        Ok(report.map(|r| (r.sample(), r.lost_pct)))
    }

    fn run(&self, args: &[&str]) -> anyhow::Result<Option<Report>> {
        let out = Command::new(&self.interpreter)
            .arg(&self.script)
            .args(args)
            .stderr(std::process::Stdio::inherit())
            .output()
            .with_context(|| format!("running {} {args:?}", self.script.display()))?;
        anyhow::ensure!(out.status.success(), "pybench {args:?} failed ({})", out.status);
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().last().unwrap_or_default();
        let report: Report =
            serde_json::from_str(line).with_context(|| format!("pybench {args:?} printed {line:?}"))?;
        if let Some(why) = &report.skipped {
            eprintln!("python case {args:?} skipped: {why}");
            return Ok(None);
        }
        Ok(Some(report))
    }
}

impl Report {
    fn sample(&self) -> Sample {
        Sample {
            p50_us: self.p50_us.unwrap_or(f64::NAN),
            p99_us: self.p99_us.unwrap_or(f64::NAN),
            rate: self.rate.unwrap_or(0.0),
        }
    }
}

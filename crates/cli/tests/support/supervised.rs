//! A daemon supervising the services of a config written for the test, and
//! what the tests ask of it through the CLI (status, logs, files the
//! services write).

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use switchboard_proto::supervision::{LogLine, ServiceStatus};

use super::Daemon;

/// A daemon supervising the services of `config`, and a scratch directory
/// the services write into (`$WORK` in the config).
pub struct Supervised {
    pub daemon: Daemon,
    pub work: tempfile::TempDir,
    pub config: PathBuf,
}

pub fn supervise(config: &str) -> Supervised {
    supervise_with(config, &[])
}

/// [`supervise`], with more `up` arguments.
pub fn supervise_with(config: &str, extra: &[&str]) -> Supervised {
    let work = tempfile::tempdir().expect("work dir");
    let path = work.path().join("services.toml");
    write_config(&path, work.path(), config);
    let args = [&["--config", path.to_str().expect("utf-8 path")], extra].concat();
    let daemon = Daemon::start_with(&args);
    Supervised { daemon, work, config: path }
}

/// The `bus_aware` example as service `cache`, whose `stall` method blocks
/// it for `stall_ms` (see the example).
pub fn bus_aware_cache(stall_ms: u32) -> String {
    format!("[services.cache]\ncommand = \"$EXAMPLE\"\nready = \"bus\"\nenvironment = {{ STALL_MS = \"{stall_ms}\" }}\n$ROOT\n")
}

/// Writes a config, filling in `$WORK`, `$EXAMPLE` and, as root, the
/// explicit permission to run services as root.
pub fn write_config(path: &Path, work: &Path, config: &str) {
    let root = if rustix::process::geteuid().is_root() { "run_as_root = true" } else { "" };
    let example = Path::new(super::BIN).parent().expect("bin dir").join("examples/bus_aware");
    assert!(example.exists(), "build the example first: cargo build -p switchboard-cli --examples");
    let text = config
        .replace("$WORK", &work.display().to_string())
        .replace("$EXAMPLE", &example.display().to_string())
        .replace("$ROOT", root);
    std::fs::write(path, text).expect("write config");
}

impl Supervised {
    pub fn run(&self, args: &[&str]) -> Output {
        self.daemon.cli(args).output().expect("run the CLI")
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn status(&self, service: &str) -> ServiceStatus {
        let text = self.ok(&["status", service, "--json"]);
        let mut all: Vec<ServiceStatus> = serde_json::from_str(&text).expect("status JSON");
        all.pop().expect("one service")
    }

    pub fn pid(&self, service: &str) -> u32 {
        self.status(service).instances[0].pid.expect("a running instance has a pid")
    }

    /// Waits until `service` is in `state`; panics with its status if not.
    pub fn wait_state(&self, service: &str, state: &str, limit: Duration) -> ServiceStatus {
        let deadline = Instant::now() + limit;
        loop {
            let status = self.status(service);
            if status.state == state {
                return status;
            }
            assert!(Instant::now() < deadline, "{service} never became {state}: {status:#?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn logs(&self, service: &str) -> Vec<LogLine> {
        self.ok(&["logs", service, "--json", "-n", "10000"])
            .lines()
            .map(|l| serde_json::from_str(l).expect("log JSON"))
            .collect()
    }

    pub fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.work.path().join(name)).unwrap_or_default()
    }
}

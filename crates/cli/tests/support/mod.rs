//! Starts the real `switchboard` binary on a temporary socket and cleans up
//! on drop (by PID, only processes this harness started).
#![allow(dead_code)] // each test file uses a different part

pub mod certs;
pub mod fleet;
pub mod http;
pub mod supervised;
pub mod webdriver;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};
use switchboard::Bus;
use tempfile::TempDir;

pub const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// A running daemon.
pub struct Daemon {
    pub child: Child,
    pub dir: TempDir,
    pub socket: PathBuf,
    pub addr: String,
    /// The extra `up` arguments it was started with; a restart uses them again.
    pub extra: Vec<String>,
    /// A command the daemon runs under (`strace …`, `nsenter …`), or empty;
    /// a restart uses it again.
    pub wrapper: Vec<String>,
    /// The daemon's own pid, as it printed it (not the wrapper's).
    pub daemon_pid: u32,
}

impl Daemon {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts `switchboard up --listen unix:<tmp>/bus.sock EXTRA...` and
    /// waits for it to say it is ready.
    pub fn start_with(extra: &[&str]) -> Self {
        Self::start_wrapped(tempfile::tempdir().expect("temp dir"), &[], extra)
    }

    /// Starts `switchboard up --config FILE EXTRA...`, FILE holding
    /// `config`; the file lives in the returned directory.
    pub fn start_with_config(config: &str, extra: &[&str]) -> (Self, TempDir) {
        let work = tempfile::tempdir().expect("temp dir");
        let path = work.path().join("daemon.toml");
        std::fs::write(&path, config).expect("write the config");
        let args = [&["--config", path.to_str().expect("utf-8 path")], extra].concat();
        (Self::start_with(&args), work)
    }

    /// Starts `WRAPPER... switchboard up …` in `dir`: the daemon runs under
    /// another program that execs it or traces it.
    pub fn start_wrapped(dir: TempDir, wrapper: &[&str], extra: &[&str]) -> Self {
        let socket = dir.path().join("bus.sock");
        let owned = |args: &[&str]| args.iter().map(|s| (*s).to_owned()).collect::<Vec<String>>();
        let (extra, wrapper) = (owned(extra), owned(wrapper));
        let (child, daemon_pid) = spawn_daemon(&socket, dir.path(), &wrapper, &extra);
        let addr = format!("unix:{}", socket.display());
        Self { child, dir, socket, addr, extra, wrapper, daemon_pid }
    }

    /// Starts another daemon process on the same socket and directory, with
    /// the same wrapper and extra arguments.
    pub fn restart(&mut self) {
        (self.child, self.daemon_pid) =
            spawn_daemon(&self.socket, self.dir.path(), &self.wrapper, &self.extra);
    }

    pub fn pid(&self) -> u32 {
        self.daemon_pid
    }

    /// The daemon's log (stderr) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    pub fn signal(&self, signal: Signal) {
        signal_pid(self.daemon_pid, signal);
    }

    /// Waits for the daemon to exit, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        wait_exit(&mut self.child, limit)
    }

    /// A client library connection to this daemon.
    pub async fn bus(&self) -> Bus {
        Bus::connect(&self.addr).await.expect("connect to the test daemon")
    }

    /// A `switchboard` CLI command aimed at this daemon.
    pub fn cli(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args).env("SWITCHBOARD_ADDR", &self.addr).env_remove("SWITCHBOARD_LOG");
        cmd
    }

    /// Starts `switchboard respond ARGS...` and waits until it serves.
    pub fn responder(&self, args: &[&str]) -> Child {
        let mut child = self
            .cli(&[&["respond"], args].concat())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn respond");
        let stderr = child.stderr.take().expect("piped stderr");
        let mut lines = BufReader::new(stderr).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.starts_with("serving ") => break,
                Some(Ok(_)) => continue,
                other => panic!("respond did not start: {other:?}"),
            }
        }
        // Keep draining its stderr so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        child
    }
}

impl Drop for Daemon {
    /// SIGTERM first, so a supervising daemon stops its services; SIGKILL
    /// if it has not exited within a few seconds.
    fn drop(&mut self) {
        self.signal(Signal::TERM);
        if self.wait_exit(Duration::from_secs(5)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn spawn_daemon(socket: &Path, dir: &Path, wrapper: &[String], extra: &[String]) -> (Child, u32) {
    let log =
        std::fs::OpenOptions::new().create(true).append(true).open(dir.join("daemon.log")).expect("log file");
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg(BIN);
            command
        }
        None => Command::new(BIN),
    };
    let mut child = command
        .arg("up")
        .arg("--listen")
        .arg(format!("unix:{}", socket.display()))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(extra)
        .env("SWITCHBOARD_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("spawn switchboard up");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let started = Instant::now();
    let pid = loop {
        match lines.next() {
            Some(Ok(line)) if line.contains("ready") => {
                // "switchboard: ready (pid N)"
                let digits: String = line.chars().filter(char::is_ascii_digit).collect();
                break digits.parse().expect("the ready line names the daemon's pid");
            }
            Some(Ok(_)) => {}
            other => panic!("daemon did not start ({other:?}) after {:?}", started.elapsed()),
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, pid)
}

pub fn signal_pid(pid: u32, signal: Signal) {
    let pid = Pid::from_raw(pid as i32).expect("non-zero pid");
    let _ = kill_process(pid, signal);
}

pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// Kills a child on drop.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `check` until it holds or `limit` passes.
pub async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    check()
}

/// Writes a config with one service, `slow`, that never becomes ready (it
/// waits to register on the bus and never does): calls to it are held as
/// to a starting service. Returns the file.
pub fn never_ready_service(dir: &Path) -> PathBuf {
    let config = dir.join("services.toml");
    let root = if rustix::process::geteuid().is_root() { "run_as_root = true" } else { "" };
    let text = format!(
        "[services.slow]\ncommand = \"sh\"\nargs = [\"-c\", \"sleep 30\"]\nready = \"bus\"\n{root}\n"
    );
    std::fs::write(&config, text).expect("write the config");
    config
}

/// The second OS user the tests that need one run as.
pub const OTHER_USER: &str = "sbtest";

/// The uid and gid of the second test user, created if missing.
pub fn other_user() -> (u32, u32) {
    let id = |flag: &str| {
        let out = Command::new("id").args([flag, OTHER_USER]).output().expect("id");
        String::from_utf8_lossy(&out.stdout).trim().parse::<u32>().ok()
    };
    if id("-u").is_none() {
        let out = Command::new("useradd")
            .args(["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", OTHER_USER])
            .output()
            .expect("useradd");
        assert!(out.status.success(), "useradd failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    (id("-u").expect("uid"), id("-g").expect("gid"))
}

/// For a test that needs root (a second user, mount namespaces, strace):
/// such tests are `#[ignore]`d with that reason and named `…_as_root`, so a
/// plain `cargo test` lists them as ignored instead of passing them
/// silently; `scripts/test.sh` runs them as root (CI runs as root), and fails
/// if it cannot. Run by hand without root, it fails saying why.
pub fn needs_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test needs root: run it as root (`sudo cargo test -- --ignored _as_root`)"
    );
}

/// Raises this process's open-file limit to its hard limit (children it
/// starts, the daemon included, inherit it): for tests that open thousands
/// of sockets.
pub fn raise_nofile() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    setrlimit(Resource::Nofile, Rlimit { current: limit.maximum, maximum: limit.maximum })
        .expect("raise nofile");
}

/// Where `program` is on `PATH` (or in the sbin directories), if anywhere.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Output lines of an example process.
pub type PeerLines = std::io::Lines<BufReader<std::process::ChildStdout>>;

/// Starts the example binary `name` (`cargo build -p switchboard-cli
/// --examples`) with `args` against `daemon`; returns it with its output.
pub fn example_peer(daemon: &Daemon, name: &str, args: &[&str]) -> (Guard, PeerLines) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/examples").join(name);
    let mut child = Command::new(&path)
        .args(args)
        .env("SWITCHBOARD_ADDR", &daemon.addr)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| {
            panic!("spawn {} (cargo build -p switchboard-cli --examples): {err}", path.display())
        });
    let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    (Guard(child), lines)
}

/// The next line an example peer printed.
pub fn next_line(lines: &mut PeerLines) -> String {
    lines.next().expect("a line from the peer").expect("readable")
}

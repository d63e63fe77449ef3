//! One supervised instance: its lifecycle state, deadlines and restart
//! history, and the tasks that watch its process (exit, output, notify).
//!
//! Launching is here; deciding what to do about what the tasks report is the
//! runtime's job.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use switchboard_proto::supervision as sup;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::cgroup::Cgroup;
use super::config::ServiceSpec;
use super::logs::{LogBook, MAX_LINE};
use super::notify::NotifySocket;
use super::process::{self, SpawnError};
use super::restart::RestartTracker;
use super::state::State;
use super::{Event, Key, Published};

/// Why an instance is being stopped on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    /// Stop and stay stopped.
    Stop,
    /// Stop, then start again at once (no restart policy, no budget).
    Restart,
}

/// A bus-aware instance's control channel.
#[derive(Debug, Clone)]
pub struct Attached {
    pub session: u64,
    /// The bus instance serving `__control`.
    pub bus_instance: u64,
    pub accepts: Vec<u8>,
}

#[derive(Default)]
pub struct Instance {
    pub index: u32,
    pub state: StateCell,
    /// Bumped at every launch; events from an older process are ignored.
    pub gen: u64,
    /// Whether it should be running (reconcile starts or stops it to match).
    pub desired: bool,
    pub intent: Option<Intent>,
    pub pid: Option<u32>,
    pub started: Option<Instant>,
    pub tracker: RestartTracker,
    pub restart_at: Option<Instant>,
    pub start_deadline: Option<Instant>,
    /// When a stop escalates to SIGKILL.
    pub stop_deadline: Option<Instant>,
    /// When a pending pause/continue with no progress counts as hung.
    pub pending_deadline: Option<Instant>,
    pub checkpoint: u32,
    pub watchdog_deadline: Option<Instant>,
    /// Set when the supervisor kills it (watchdog, health, hang): the exit
    /// then counts as a failure and names the reason.
    pub kill_reason: Option<String>,
    pub status: String,
    pub health: String,
    pub health_failures: u32,
    pub secret: String,
    pub attached: Option<Attached>,
    /// Taken over from a predecessor daemon while attached: calls to it wait
    /// (the service's `Starting` hold) until it attaches again, or until
    /// this deadline passes.
    pub reattach_by: Option<Instant>,
    pub last_exit: String,
    /// Tasks tied to the current process (notify reader, health loop).
    pub tasks: Vec<AbortHandle>,
    /// Tasks that outlive the process (its exit, its output to the end);
    /// stopped only to hand the process to a successor daemon.
    pub watchers: Vec<AbortHandle>,
    /// Copies of the read ends of its stdout and stderr, for a successor
    /// daemon to go on reading them.
    pub pipes: Option<[OwnedFd; 2]>,
    pub health_task: Option<AbortHandle>,
    pub cgroup: Option<Cgroup>,
}

/// The state, defaulting to Stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateCell(pub State);

impl Default for StateCell {
    fn default() -> Self {
        StateCell(State::Stopped)
    }
}

impl Instance {
    pub fn new(index: u32) -> Self {
        Self { index, ..Self::default() }
    }

    pub fn state(&self) -> State {
        self.state.0
    }

    /// Ends the tasks watching the previous process and forgets its deadlines.
    pub fn clear_process(&mut self) {
        for task in self.tasks.drain(..).chain(self.health_task.take()) {
            task.abort();
        }
        self.pid = None;
        self.pipes = None;
        self.cgroup = None;
        self.attached = None;
        self.reattach_by = None;
        self.start_deadline = None;
        self.stop_deadline = None;
        self.pending_deadline = None;
        self.watchdog_deadline = None;
        self.health.clear();
        self.health_failures = 0;
    }

    pub fn status(&self, now: Instant) -> sup::InstanceStatus {
        sup::InstanceStatus {
            instance: self.index,
            state: self.state().name().to_owned(),
            pid: self.pid,
            status: self.status.clone(),
            health: self.health.clone(),
            restarts: self.tracker.restarts(),
            restart_in_ms: self
                .restart_at
                .map(|at| u64::try_from(at.saturating_duration_since(now).as_millis()).unwrap_or(u64::MAX)),
            bus_aware: self.attached.is_some(),
            last_exit: self.last_exit.clone(),
            uptime_ms: self
                .started
                .filter(|_| self.state().has_process())
                .map_or(0, |s| u64::try_from(s.elapsed().as_millis()).unwrap_or(u64::MAX)),
        }
    }
}

/// Where an instance's output and notices go.
pub struct Wiring<'a> {
    pub key: Key,
    pub gen: u64,
    pub events: &'a mpsc::UnboundedSender<Event>,
    pub log: &'a Arc<Mutex<LogBook>>,
    pub published: &'a mpsc::UnboundedSender<Published>,
    pub run_dir: &'a Path,
    pub endpoint: &'a str,
    pub secret: &'a str,
}

/// A launched (or taken over) process and the tasks watching it.
pub struct Launched {
    pub pid: u32,
    pub tasks: Vec<AbortHandle>,
    pub watchers: Vec<AbortHandle>,
    pub pipes: Option<[OwnedFd; 2]>,
}

/// Where an instance's notify socket is: one path per launch, as the
/// previous process's socket is removed when its reader task ends, which
/// may be after this one is bound.
pub fn notify_path(run_dir: &Path, key: &Key, gen: u64) -> PathBuf {
    run_dir.join(format!("{}.{}.{gen}.notify", key.0, key.1))
}

/// Spawns the instance's process with its environment and starts the tasks
/// that report its exit, capture its output and read its notify socket.
pub fn launch(spec: &ServiceSpec, wiring: Wiring<'_>) -> Result<Launched, SpawnError> {
    let (service, index) = (&wiring.key.0, wiring.key.1);
    let notify_path = notify_path(wiring.run_dir, &wiring.key, wiring.gen);
    let notify = std::fs::create_dir_all(wiring.run_dir).and_then(|()| NotifySocket::bind(&notify_path));
    let mut env = BTreeMap::from([
        (sup::ENV_ADDR.to_owned(), wiring.endpoint.to_owned()),
        (sup::ENV_SERVICE.to_owned(), service.clone()),
        (sup::ENV_INSTANCE.to_owned(), index.to_string()),
        (sup::ENV_SECRET.to_owned(), wiring.secret.to_owned()),
    ]);
    match &notify {
        Ok(socket) => {
            env.insert("NOTIFY_SOCKET".into(), socket.path().display().to_string());
        }
        Err(err) => tracing::warn!(%service, index, "no notify socket at {}: {err}", notify_path.display()),
    }
    if let Some(watchdog) = spec.watchdog {
        env.insert("WATCHDOG_USEC".into(), watchdog.as_micros().to_string());
    }
    let spawned = process::spawn(spec, &env)?;
    Ok(watch(spawned, notify.ok(), &wiring))
}

/// Takes over an instance process a predecessor daemon handed on: waits for
/// it, reads its output from the pipes handed over, and listens on its
/// notify socket again (at the same path, which the process knows).
pub fn adopt(spawned: process::Spawned, wiring: &Wiring<'_>) -> Launched {
    let path = notify_path(wiring.run_dir, &wiring.key, wiring.gen);
    let notify = NotifySocket::bind(&path)
        .inspect_err(
            |err| tracing::warn!(service = %wiring.key.0, "no notify socket at {}: {err}", path.display()),
        )
        .ok();
    watch(spawned, notify, wiring)
}

/// Starts the tasks that watch a process: its exit, its output, its notices.
fn watch(spawned: process::Spawned, notify: Option<NotifySocket>, wiring: &Wiring<'_>) -> Launched {
    let index = wiring.key.1;
    let mut watchers = Vec::new();
    let mut pipes = None;
    if let Some([stdout, stderr]) = spawned.output {
        match (stdout.try_clone(), stderr.try_clone()) {
            (Ok(out), Ok(err)) => pipes = Some([out, err]),
            (Err(err), _) | (_, Err(err)) => {
                tracing::warn!(service = %wiring.key.0, index, "its output cannot be handed to a successor daemon: {err}");
            }
        }
        for (fd, name) in [(stdout, "stdout"), (stderr, "stderr")] {
            match tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
                Ok(stream) => {
                    let (log, published) = (wiring.log.clone(), wiring.published.clone());
                    // Output is captured to its end even after the process
                    // exits, so these tasks are not aborted with the others.
                    let capture = tokio::spawn(capture(Box::new(stream), name, index, log, published));
                    watchers.push(capture.abort_handle());
                }
                Err(err) => tracing::warn!(service = %wiring.key.0, index, "cannot read its {name}: {err}"),
            }
        }
    }
    let (key, gen, events, pid) = (wiring.key.clone(), wiring.gen, wiring.events.clone(), spawned.pid);
    watchers.push(
        tokio::spawn(async move {
            let status = process::wait(pid).await;
            let _ = events.send(Event::Exited { key, gen, status });
        })
        .abort_handle(),
    );
    let mut tasks = Vec::new();
    if let Some(socket) = notify {
        let (key, gen, events) = (wiring.key.clone(), wiring.gen, wiring.events.clone());
        tasks.push(
            tokio::spawn(async move {
                let mut buf = vec![0; 4096];
                while let Some(notice) = socket.next(&mut buf).await {
                    if events.send(Event::Notice { key: key.clone(), gen, notice }).is_err() {
                        return;
                    }
                }
            })
            .abort_handle(),
        );
    }
    Launched { pid: spawned.pid, tasks, watchers, pipes }
}

/// The severity of a line that says none.
const INFO: u8 = 6;

/// Copies a stream into the log line by line (cutting overlong lines) and
/// publishes each line on `sys.logs.<service>`.
async fn capture(
    mut stream: Box<dyn AsyncRead + Send + Unpin>,
    name: &'static str,
    index: u32,
    log: Arc<Mutex<LogBook>>,
    published: mpsc::UnboundedSender<Published>,
) {
    let mut buf = vec![0u8; 8192];
    let mut line: Vec<u8> = Vec::new();
    let emit = |line: &mut Vec<u8>| {
        let text = String::from_utf8_lossy(line).into_owned();
        line.clear();
        // `<3>…` (systemd's level prefix) sets the severity; plain lines are info.
        let (level, text) = super::journal::level_prefix(&text).unwrap_or((INFO, &text));
        let entry = log.lock().unwrap_or_else(|p| p.into_inner()).append(index, name, text, level, "");
        let _ = published.send(Published::Log(entry));
    };
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &byte in &buf[..n] {
            if byte == b'\n' {
                emit(&mut line);
            } else if line.len() <= MAX_LINE {
                line.push(byte);
            }
        }
    }
    if !line.is_empty() {
        emit(&mut line);
    }
}

//! What the supervisor hands to its successor when the daemon re-executes
//! itself (`switchboard reexec`): every instance as it stands — its live
//! process (pid, output pipes, cgroup), state, secret, status, restart
//! history, and its deadlines as time left — and what each service said last.
//!
//! The processes keep running through the swap: the successor waits for
//! them, reads their output from the same pipes and listens on their notify
//! sockets again. Nothing here starts or stops a process, except that an
//! instance the successor's config no longer has is asked to stop (SIGTERM).

use std::os::fd::RawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustix::process::Signal;
use serde::{Deserialize, Serialize};
use switchboard_daemon::handoff::{adopt_fd, leave_open};
use switchboard_daemon::host::InstanceIdentity;

use super::instance::{self, Instance, Intent};
use super::process::{self, Spawned};
use super::restart::RestartTracker;
use super::runtime::Runtime;
use super::state::State;
use super::Key;

#[derive(Serialize, Deserialize, Default)]
struct Handed {
    services: Vec<HandedService>,
}

#[derive(Serialize, Deserialize)]
struct HandedService {
    name: String,
    last_error: String,
    note: String,
    instances: Vec<HandedInstance>,
}

#[derive(Serialize, Deserialize)]
struct HandedInstance {
    index: u32,
    gen: u64,
    state: String,
    desired: bool,
    /// "stop" or "restart", when it is being stopped on purpose.
    intent: Option<String>,
    pid: Option<u32>,
    /// Whether it was attached over the bus (it attaches again by itself).
    attached: bool,
    /// Its stdout and stderr read ends, left open across the exec.
    pipes: Option<[RawFd; 2]>,
    cgroup: Option<PathBuf>,
    secret: String,
    status: String,
    last_exit: String,
    kill_reason: Option<String>,
    checkpoint: u32,
    ran_ms: u64,
    /// Ages of the restarts in the budget's window, and the run of restarts.
    restart_ages_ms: Vec<u64>,
    consecutive_restarts: u32,
    /// Time left on each pending deadline.
    restart_in_ms: Option<u64>,
    start_in_ms: Option<u64>,
    stop_in_ms: Option<u64>,
    pending_in_ms: Option<u64>,
}

fn left(deadline: Option<Instant>, now: Instant) -> Option<u64> {
    deadline.map(|at| millis(at.saturating_duration_since(now)))
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl Runtime {
    /// Stops watching every process (they keep running) and describes them
    /// for the successor.
    pub(super) fn hand_off(&mut self) -> Bytes {
        let now = Instant::now();
        let mut handed = Handed::default();
        for (name, service) in &mut self.services {
            let instances =
                service.instances.iter_mut().map(|instance| hand_off_instance(instance, now)).collect();
            handed.services.push(HandedService {
                name: name.clone(),
                last_error: service.last_error.clone(),
                note: service.note.clone(),
                instances,
            });
        }
        let live: usize =
            handed.services.iter().flat_map(|s| &s.instances).filter(|i| i.pid.is_some()).count();
        tracing::info!(instances = live, "handing supervised processes to the successor");
        Bytes::from(switchboard_proto::sys::encode(&handed))
    }

    /// Takes over what the predecessor handed on: each instance of a service
    /// this config still has is watched again as it was; the rest are
    /// stopped.
    pub(super) fn adopt(&mut self, state: &[u8]) {
        let handed: Handed = match switchboard_proto::sys::decode(state) {
            Ok(handed) => handed,
            Err(err) => {
                // Nothing is known of the processes; they run on unsupervised
                // until the daemon ends (then the parent-death signal ends them).
                tracing::error!("cannot read the supervisor's hand-off: {err}");
                return;
            }
        };
        let now = Instant::now();
        for service in handed.services {
            for handed in service.instances {
                let key: Key = (service.name.clone(), handed.index);
                let known = self
                    .services
                    .get(&service.name)
                    .is_some_and(|s| s.instances.len() >= handed.index as usize && handed.index > 0);
                if known {
                    self.adopt_instance(&key, handed, now);
                } else if let Some(pid) = handed.pid {
                    tracing::warn!(service = %key.0, instance = key.1, pid, "no longer configured: stopping it");
                    process::signal_group(pid, Signal::TERM);
                    drop(take_pipes(handed.pipes));
                }
            }
            if let Some(current) = self.services.get_mut(&service.name) {
                current.last_error = service.last_error;
                if current.note.is_empty() {
                    current.note = service.note;
                }
            }
        }
    }

    fn adopt_instance(&mut self, key: &Key, handed: HandedInstance, now: Instant) {
        let Some(state) = State::ALL.iter().copied().find(|s| s.name() == handed.state) else {
            tracing::error!(service = %key.0, state = %handed.state, "unknown state in the hand-off");
            return;
        };
        let Some(service) = self.services.get_mut(&key.0) else { return };
        let log = service.log.clone();
        let (spec_watchdog, has_health) = (service.spec.watchdog, service.spec.health.is_some());
        let start_timeout = service.spec.start_timeout;
        let Some(instance) = self.find_any(key) else { return };
        let at = |ms: Option<u64>| ms.map(|ms| now + Duration::from_millis(ms));
        instance.state.0 = state;
        instance.gen = handed.gen;
        instance.desired = handed.desired;
        instance.intent = match handed.intent.as_deref() {
            Some("stop") => Some(Intent::Stop),
            Some("restart") => Some(Intent::Restart),
            _ => None,
        };
        instance.secret = handed.secret;
        instance.status = handed.status;
        instance.last_exit = handed.last_exit;
        instance.kill_reason = handed.kill_reason;
        instance.checkpoint = handed.checkpoint;
        instance.tracker =
            RestartTracker::from_ages(&handed.restart_ages_ms, handed.consecutive_restarts, now);
        instance.restart_at = at(handed.restart_in_ms);
        instance.start_deadline = at(handed.start_in_ms);
        instance.stop_deadline = at(handed.stop_in_ms);
        instance.pending_deadline = at(handed.pending_in_ms);
        instance.started = now.checked_sub(Duration::from_millis(handed.ran_ms));
        let gen = instance.gen;
        let deadlines: Vec<Instant> =
            [instance.restart_at, instance.start_deadline, instance.stop_deadline, instance.pending_deadline]
                .into_iter()
                .flatten()
                .collect();
        let (pid, pipes) = (handed.pid, take_pipes(handed.pipes));
        let Some(pid) = pid.filter(|_| state.has_process()) else {
            for at in deadlines {
                self.wake(key, gen, at);
            }
            return;
        };
        if pipes.is_none() {
            // Watched all the same: it ends of SIGPIPE at its next line, and
            // the restart policy takes it from there.
            tracing::warn!(service = %key.0, instance = key.1, pid, "its output pipes were not handed over");
        }
        let secret = instance.secret.clone();
        instance.cgroup = handed.cgroup.map(super::cgroup::Cgroup::adopt);
        let launched = instance::adopt(Spawned { pid, output: pipes }, &self.wiring(key, gen, &log, &secret));
        self.router.register_secret(
            secret,
            InstanceIdentity { service: key.0.clone(), instance: key.1, session: pid },
        );
        let Some(instance) = self.find_any(key) else { return };
        instance.pid = Some(pid);
        instance.tasks = launched.tasks;
        instance.watchers = launched.watchers;
        instance.pipes = launched.pipes;
        if handed.attached {
            // Calls wait for it to attach again rather than find no instance.
            instance.reattach_by = Some(now + start_timeout);
        }
        if let Some(watchdog) = spec_watchdog {
            // Its pings during the swap went nowhere: a full period again.
            instance.watchdog_deadline = Some(now + watchdog);
            self.wake(key, gen, now + watchdog);
        }
        if handed.attached {
            self.wake(key, gen, now + start_timeout);
        }
        for at in deadlines {
            self.wake(key, gen, at);
        }
        self.note(&key.0, key.1, &format!("taken over by the new daemon process (pid {pid} runs on)"));
        if state == State::Running && has_health {
            self.start_health(key);
        }
    }
}

/// Stops the tasks that watch the instance's process and leaves its pipes
/// open for the successor.
fn hand_off_instance(instance: &mut Instance, now: Instant) -> HandedInstance {
    for task in instance.tasks.drain(..).chain(instance.watchers.drain(..)).chain(instance.health_task.take())
    {
        task.abort();
    }
    let pipes =
        instance.pipes.take().and_then(|[stdout, stderr]| match (leave_open(stdout), leave_open(stderr)) {
            (Ok(stdout), Ok(stderr)) => Some([stdout, stderr]),
            (Err(err), _) | (_, Err(err)) => {
                tracing::error!(instance = instance.index, "cannot hand its output pipes over: {err}");
                None
            }
        });
    let (restart_ages_ms, consecutive_restarts) = instance.tracker.ages(now);
    HandedInstance {
        index: instance.index,
        gen: instance.gen,
        state: instance.state().name().to_owned(),
        desired: instance.desired,
        intent: instance.intent.map(|intent| match intent {
            Intent::Stop => "stop".to_owned(),
            Intent::Restart => "restart".to_owned(),
        }),
        pid: instance.pid,
        attached: instance.attached.is_some(),
        pipes,
        // The successor removes the cgroup once the process is gone.
        cgroup: instance.cgroup.take().map(super::cgroup::Cgroup::keep),
        secret: instance.secret.clone(),
        status: instance.status.clone(),
        last_exit: instance.last_exit.clone(),
        kill_reason: instance.kill_reason.clone(),
        checkpoint: instance.checkpoint,
        ran_ms: instance.started.map_or(0, |started| millis(now.saturating_duration_since(started))),
        restart_ages_ms,
        consecutive_restarts,
        restart_in_ms: left(instance.restart_at, now),
        start_in_ms: left(instance.start_deadline, now),
        stop_in_ms: left(instance.stop_deadline, now),
        pending_in_ms: left(instance.pending_deadline, now),
    }
}

/// Takes back the pipes a predecessor left open (closed if only one was).
fn take_pipes(pipes: Option<[RawFd; 2]>) -> Option<[std::os::fd::OwnedFd; 2]> {
    let [stdout, stderr] = pipes?;
    match (adopt_fd(stdout), adopt_fd(stderr)) {
        (Ok(stdout), Ok(stderr)) => Some([stdout, stderr]),
        (Err(err), _) | (_, Err(err)) => {
            tracing::error!("{err}");
            None
        }
    }
}

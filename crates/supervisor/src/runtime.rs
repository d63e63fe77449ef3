//! The supervisor's single decision-making task: it owns every service and
//! instance, reacts to [`Event`]s, and after each one reconciles what runs
//! with what should, publishes what changed and answers whoever waits.
//!
//! It never blocks: processes, probes and control calls run in their own
//! tasks and come back as events; deadlines come back as `Check` events.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchboard::Bus;
use switchboard_proto::supervision::ServiceStatus;
use tokio::sync::{mpsc, oneshot};

use super::config::{LogSettings, Readiness, ServiceSpec, StartType, SupervisorConfig};
use super::instance::{self, Instance, Intent, Wiring};
use super::journal::Forwarder;
use super::logs::LogBook;

/// Severities of the supervisor's own lines (syslog numbers).
pub(super) const ERR: u8 = 3;
pub(super) const WARNING: u8 = 4;
pub(super) const NOTICE: u8 = 5;
use super::process::SpawnError;
use super::state::{Event as Transition, State};
use super::{health, Answer, Event, Key, Published};
use switchboard_daemon::host::{Hold, InstanceIdentity, RouterHandle};
use switchboard_transport::Endpoint;

/// Where the runtime keeps its files and how it reaches the daemon.
pub(crate) struct Setup {
    pub data_dir: PathBuf,
    /// The daemon's endpoint, which services are told to connect to.
    pub endpoint: Endpoint,
    pub router: RouterHandle,
    /// The pid of a previous daemon that ended without stopping its
    /// services (killed, or crashed): they died with it and start again now.
    pub after_crash_of: Option<u32>,
}

/// A supervised service.
pub(super) struct Service {
    pub spec: ServiceSpec,
    pub instances: Vec<Instance>,
    pub log: Arc<Mutex<LogBook>>,
    pub last_error: String,
    /// See `ServiceStatus::note`.
    pub note: String,
    /// A changed spec from a reload, applied once the old instances stopped.
    pub replacement: Option<(ServiceSpec, bool)>,
    /// Removed by a reload: forgotten once stopped.
    pub removed: bool,
    pub hold: Option<Hold>,
    /// What was last published, to publish only changes.
    pub published: Option<ServiceStatus>,
}

/// What a waiting request is waiting for.
pub(super) enum Goal {
    /// Every instance Running, each at least at this generation.
    Running(Vec<u64>),
    Stopped,
    Paused,
}

pub(super) struct Waiter {
    pub service: String,
    pub goal: Goal,
    pub reply: oneshot::Sender<Answer>,
}

pub(crate) struct Runtime {
    pub(super) setup: Setup,
    pub(super) logs: LogSettings,
    pub(super) services: BTreeMap<String, Service>,
    pub(super) bus: Bus,
    pub(super) router: RouterHandle,
    pub(super) events: mpsc::UnboundedSender<Event>,
    pub(super) published: mpsc::UnboundedSender<Published>,
    pub(super) waiters: Vec<Waiter>,
    shutdown: Option<oneshot::Sender<()>>,
    run_dir: PathBuf,
    endpoint: String,
    pub(super) rng: u64,
}

impl Runtime {
    pub(super) fn new(
        setup: Setup,
        config: SupervisorConfig,
        bus: Bus,
        events: mpsc::UnboundedSender<Event>,
        published: mpsc::UnboundedSender<Published>,
    ) -> Self {
        let run_dir = setup.data_dir.join("run");
        let endpoint = setup.endpoint.to_string();
        let seed = (u64::from(std::process::id()) ^ (super::logs::now_ms() << 16)) | 1;
        let mut runtime = Self {
            router: setup.router.clone(),
            setup,
            logs: config.logs.clone(),
            services: BTreeMap::new(),
            bus,
            events,
            published,
            waiters: Vec::new(),
            shutdown: None,
            run_dir,
            endpoint,
            rng: seed,
        };
        for spec in config.services {
            runtime.add_service(spec);
        }
        if let Some(pid) = runtime.setup.after_crash_of {
            let text = format!(
                "the previous daemon (pid {pid}) ended without stopping this service (killed or crashed); \
                 its processes died with it"
            );
            let names: Vec<String> = runtime.services.keys().cloned().collect();
            for name in names {
                runtime.note_at(WARNING, &name, 0, &text);
                if let Some(service) = runtime.services.get_mut(&name) {
                    service.note =
                        format!("started again after the previous daemon (pid {pid}) was killed or crashed");
                }
            }
        }
        runtime
    }

    pub(super) async fn run(mut self, mut inbox: mpsc::UnboundedReceiver<Event>) {
        self.settle();
        while let Some(event) = inbox.recv().await {
            if let Event::HandOff { reply } = event {
                let _ = reply.send(self.hand_off());
                return;
            }
            self.handle(event);
            self.settle();
            if self.shutdown.is_some() && !self.any_process() {
                if let Some(done) = self.shutdown.take() {
                    let _ = done.send(());
                }
                return;
            }
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Request { method, payload, caller, reply } => {
                self.request(&method, &payload, caller, reply)
            }
            Event::Exited { key, gen, status } => self.exited(&key, gen, status),
            Event::Notice { key, gen, notice } => self.notice(&key, gen, notice),
            Event::Check { key, gen } => self.check(&key, gen),
            Event::Health { key, gen, result } => self.health(&key, gen, result),
            Event::ControlDone { key, gen, code, result } => self.control_done(&key, gen, code, result),
            Event::Reload { config, reply } => drop(reply.send(self.reload(config))),
            Event::HandOff { .. } => {} // `run` handles it: it ends the runtime
            Event::Shutdown { done } => {
                tracing::info!("stopping supervised services");
                self.shutdown = Some(done);
                for service in self.services.values_mut() {
                    for instance in &mut service.instances {
                        instance.desired = false;
                    }
                }
            }
        }
    }

    pub(super) fn add_service(&mut self, spec: ServiceSpec) {
        let name = spec.name.to_string();
        let dir = self.setup.data_dir.join("logs");
        let log = match LogBook::open(&dir, &name, self.logs.clone()) {
            Ok(log) => log,
            Err(err) => {
                // A log directory that cannot be opened should not stop the
                // service; its lines still reach `logs --follow` and are
                // written once the directory can be.
                tracing::warn!(service = %name, "cannot open logs in {}: {err}", dir.display());
                LogBook::unopened(&dir, &name, self.logs.clone())
            }
        };
        let mut log = log;
        log.forward_with(Arc::new(Forwarder::new(self.logs.forwarding.clone())), spec.log_to_journal);
        let desired = spec.start == StartType::Auto;
        let instances = (1..=spec.instances).map(|i| Instance { desired, ..Instance::new(i) }).collect();
        self.services.insert(
            name,
            Service {
                spec,
                instances,
                log: Arc::new(Mutex::new(log)),
                last_error: String::new(),
                note: String::new(),
                replacement: None,
                removed: false,
                hold: None,
                published: None,
            },
        );
    }

    /// Brings processes in line with what is desired, publishes changes,
    /// answers waiters.
    pub(super) fn settle(&mut self) {
        self.finish_replacements();
        let names: Vec<String> = self.services.keys().cloned().collect();
        // A service started here may be Running at once (`ready = "started"`),
        // which lets its dependents start in the same settle: repeat until
        // nothing changes (at most once per service).
        for _ in 0..=names.len() {
            let mut changed = false;
            for name in &names {
                let count = self.services.get(name).map_or(0, |s| s.instances.len());
                for index in 0..count {
                    changed |= self.reconcile(name, index);
                }
            }
            if !changed {
                break;
            }
        }
        for name in &names {
            self.publish(name);
        }
        self.answer_waiters();
    }

    /// Starts or stops one instance to match what is desired; whether it did.
    fn reconcile(&mut self, name: &str, index: usize) -> bool {
        let deps_running = self.requires_running(name);
        let dependents_alive = self.dependents_alive(name);
        let shutting_down = self.shutdown.is_some();
        let Some(instance) = self.instance_mut(name, index) else { return false };
        let state = instance.state();
        if instance.desired && !shutting_down {
            let startable = matches!(state, State::Stopped | State::Failed) && instance.restart_at.is_none();
            if startable && deps_running {
                self.launch(name, index);
                return true;
            }
        } else {
            instance.restart_at = None;
            if state.has_process() && state != State::StopPending && !dependents_alive {
                self.begin_stop(name, index, Intent::Stop);
                return true;
            }
        }
        false
    }

    /// Whether every service `name` requires has all instances Running.
    fn requires_running(&self, name: &str) -> bool {
        let Some(service) = self.services.get(name) else { return false };
        service.spec.requires.iter().all(|dep| {
            self.services.get(dep).is_some_and(|d| d.instances.iter().all(|i| i.state() == State::Running))
        })
    }

    /// Whether a service that requires `name` still has a live process.
    fn dependents_alive(&self, name: &str) -> bool {
        self.services.values().any(|s| {
            s.spec.requires.iter().any(|r| r == name) && s.instances.iter().any(|i| i.state().has_process())
        })
    }

    fn any_process(&self) -> bool {
        self.services.values().any(|s| s.instances.iter().any(|i| i.state().has_process()))
    }

    pub(super) fn instance_mut(&mut self, name: &str, index: usize) -> Option<&mut Instance> {
        self.services.get_mut(name)?.instances.get_mut(index)
    }

    pub(super) fn find(&mut self, key: &Key, gen: u64) -> Option<&mut Instance> {
        let instance = self.services.get_mut(&key.0)?.instances.get_mut(key.1.checked_sub(1)? as usize)?;
        (instance.gen == gen).then_some(instance)
    }

    /// Records a line from the supervisor itself in the service's log (notice).
    pub(super) fn note(&self, name: &str, instance: u32, text: &str) {
        self.note_at(NOTICE, name, instance, text);
    }

    /// The same at a severity of its own (`WARNING`, `ERR`).
    pub(super) fn note_at(&self, level: u8, name: &str, instance: u32, text: &str) {
        if let Some(service) = self.services.get(name) {
            let mut log = service.log.lock().unwrap_or_else(|p| p.into_inner());
            let line = log.append(instance, "supervisor", text, level, "");
            let _ = self.published.send(Published::Log(line));
        }
    }

    pub(super) fn transition(&mut self, key: &Key, event: Transition) -> bool {
        let Some(instance) = self.find_any(key) else { return false };
        match instance.state().next(event) {
            Ok(next) => {
                let from = instance.state();
                instance.state.0 = next;
                tracing::info!(service = %key.0, instance = key.1, "{from} → {next}");
                self.note(&key.0, key.1, &format!("{from} → {next}"));
                if next == State::Running {
                    self.on_running(key);
                }
                true
            }
            Err(err) => {
                tracing::debug!(service = %key.0, instance = key.1, "ignored: {err}");
                false
            }
        }
    }

    pub(super) fn find_any(&mut self, key: &Key) -> Option<&mut Instance> {
        self.services.get_mut(&key.0)?.instances.get_mut(key.1.checked_sub(1)? as usize)
    }

    /// Schedules a `Check` of the instance at `at`.
    pub(super) fn wake(&self, key: &Key, gen: u64, at: Instant) {
        let (events, key) = (self.events.clone(), key.clone());
        tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            let _ = events.send(Event::Check { key, gen });
        });
    }

    fn launch(&mut self, name: &str, index: usize) {
        let Some(service) = self.services.get_mut(name) else { return };
        let spec = service.spec.clone();
        let log = service.log.clone();
        let Some(instance) = service.instances.get_mut(index) else { return };
        instance.gen += 1;
        instance.clear_process();
        instance.status.clear();
        let (gen, number) = (instance.gen, instance.index);
        let key: Key = (name.to_owned(), number);
        let secret = match switchboard_daemon::host::new_secret() {
            Ok(secret) => secret,
            Err(err) => {
                return self.start_failed(&key, format!("cannot make an instance secret: {err}"), true)
            }
        };
        instance.secret = secret.clone();
        self.transition(&key, Transition::Start);
        let launched = instance::launch(&spec, self.wiring(&key, gen, &log, &secret));
        let now = Instant::now();
        match launched {
            Err(err) => {
                let permanent = !matches!(err, SpawnError::Exec { .. });
                self.transition(&key, Transition::Exited);
                self.start_failed(&key, err.to_string(), permanent);
            }
            Ok(launched) => {
                let cgroup = match super::cgroup::Cgroup::apply(
                    &format!("{name}-{number}"),
                    &spec.cgroup,
                    launched.pid,
                ) {
                    Ok(cgroup) => cgroup,
                    Err(why) => {
                        self.note_at(
                            WARNING,
                            name,
                            number,
                            &format!("memory_max and cpu_max are not applied: {why}"),
                        );
                        None
                    }
                };
                let identity =
                    InstanceIdentity { service: name.to_owned(), instance: number, session: launched.pid };
                self.router.register_secret(secret, identity);
                let Some(instance) = self.find_any(&key) else { return };
                instance.pid = Some(launched.pid);
                instance.tasks = launched.tasks;
                instance.watchers = launched.watchers;
                instance.pipes = launched.pipes;
                instance.started = Some(now);
                instance.cgroup = cgroup;
                if let Some(watchdog) = spec.watchdog {
                    instance.watchdog_deadline = Some(now + watchdog);
                    self.wake(&key, gen, now + watchdog);
                }
                self.note(name, number, &format!("started pid {}", launched.pid));
                if spec.ready == Readiness::Started {
                    self.transition(&key, Transition::Ready);
                } else if let Some(instance) = self.find_any(&key) {
                    instance.start_deadline = Some(now + spec.start_timeout);
                    self.wake(&key, gen, now + spec.start_timeout);
                }
            }
        }
    }

    /// Where the process of instance `key` (launch `gen`) reports to.
    pub(super) fn wiring<'a>(
        &'a self,
        key: &Key,
        gen: u64,
        log: &'a Arc<Mutex<LogBook>>,
        secret: &'a str,
    ) -> Wiring<'a> {
        Wiring {
            key: key.clone(),
            gen,
            events: &self.events,
            log,
            published: &self.published,
            run_dir: &self.run_dir,
            endpoint: &self.endpoint,
            secret,
        }
    }

    /// A start that could not even spawn: retried under the restart policy,
    /// or Failed at once when retrying cannot help (unknown user, root).
    fn start_failed(&mut self, key: &Key, why: String, permanent: bool) {
        tracing::warn!(service = %key.0, instance = key.1, "cannot start: {why}");
        self.note_at(ERR, &key.0, key.1, &format!("cannot start: {why}"));
        if let Some(service) = self.services.get_mut(&key.0) {
            service.last_error = why.clone();
        }
        if let Some(instance) = self.find_any(key) {
            instance.last_exit = why;
        }
        if permanent {
            self.give_up(key);
        } else {
            self.after_failure(key, Duration::ZERO, true);
        }
    }

    fn on_running(&mut self, key: &Key) {
        let Some(service) = self.services.get_mut(&key.0) else { return };
        service.last_error.clear();
        let check = service.spec.health.clone();
        let Some(instance) = self.find_any(key) else { return };
        instance.start_deadline = None;
        instance.pending_deadline = None;
        if check.is_some() {
            self.start_health(key);
        }
    }

    /// Starts the instance's health probe loop, unless it runs already.
    pub(super) fn start_health(&mut self, key: &Key) {
        let check = self.services.get(&key.0).and_then(|s| s.spec.health.clone());
        let (events, bus) = (self.events.clone(), self.bus.clone());
        let Some(instance) = self.find_any(key) else { return };
        let Some(check) = check else { return };
        if instance.health_task.is_some() {
            return; // Running again after a continue: the loop still runs
        }
        instance.health = "starting".into();
        let (probe_key, gen) = (key.clone(), instance.gen);
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(check.interval).await;
                let result = health::probe(&check, &bus).await;
                if events.send(Event::Health { key: probe_key.clone(), gen, result }).is_err() {
                    return;
                }
            }
        });
        instance.health_task = Some(task.abort_handle());
    }
}

//! The supervisor, an app hosted by `switchboard up`: starts the services
//! the config file declares (`[services.*]`, `[logs]`), keeps them in the
//! state they should be in, and answers `$sys.services` on the bus.
//!
//! It is a client of its daemon, like the CLI, over a session the host
//! opens for it as the daemon itself: it serves `$sys.services`, sends
//! controls to bus-aware instances as calls, and publishes every transition
//! on `sys.services.<name>` (retained) and every captured log line on
//! `sys.logs.<name>`. It reaches the router only through the daemon's
//! narrow handle ([`RouterHandle`]): call holds, so calls to a starting
//! service wait and calls to a paused or failed one get a typed error;
//! instance secrets; which connection registered an instance.
//!
//! All decisions are made by one task ([`runtime`]) fed [`Event`]s; the
//! lifecycle ([`state`]) and restart policy ([`restart`]) are pure code.

mod cgroup;
mod check;
pub mod config;
mod handoff;
mod health;
mod instance;
mod journal;
mod logs;
mod notify;
mod process;
mod reactions;
mod reload;
mod requests;
pub mod restart;
mod runtime;
pub mod state;
mod status;

use bytes::Bytes;
use switchboard::{Bus, Reject};
use switchboard_daemon::host::{
    App, AppContext, AppError, ConfigError, Principal, Reloader, Section, Successor,
};
use switchboard_proto::supervision::{self as sup, LogLine};
use switchboard_proto::{Caller, ErrorCode};
use tokio::sync::{mpsc, oneshot};

pub use config::SupervisorConfig;

/// An instance: (service name, instance number from 1).
pub(crate) type Key = (String, u32);
/// A `$sys.services` answer.
pub(crate) type Answer = Result<Bytes, (ErrorCode, String)>;

/// Everything the runtime reacts to.
pub(crate) enum Event {
    /// A `$sys.services` call.
    Request {
        method: String,
        payload: Bytes,
        caller: Caller,
        reply: oneshot::Sender<Answer>,
    },
    Exited {
        key: Key,
        gen: u64,
        status: std::io::Result<std::process::ExitStatus>,
    },
    Notice {
        key: Key,
        gen: u64,
        notice: notify::Notice,
    },
    /// A deadline of the instance may have passed.
    Check {
        key: Key,
        gen: u64,
    },
    Health {
        key: Key,
        gen: u64,
        result: Result<(), String>,
    },
    /// A `__control` call to a bus-aware instance came back.
    ControlDone {
        key: Key,
        gen: u64,
        code: u8,
        result: Result<Bytes, String>,
    },
    /// The host accepted a new config file; this is the supervisor's part.
    Reload {
        config: SupervisorConfig,
        reply: oneshot::Sender<Bytes>,
    },
    Shutdown {
        done: oneshot::Sender<()>,
    },
    /// The daemon re-executes itself: describe every instance and stop
    /// watching them (they keep running).
    HandOff {
        reply: oneshot::Sender<Bytes>,
    },
}

/// What the runtime publishes, in order.
pub(crate) enum Published {
    State { service: String, status: Bytes },
    Log(LogLine),
}

/// The running supervisor.
pub struct Supervisor {
    events: mpsc::UnboundedSender<Event>,
    task: tokio::task::JoinHandle<()>,
    /// Removed on a clean stop; see [`mark_running`].
    marker: std::path::PathBuf,
}

const METHODS: &[&str] = &[
    sup::STATUS,
    sup::START,
    sup::STOP,
    sup::RESTART,
    sup::PAUSE,
    sup::CONTINUE,
    sup::CONTROL,
    sup::RELOAD,
    sup::REEXEC,
    sup::LOGS,
    sup::ATTACH,
    sup::PROGRESS,
    sup::LOG,
];

impl App for Supervisor {
    const NAME: &'static str = "supervisor";
    const SECTIONS: &'static [&'static str] = config::SECTIONS;
    type Config = SupervisorConfig;

    fn configure(section: &Section<'_>) -> Result<SupervisorConfig, ConfigError> {
        SupervisorConfig::configure(section)
    }

    fn check(section: &Section<'_>) -> Vec<ConfigError> {
        check::problems(section)
    }

    /// Connects to the daemon, registers `$sys.services`, puts a hold on
    /// every configured service and starts the auto-start ones.
    async fn start(
        context: AppContext,
        config: SupervisorConfig,
        inherited: Option<Bytes>,
    ) -> Result<Self, AppError> {
        let failed = |err: &dyn std::fmt::Display| AppError::new(Self::NAME, err);
        let endpoint =
            context.endpoints.first().cloned().ok_or_else(|| failed(&"the daemon listens nowhere"))?;
        let dial = context.router.dialer(Principal::daemon(), "switchboard-supervisor");
        let bus = Bus::connect_hosted(endpoint.clone(), "switchboard-supervisor".into(), dial)
            .await
            .map_err(|err| failed(&format!("cannot connect to its own daemon: {err}")))?;
        // Its calls (health checks) go through the daemon: they check the
        // path every caller starts on, and the daemon grants itself nothing.
        bus.set_direct_calls(false);
        let (events, inbox) = mpsc::unbounded_channel();
        let service = serve_requests(&bus, &events, context.reloader.clone(), context.successor.clone())
            .await
            .map_err(|err| failed(&format!("cannot register $sys.services: {err}")))?;
        let (published, outbox) = mpsc::unbounded_channel();
        tokio::spawn(publish(bus.clone(), outbox));
        let marker = context.data_dir.join(RUNNING_MARKER);
        let after_crash_of = mark_running(&marker);
        let setup =
            runtime::Setup { data_dir: context.data_dir, endpoint, router: context.router, after_crash_of };
        let mut runtime = runtime::Runtime::new(setup, config, bus, events.clone(), published);
        if let Some(state) = inherited {
            runtime.adopt(&state);
        }
        // Holds in place before the host lets clients in.
        runtime.settle();
        let task = tokio::spawn(async move {
            runtime.run(inbox).await;
            drop(service);
        });
        Ok(Self { events, task, marker })
    }

    async fn reload(&mut self, config: SupervisorConfig) -> Result<Bytes, String> {
        let (reply, answer) = oneshot::channel();
        self.events.send(Event::Reload { config, reply }).map_err(|_| "the supervisor stopped".to_owned())?;
        answer.await.map_err(|_| "the supervisor stopped".to_owned())
    }

    /// Stops every service, dependents first, and waits for them.
    async fn stop(self) {
        let (done, stopped) = oneshot::channel();
        if self.events.send(Event::Shutdown { done }).is_ok() {
            let _ = stopped.await;
        }
        let _ = self.task.await;
        // A clean stop: the next daemon starts nothing "again".
        let _ = std::fs::remove_file(&self.marker);
    }

    /// Stops watching its services, which keep running, and describes them
    /// for the successor daemon process (the marker stays: same pid).
    async fn hand_off(self) -> Option<Bytes> {
        let (reply, described) = oneshot::channel();
        let state = match self.events.send(Event::HandOff { reply }) {
            Ok(()) => described.await.ok(),
            Err(_) => None,
        };
        let _ = self.task.await;
        state
    }
}

/// The file that says a daemon is running this supervisor (its pid); left
/// behind only when that daemon did not stop its services.
const RUNNING_MARKER: &str = "supervisor.pid";

/// Records this daemon as running; returns the pid of a previous one that
/// never stopped cleanly, if the marker says there was one.
fn mark_running(marker: &std::path::Path) -> Option<u32> {
    let previous = std::fs::read_to_string(marker).ok().and_then(|text| text.trim().parse::<u32>().ok());
    if let Err(err) = std::fs::create_dir_all(marker.parent().unwrap_or(marker))
        .and_then(|()| std::fs::write(marker, std::process::id().to_string()))
    {
        tracing::warn!("cannot write {}: {err} (a crash will not be noticed next time)", marker.display());
    }
    previous.filter(|pid| *pid != std::process::id())
}

/// Serves `$sys.services`: every method becomes an [`Event`] for the
/// runtime, except `reload`, which asks the host to re-read the whole file
/// (the host then hands the supervisor its part), and `reexec`, which asks
/// the host to hand off to a successor process.
async fn serve_requests(
    bus: &Bus,
    events: &mpsc::UnboundedSender<Event>,
    reloader: Reloader,
    successor: Successor,
) -> Result<switchboard::Service, switchboard::RegisterError> {
    let mut builder = bus.serve(sup::SERVICES_SERVICE)?;
    for method in METHODS {
        let (events, reloader, successor) = (events.clone(), reloader.clone(), successor.clone());
        builder = builder.method(method, move |request| {
            let (events, reloader, successor) = (events.clone(), reloader.clone(), successor.clone());
            async move {
                if request.method.as_str() == sup::REEXEC {
                    let binary = successor
                        .request()
                        .await
                        .map_err(|why| Reject::with_code(ErrorCode::BadRequest, why))?;
                    return Ok(Bytes::from(sup_encode(&binary)));
                }
                if request.method.as_str() == sup::RELOAD {
                    let mut reports = reloader
                        .reload()
                        .await
                        .map_err(|why| Reject::with_code(ErrorCode::BadRequest, why))?;
                    return Ok(reports.remove(<Supervisor as App>::NAME).unwrap_or_default());
                }
                let (reply, answer) = oneshot::channel();
                let method = request.method.to_string();
                let _ = events.send(Event::Request {
                    method,
                    payload: request.payload,
                    caller: request.caller,
                    reply,
                });
                match answer.await {
                    Ok(Ok(bytes)) => Ok(bytes),
                    Ok(Err((code, message))) => Err(Reject::with_code(code, message)),
                    Err(_) => Err(Reject::with_code(ErrorCode::ShuttingDown, "the supervisor stopped")),
                }
            }
        });
    }
    builder.start().await
}

/// Publishes state changes (retained) and log lines, in the order made.
async fn publish(bus: Bus, mut outbox: mpsc::UnboundedReceiver<Published>) {
    use switchboard::PublishOptions;
    while let Some(item) = outbox.recv().await {
        let (topic, payload, retain) = match item {
            Published::State { service, status } => {
                (format!("{}{service}", sup::STATE_TOPIC_PREFIX), status, true)
            }
            Published::Log(line) => {
                (format!("{}{}", sup::LOG_TOPIC_PREFIX, line.service), Bytes::from(sup_encode(&line)), false)
            }
        };
        let Ok(topic) = switchboard_proto::Topic::parse(&topic) else { continue };
        let options = PublishOptions { retain, ..PublishOptions::default() };
        if let Err(err) = bus.publish_with(topic, payload, options).await {
            tracing::debug!("supervisor publish failed: {err}");
        }
    }
}

fn sup_encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    switchboard_proto::sys::encode(value)
}

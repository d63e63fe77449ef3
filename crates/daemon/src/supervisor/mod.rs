//! The supervisor: starts the services a TOML config declares, keeps them
//! in the state they should be in, and answers `$sys.services` on the bus.
//!
//! It is a client of its own daemon, like the CLI: it serves
//! `$sys.services` (allowed because the kernel says the connection is this
//! process), sends controls to bus-aware instances as calls, and publishes
//! every transition on `sys.services.<name>` (retained) and every captured
//! log line on `sys.logs.<name>`. The one thing it touches directly is the
//! router's call holds ([`crate::router::Hold`]), so calls to a starting
//! service wait and calls to a paused or failed one get a typed error.
//!
//! All decisions are made by one task ([`runtime`]) fed [`Event`]s; the
//! lifecycle ([`state`]) and restart policy ([`restart`]) are pure code.

mod cgroup;
pub mod config;
mod health;
mod instance;
pub use instance::new_secret;
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

use std::path::PathBuf;

use bytes::Bytes;
use switchboard::{Bus, Reject};
use switchboard_proto::supervision::{self as sup, LogLine};
use switchboard_proto::{Caller, ErrorCode};
use switchboard_transport::Endpoint;
use tokio::sync::{mpsc, oneshot};

pub use config::{ConfigError, SupervisorConfig};

use crate::config_file::ConfigFile;
use crate::session::SharedRouter;

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
    Reload {
        reply: Option<oneshot::Sender<Answer>>,
    },
    Shutdown {
        done: oneshot::Sender<()>,
    },
}

/// What the runtime publishes, in order.
pub(crate) enum Published {
    State { service: String, status: Bytes },
    Log(LogLine),
}

/// Where the supervisor gets its services and how it reaches the bus.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The config file (`up --config`); re-read on reload.
    pub config: Option<PathBuf>,
    /// A config given as text (`up --demo`), used when there is no file.
    pub builtin: Option<String>,
    pub data_dir: PathBuf,
    /// The daemon's own endpoint, which services are told to connect to.
    pub endpoint: Endpoint,
}

impl Setup {
    /// Reads the whole config file (services and policy).
    pub fn load(&self) -> Result<ConfigFile, ConfigError> {
        match (&self.config, &self.builtin) {
            (Some(path), _) => ConfigFile::load(path),
            (None, Some(text)) => ConfigFile::parse(text),
            (None, None) => Ok(ConfigFile::default()),
        }
    }
}

/// Why the supervisor could not start.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("the supervisor cannot connect to its own daemon: {0}")]
    Connect(#[from] switchboard::ConnectError),
    #[error("the supervisor cannot register $sys.services: {0}")]
    Register(#[from] switchboard::RegisterError),
}

/// The running supervisor.
pub struct Supervisor {
    events: mpsc::UnboundedSender<Event>,
    task: tokio::task::JoinHandle<()>,
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
    sup::LOGS,
    sup::ATTACH,
    sup::PROGRESS,
    sup::LOG,
];

impl Supervisor {
    /// Connects to the daemon, registers `$sys.services` and starts the
    /// auto-start services of `config` (read by [`Setup::load`] before the
    /// daemon bound its sockets, so a broken file stops it starting).
    pub async fn start(
        setup: Setup,
        config: SupervisorConfig,
        router: SharedRouter,
    ) -> Result<Self, SupervisorError> {
        let bus = Bus::connect_endpoint(setup.endpoint.clone(), "switchboard-supervisor".into()).await?;
        // Its calls (health checks) go through the daemon: they check the
        // path every caller starts on, and the daemon grants itself nothing.
        bus.set_direct_calls(false);
        let (events, inbox) = mpsc::unbounded_channel();
        let mut builder = bus.serve(sup::SERVICES_SERVICE).map_err(switchboard::RegisterError::from)?;
        for method in METHODS {
            let events = events.clone();
            builder = builder.method(method, move |request| {
                let events = events.clone();
                async move {
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
        let service = builder.start().await?;
        if let Ok(name) = switchboard_proto::ServiceName::parse(sup::SERVICES_SERVICE) {
            crate::session::lock(&router).set_hold(&name, None);
        }
        let (published, outbox) = mpsc::unbounded_channel();
        tokio::spawn(publish(bus.clone(), outbox));
        let runtime = runtime::Runtime::new(setup, config, bus, router, events.clone(), published);
        let task = tokio::spawn(async move {
            runtime.run(inbox).await;
            drop(service);
        });
        Ok(Self { events, task })
    }

    /// A function that re-reads the config and applies what changed (SIGHUP).
    pub fn reload_handle(&self) -> impl Fn() + Send + 'static {
        let events = self.events.clone();
        move || drop(events.send(Event::Reload { reply: None }))
    }

    /// Stops every service, dependents first, and waits for them.
    pub async fn shutdown(self) {
        let (done, stopped) = oneshot::channel();
        if self.events.send(Event::Shutdown { done }).is_ok() {
            let _ = stopped.await;
        }
        let _ = self.task.await;
    }
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

//! The Switchboard daemon, as a library the `switchboard up` command starts.
//!
//! Data flows one way: **listener → session reader → router → destination
//! session's outbox → its writer**. The router ([`router`]) owns all routing
//! state; sessions ([`session`]) own sockets; the daemon's own services
//! ([`admin`], `$sys.*`) answer through the same router as anyone else.
//!
//! Apps beside the router (the supervisor, …) are hosted through [`host`]:
//! each is started with its own part of the config file before any client
//! is let in, and reaches the router only through [`host::RouterHandle`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), switchboard_daemon::DaemonError> {
//! use switchboard_daemon::{host::Apps, Config, Daemon};
//! let daemon = Daemon::bind(Config::default(), Apps::new()).await?;
//! let stop = tokio_util::sync::CancellationToken::new();
//! daemon.run(stop, || println!("ready")).await?;
//! # Ok(()) }
//! ```
#![deny(unsafe_code)]

pub mod admin;
pub mod config_file;
pub mod handoff;
pub mod host;
pub mod listen;
pub mod policy;
pub mod private_dir;
pub mod queues;
pub mod router;
mod running;
pub mod session;

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchboard_proto::DEFAULT_MAX_FRAME;
use switchboard_transport::{default_socket_path, Endpoint};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use config_file::ConfigFile;
pub use handoff::{Carried, HandOff};
use host::{Apps, Successor};
use listen::Listener;
use router::Router;

/// Limits every connection lives under.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest frame accepted (length prefix excluded).
    pub max_frame: u32,
    /// Most calls one connection may have awaiting replies.
    pub max_inflight: u32,
    /// Most connections at once; further clients wait in the kernel's backlog.
    pub max_connections: usize,
    /// Bytes queued for a connection before senders to it wait.
    pub congested_at: usize,
    /// How long a congested connection may read nothing before it is dropped.
    pub slow_consumer: Duration,
    /// Bytes queued for one connection past which it is dropped at once,
    /// whatever is being sent to it (replies, errors, events, deliveries).
    pub max_outbox: usize,
    /// How long a new connection has to send its `Hello`.
    pub handshake_timeout: Duration,
    /// Most connections still in their handshake, in total and from one
    /// peer (uid or address); the daemon's own are not counted.
    pub max_handshakes: usize,
    pub max_handshakes_per_peer: usize,
    /// Most subscriptions one connection may hold.
    pub max_subscriptions: usize,
    /// Messages a subscription keeps for a congested subscriber before the
    /// oldest are dropped (and counted).
    pub subscription_backlog: usize,
    /// Bytes all subscriptions of one connection may keep in their backlogs
    /// together; past it the oldest of the receiving subscription go (counted).
    pub session_backlog_bytes: usize,
    /// Most topics that keep a retained value.
    pub max_retained: usize,
    /// Most calls waiting, daemon-wide, for services that are starting.
    pub max_parked: usize,
    /// Most blobs the daemon holds for others at once (waiting in
    /// connections' queues and backlogs), and their total bytes; a blob
    /// past either is refused with `overloaded`.
    pub max_blobs_held: usize,
    pub max_blob_bytes_held: usize,
    /// Most named shared regions at once, and their total data bytes; an
    /// open that would create one past either is refused with `overloaded`.
    pub max_regions: usize,
    pub max_region_bytes: usize,
    /// How long a publisher is held back for a subscriber whose connection
    /// is congested before that subscriber lags instead (drops its oldest),
    /// until it catches up.
    pub publish_hold: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame: DEFAULT_MAX_FRAME,
            max_inflight: 4096,
            max_connections: 1024,
            congested_at: 4 * 1024 * 1024,
            slow_consumer: Duration::from_secs(10),
            // Room for the congestion mark plus a maximum frame, so one
            // large legitimate reply never trips it.
            max_outbox: 4 * 1024 * 1024 + DEFAULT_MAX_FRAME as usize + 1024 * 1024,
            handshake_timeout: Duration::from_secs(5),
            max_handshakes: 1024,
            max_handshakes_per_peer: 256,
            max_subscriptions: 10_000,
            subscription_backlog: 8192,
            session_backlog_bytes: 1024 * 1024,
            max_retained: 10_000,
            max_parked: 10_000,
            max_blobs_held: 4096,
            max_blob_bytes_held: 64 << 30,
            max_regions: 256,
            max_region_bytes: 16 << 30,
            publish_hold: Duration::from_millis(250),
        }
    }
}

/// Everything `switchboard up` can be told; the default works with no file.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Vec<Endpoint>,
    pub limits: Limits,
    /// How long shutdown waits for connections to flush their goodbyes.
    pub shutdown_grace: Duration,
    /// Where durable queues keep their data.
    pub data_dir: PathBuf,
    /// Whether putting to or consuming from an undeclared queue creates it.
    pub queue_auto_create: bool,
    /// Most queues the daemon holds (dead-letter queues it makes itself
    /// aside): a put or consumer that would create one more is refused.
    pub max_queues: usize,
    /// Size at which the queue log starts a new segment (and reclaims space).
    pub queue_segment_bytes: u64,
    /// The config file (`up --config`), re-read on reload.
    pub config_file: Option<PathBuf>,
    /// A config given as text (`up --demo`) when there is no file.
    pub config_text: Option<String>,
    /// TOML added after the config (file or text) each time it is read:
    /// what the command line sets (`up --gateway ADDR`). The same table in
    /// the file too is a duplicate, refused like any in one file.
    pub config_overlay: Option<String>,
    /// Allow plain (unencrypted, unauthenticated) TCP listeners on loopback;
    /// also `allow_plain_tcp` in the config's `[security]`.
    pub allow_plain_tcp: bool,
    /// Listening sockets handed over at start (systemd socket activation),
    /// served beside `listen`.
    pub inherited: Vec<listen::Inherited>,
}

/// The default of [`Config::max_queues`].
pub const DEFAULT_MAX_QUEUES: usize = 10_000;

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: vec![Endpoint::Unix(default_socket_path())],
            limits: Limits::default(),
            shutdown_grace: Duration::from_secs(2),
            data_dir: default_data_dir(),
            queue_auto_create: true,
            max_queues: DEFAULT_MAX_QUEUES,
            queue_segment_bytes: 64 * 1024 * 1024,
            config_file: None,
            config_text: None,
            config_overlay: None,
            allow_plain_tcp: false,
            inherited: Vec::new(),
        }
    }
}

/// `$XDG_STATE_HOME/switchboard`, else `~/.local/state/switchboard`; as
/// root `/var/lib/switchboard`.
pub fn default_data_dir() -> PathBuf {
    if rustix::process::geteuid().is_root() {
        return PathBuf::from("/var/lib/switchboard");
    }
    if let Some(state) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(state).join("switchboard");
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/state/switchboard"),
        None => {
            std::env::temp_dir().join(format!("switchboard-{}-state", rustix::process::getuid().as_raw()))
        }
    }
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("another switchboard daemon{} is already listening on {}", pid.map(|p| format!(" (pid {p})")).unwrap_or_default(), socket.display())]
    AlreadyRunning { socket: PathBuf, pid: Option<u32> },
    #[error("cannot listen on {endpoint}: {source}")]
    Listen { endpoint: Endpoint, source: io::Error },
    #[error("cannot serve a socket handed over by the service manager (LISTEN_FDS): {why}")]
    Inherited { why: String },
    #[error(
        "refusing plain TCP on {endpoint}: without TLS only loopback addresses (127.0.0.1, ::1) are allowed"
    )]
    NotLoopback { endpoint: Endpoint },
    #[error(
        "refusing plain TCP on {endpoint}: it carries no identity and no encryption; allow it explicitly \
         (`up --allow-plain-tcp`, or `allow_plain_tcp = true` in [security]) and grant `anonymous` or a token"
    )]
    PlainTcpNotAllowed { endpoint: Endpoint },
    #[error("unsafe socket directory {}: {why}", dir.display())]
    SocketDir { dir: PathBuf, why: String },
    #[error("unsafe data directory {}: {why}", dir.display())]
    DataDir { dir: PathBuf, why: String },
    #[error(transparent)]
    Store(#[from] queues::store::StoreError),
    #[error(transparent)]
    Config(#[from] config_file::ConfigError),
    #[error("{endpoint} needs [security.tls] with cert and key")]
    NoTlsConfig { endpoint: Endpoint },
    #[error(transparent)]
    Tls(#[from] switchboard_transport::tls::TlsError),
    #[error(transparent)]
    App(#[from] host::AppError),
}

/// A daemon whose endpoints are bound and whose queue store is open.
pub struct Daemon {
    listeners: Vec<Arc<Listener>>,
    store: queues::store::Store,
    recovered: queues::store::Recovered,
    policy: (policy::Policy, policy::Security),
    apps: Apps,
    inherited: Option<Carried>,
    hand_off: CancellationToken,
    /// Asks whether a successor can take over (the CLI checks the binary).
    preflight: Option<Preflight>,
    successor: (Successor, tokio::sync::mpsc::Receiver<oneshot::Sender<Result<String, String>>>),
    reload: Arc<tokio::sync::Notify>,
    config: Config,
}

impl Daemon {
    /// Reads the config file (the policy's part and every app's), binds
    /// every configured endpoint and opens (recovers) the queue store.
    pub async fn bind(config: Config, mut apps: Apps) -> Result<Self, DaemonError> {
        let (policy, security) = configure(&config, &mut apps)?;
        let allow_tcp = config.allow_plain_tcp || security.allow_plain_tcp;
        let tls = match &security.tls {
            Some(t) => Some(Arc::new(switchboard_transport::tls::TlsServer::from_files(
                &t.cert,
                &t.key,
                t.client_ca.as_deref(),
                t.require_client_cert,
            )?)),
            None => None,
        };
        let rules = listen::Rules { socket_mode: security.socket_mode, allow_plain_tcp: allow_tcp, tls };
        let mut listeners = listen::adopt(&config.inherited, &rules)?;
        listeners.extend(listen::bind(&config.listen, &rules).await?);
        let listeners = listeners.into_iter().map(Arc::new).collect();
        if config.data_dir.starts_with(std::env::temp_dir()) {
            // The fallback without a home: a shared place, so it must be ours.
            private_dir::ensure(&config.data_dir, 0o700)
                .map_err(|why| DaemonError::DataDir { dir: config.data_dir.clone(), why })?;
        }
        let dir = config.data_dir.join("queues");
        let (store, recovered) = queues::store::Store::open(&dir, config.queue_segment_bytes.max(4096))?;
        if !recovered.messages.is_empty() || recovered.truncated > 0 {
            tracing::info!(
                messages = recovered.messages.len(),
                queues = recovered.declares.len(),
                cut_bytes = recovered.truncated,
                "queue store recovered from {}",
                dir.display()
            );
        }
        let reload = Arc::new(tokio::sync::Notify::new());
        let policy = (policy, security);
        let (inherited, hand_off) = (None, CancellationToken::new());
        let (requests, successor) = tokio::sync::mpsc::channel(4);
        let successor = (Successor(requests), successor);
        Ok(Self {
            listeners,
            store,
            recovered,
            policy,
            apps,
            inherited,
            hand_off,
            preflight: None,
            successor,
            reload,
            config,
        })
    }

    /// What a previous daemon process handed on besides its sockets (which
    /// go in [`Config::inherited`]): retained values, and each app's state
    /// (see [`host::App::hand_off`]), which each app gets at start.
    pub fn inherit(&mut self, carried: Carried) {
        self.inherited = Some(carried);
    }

    /// Cancelling this stops the daemon as `shutdown` does, except that
    /// each app hands off instead of stopping ([`host::App::hand_off`]: the
    /// supervisor would leave its services running) and [`Daemon::run`]
    /// returns the [`HandOff`] for a successor.
    pub fn hand_off_trigger(&self) -> CancellationToken {
        self.hand_off.clone()
    }

    /// Asks this daemon, once running, to hand off to a successor (what
    /// SIGUSR2 and `switchboard reexec` do).
    pub fn successor(&self) -> Successor {
        self.successor.0.clone()
    }

    /// Lets [`Successor::request`] hand off, once `preflight` says a
    /// successor can take over (it names the successor, or says why not).
    /// Without it every request is refused.
    pub fn allow_hand_off(&mut self, preflight: impl Fn() -> Result<String, String> + Send + 'static) {
        self.preflight = Some(Box::new(preflight));
    }

    /// Notifying this re-reads the config file (what SIGHUP does).
    pub fn reload_trigger(&self) -> Arc<tokio::sync::Notify> {
        self.reload.clone()
    }

    /// Where queue data lives.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.config.data_dir
    }

    /// The endpoints actually bound (a TCP port 0 shows its real port).
    pub fn endpoints(&self) -> Vec<Endpoint> {
        self.listeners.iter().map(|l| l.endpoint()).collect()
    }

    /// Starts the hosted apps, then lets clients in, calls `ready`, and
    /// serves until `shutdown` fires. Then it stops the apps (the supervisor stops its
    /// services; on a hand-off they hand over their state instead, which is
    /// returned), stops accepting, answers calls in flight with "shutting
    /// down", says goodbye to every client, waits up to the grace period
    /// for them, and removes its socket files.
    pub async fn run(
        mut self,
        shutdown: CancellationToken,
        ready: impl FnOnce(),
    ) -> Result<Option<HandOff>, DaemonError> {
        let mut started = running::Running::start(self.store, self.recovered, self.policy, &self.config);
        let carried = self.inherited.take();
        let generation = carried.as_ref().map_or(0, |c| c.generation + 1);
        let carried = carried.unwrap_or_default();
        session::lock(&started.router).inherit(generation, carried.retained);
        let (reload_requests, mut reloads) = tokio::sync::mpsc::channel(4);
        let (successor, mut successors) = self.successor;
        let context = host::AppContext {
            router: started.handle(),
            endpoints: self.listeners.iter().map(|l| l.endpoint()).collect(),
            data_dir: self.config.data_dir.clone(),
            reloader: host::Reloader(reload_requests),
            successor,
        };
        // Apps first: a client let in before them could find a configured
        // service missing instead of held while it starts.
        let failure = self.apps.start(&context, carried.apps).await.err();
        if failure.is_none() {
            started.accept(&self.listeners);
            ready();
            loop {
                let outcome = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = self.hand_off.cancelled() => break,
                    () = self.reload.notified() => reload(&self.config, &mut self.apps, &started.router).await,
                    Some(reply) = reloads.recv() => {
                        let outcome = reload(&self.config, &mut self.apps, &started.router).await;
                        let _ = reply.send(outcome);
                        continue;
                    }
                    Some(reply) = successors.recv() => {
                        let verdict = hand_off_verdict(&self.config, &self.apps, self.preflight.as_ref());
                        let accepted = verdict.is_ok();
                        let _ = reply.send(verdict);
                        if accepted {
                            self.hand_off.cancel();
                            break;
                        }
                        continue;
                    }
                };
                if let Err(why) = outcome {
                    tracing::error!("{why}");
                }
            }
        }
        let handing_off = failure.is_none() && self.hand_off.is_cancelled() && !shutdown.is_cancelled();
        let mut carried = Carried::default();
        if handing_off {
            tracing::info!("handing off to a successor");
            carried.apps = self.apps.hand_off().await;
            carried.retained = session::lock(&started.router).topics().retained_values();
            carried.generation = generation;
        } else {
            tracing::info!("shutting down");
            self.apps.stop().await;
        }
        drop(context);
        let sockets = started.stop(self.listeners, self.config.shutdown_grace, handing_off).await;
        match failure {
            Some(err) => Err(err.into()),
            None if handing_off => Ok(Some(HandOff { sockets, carried })),
            None => Ok(None),
        }
    }
}

/// Whether a successor may take over now: the config file it will read
/// must pass the check a reload makes, and the preflight must pass.
fn hand_off_verdict(config: &Config, apps: &Apps, preflight: Option<&Preflight>) -> Result<String, String> {
    let preflight = preflight.ok_or("this daemon cannot hand off to a successor")?;
    check_file(config, apps)
        .map_err(|problems| format!("the successor would refuse the config file: {problems}"))?;
    preflight()
}

/// Every problem of the config file on disk, if there is one, joined.
fn check_file(config: &Config, apps: &Apps) -> Result<(), String> {
    let Some(path) = &config.config_file else { return Ok(()) };
    let read = ConfigFile::read(path).and_then(|file| file.with_overlay(config.config_overlay.as_deref()));
    let problems = read.map_or_else(|err| vec![err], |file| check_config(&file, apps));
    if problems.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
    Err(list.join("; "))
}

/// See [`Daemon::allow_hand_off`].
type Preflight = Box<dyn Fn() -> Result<String, String> + Send>;

/// Reads the config file (or text, or nothing) once, gives the policy and
/// every app its part, and returns the policy's.
fn configure(
    config: &Config,
    apps: &mut Apps,
) -> Result<(policy::Policy, policy::Security), config_file::ConfigError> {
    let file = match (&config.config_file, &config.config_text) {
        (Some(path), _) => ConfigFile::read(path)?,
        (None, Some(text)) => ConfigFile::from_text("(built in)", text.clone()),
        (None, None) => ConfigFile::default(),
    };
    let file = file.with_overlay(config.config_overlay.as_deref())?;
    let mut owners = vec![policy::SECTIONS];
    owners.extend(apps.sections());
    let sections = file.split(&owners)?;
    let policy = policy::configure(&sections[0])?;
    apps.configure(&sections[1..])?;
    Ok(policy)
}

/// Every problem of a config file, for the daemon's policy and each app:
/// what `switchboard check` prints and what makes a reload refuse. Empty
/// means the file is good.
pub fn check_config(file: &ConfigFile, apps: &Apps) -> Vec<config_file::ConfigError> {
    let mut owners = vec![policy::SECTIONS];
    owners.extend(apps.sections());
    let (sections, mut problems) = match file.split_all(&owners) {
        Ok(split) => split,
        Err(syntax) => return vec![syntax],
    };
    problems.extend(policy::configure(&sections[0]).err());
    problems.extend(apps.check(&sections[1..]));
    problems
}

/// Re-reads the config file; applies it only if every part is accepted
/// (the same check as `switchboard check`: every problem is named).
async fn reload(
    config: &Config,
    apps: &mut Apps,
    router: &Arc<Mutex<Router>>,
) -> Result<host::Reports, String> {
    check_file(config, apps).map_err(|problems| format!("reload refused: {problems}"))?;
    let (policy, security) = configure(config, apps).map_err(|err| format!("reload refused: {err}"))?;
    let grants = policy.len();
    session::lock(router).set_policy(policy, security);
    tracing::info!(grants, "policy reloaded");
    apps.reload().await
}

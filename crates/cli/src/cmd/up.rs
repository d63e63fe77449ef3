//! `switchboard up`: run the daemon in the foreground.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use switchboard::Endpoint;
use switchboard_daemon::host::Apps;
use switchboard_daemon::{Carried, Config, Daemon, HandOff};
use switchboard_fleet::Fleet;
use switchboard_gateway::Gateway;
use switchboard_metrics::Metrics;
use switchboard_supervisor::Supervisor;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::output;
use crate::systemd::ServiceManager;

/// Run the switchboard daemon in the foreground.
///
/// With no options it listens on the default socket,
/// $XDG_RUNTIME_DIR/switchboard/bus.sock (else /tmp/switchboard-UID/bus.sock),
/// and needs no config file. It refuses to start if another live daemon owns
/// the socket, and replaces a stale socket left by a crash. SIGINT or SIGTERM
/// stops it: supervised services are stopped (dependents first), calls in
/// flight are answered "shutting down", the socket is removed, and it exits 0.
///
/// With --config FILE it also supervises the services the TOML file declares
/// (see docs/supervisor.md); SIGHUP or `switchboard reload` re-reads the file
/// and touches only the services that changed. --demo runs a built-in config
/// with the example services.
///
/// SIGUSR2 or `switchboard reexec` replaces the daemon with the binary on
/// disk (same pid), keeping its sockets and its supervised services running.
///
/// Under systemd (Type=notify) it sends READY=1 once it listens and has
/// recovered its queues, STOPPING=1 when it stops, and WATCHDOG=1 pings when
/// WatchdogSec is set; with socket activation it serves the sockets systemd
/// hands it (LISTEN_FDS) instead of the default socket.
#[derive(clap::Args)]
pub struct Args {
    /// Where to listen: unix:PATH or tcp://127.0.0.1:PORT (repeatable).
    /// Plain TCP is only allowed on loopback.
    #[arg(long = "listen", value_name = "ENDPOINT")]
    listen: Vec<Endpoint>,
    /// Largest frame accepted, in bytes (payload plus a small header).
    #[arg(long, value_name = "BYTES", default_value_t = switchboard_daemon::Limits::default().max_frame)]
    max_frame: u32,
    /// Most calls one connection may have awaiting replies.
    #[arg(long, value_name = "N", default_value_t = switchboard_daemon::Limits::default().max_inflight)]
    max_inflight: u32,
    /// Most client connections at once; more are refused with `overloaded`.
    #[arg(long, value_name = "N", default_value_t = switchboard_daemon::Limits::default().max_connections)]
    max_connections: usize,
    /// Most subscriptions one connection may hold.
    #[arg(long, value_name = "N", default_value_t = switchboard_daemon::Limits::default().max_subscriptions)]
    max_subscriptions: usize,
    /// How long a new connection has to complete its handshake.
    #[arg(long, value_name = "DURATION", value_parser = crate::parse_duration, default_value = "5s")]
    handshake_timeout: Duration,
    /// How long a connection may leave what is sent to it unread (past the
    /// congestion mark) before it is disconnected.
    #[arg(long, value_name = "DURATION", value_parser = crate::parse_duration, default_value = "10s")]
    slow_consumer: Duration,
    /// At shutdown, how long to wait for connections to take what is queued
    /// for them (their goodbye included) before exiting anyway.
    #[arg(long, value_name = "DURATION", value_parser = crate::parse_duration, default_value = "2s")]
    shutdown_grace: Duration,
    /// Where durable queues keep their data (default: $XDG_STATE_HOME/switchboard,
    /// ~/.local/state/switchboard, or /var/lib/switchboard as root).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<std::path::PathBuf>,
    /// Refuse puts and consumers for queues that were not declared first.
    #[arg(long)]
    no_auto_create_queues: bool,
    /// Most queues the daemon holds; creating one more is refused with
    /// `overloaded` (delete empty ones with `switchboard queue delete`).
    #[arg(long, value_name = "N", default_value_t = switchboard_daemon::DEFAULT_MAX_QUEUES)]
    max_queues: usize,
    /// Queue log segment size in bytes; space is reclaimed a segment at a time.
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024 * 1024, hide_short_help = true)]
    queue_segment_bytes: u64,
    /// Worker threads. 1 (the default) routes every message on one thread,
    /// which avoids cross-core wake-ups and is fastest on small machines.
    #[arg(long, value_name = "N", default_value_t = 1)]
    threads: usize,
    /// Supervise the services declared in this TOML file.
    #[arg(long, value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// Supervise the example services (orders, resources) with a built-in config.
    #[arg(long, conflicts_with = "config")]
    demo: bool,
    /// Serve the HTTP gateway (and the web console at /) on this loopback
    /// address, as `[gateway] listen = ADDR` in the config would.
    #[arg(long, value_name = "ADDR")]
    gateway: Option<std::net::SocketAddr>,
    /// Allow plain TCP listeners (loopback only). Their clients have no OS
    /// identity: they are `anonymous` unless they present a token.
    #[arg(long)]
    allow_plain_tcp: bool,
    /// How the daemon's own log (on stderr) is written: text (colored only
    /// on a terminal) or json (one object per line, for journald, Loki, jq).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// The daemon's log format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    // First, while this is the only thread: both edit the environment.
    let manager = Arc::new(ServiceManager::from_env()?);
    let mut handed = HandOff::from_env().context("taking over from the previous daemon process")?;
    let binary = super::reexec::own_binary()?;
    let mut config = Config::default();
    if !manager.sockets.is_empty() {
        // Socket activation: the manager's sockets replace the default one.
        config.listen.clear();
        config.inherited.clone_from(&manager.sockets);
    }
    if !args.listen.is_empty() {
        config.listen = args.listen;
    }
    config.limits.max_frame = args.max_frame;
    config.limits.max_inflight = args.max_inflight;
    config.limits.max_connections = args.max_connections;
    config.limits.max_subscriptions = args.max_subscriptions;
    config.limits.handshake_timeout = args.handshake_timeout;
    config.limits.slow_consumer = args.slow_consumer;
    config.shutdown_grace = args.shutdown_grace;
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    config.queue_auto_create = !args.no_auto_create_queues;
    config.max_queues = args.max_queues;
    config.queue_segment_bytes = args.queue_segment_bytes;
    config.config_file = args.config;
    config.allow_plain_tcp = args.allow_plain_tcp;
    if args.demo {
        config.config_text = Some(super::demo::config()?);
    }
    config.config_overlay = args.gateway.map(|listen| format!("[gateway]\nlisten = \"{listen}\"\n"));
    let threads = args.threads;
    let preflight = {
        let binary = binary.clone();
        move || super::reexec::preflight(&binary, threads)
    };
    // A hand-off that could not exec comes back here: this process carries
    // on with it (a new runtime; the sockets and services never stopped).
    loop {
        let mut config = config.clone();
        let carried = handed.take().map(|handoff| {
            // The predecessor's sockets are all of them (its own
            // socket-activated ones included): nothing is bound again.
            config.listen.clear();
            config.inherited = handoff.sockets;
            handoff.carried
        });
        let runtime = if threads <= 1 {
            tokio::runtime::Builder::new_current_thread().enable_all().build()?
        } else {
            tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()?
        };
        let outcome = runtime.block_on(serve(config, carried, manager.clone(), preflight.clone()));
        runtime.shutdown_timeout(Duration::from_secs(1));
        let Some(handoff) = outcome? else { return Ok(ExitCode::SUCCESS) };
        handed = Some(super::reexec::exec(&binary, handoff, &manager.environment));
    }
}

/// The apps `up` hosts beside the router, in the order they start. A new
/// app (in its own crate) is one more `with` here.
pub fn hosted_apps() -> Apps {
    Apps::new().with::<Supervisor>().with::<Metrics>().with::<Gateway>().with::<Fleet>()
}

/// Runs the daemon until it stops (`None`) or hands off to a successor.
async fn serve(
    config: Config,
    carried: Option<Carried>,
    manager: Arc<ServiceManager>,
    preflight: impl Fn() -> Result<String, String> + Send + 'static,
) -> anyhow::Result<Option<HandOff>> {
    let mut daemon = Daemon::bind(config, hosted_apps()).await?;
    if let Some(carried) = carried {
        daemon.inherit(carried);
    }
    daemon.allow_hand_off(preflight);
    // Handlers first: a signal sent as soon as "ready" is read must be caught.
    let shutdown = CancellationToken::new();
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut terminate = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut upgrade = signal(SignalKind::user_defined2()).context("installing the SIGUSR2 handler")?;
    let successor = daemon.successor();
    tokio::spawn(async move {
        while upgrade.recv().await.is_some() {
            tracing::info!("SIGUSR2 received: re-executing the daemon");
            if let Err(why) = successor.request().await {
                tracing::error!("not re-executing: {why}");
            }
        }
    });
    let reload = daemon.reload_trigger();
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP received: reloading the services config");
            reload.notify_one();
        }
    });
    let (endpoints, queues) = (daemon.endpoints(), daemon.data_dir().join("queues"));
    // Said once the apps are up, the queues recovered and clients let in.
    let notifier = manager.clone();
    let ready = move || {
        for endpoint in &endpoints {
            let _ = output::line(format_args!("switchboard: listening on {endpoint}"));
        }
        let _ = output::line(format_args!("switchboard: queues in {}", queues.display()));
        let _ = output::line(format_args!("switchboard: ready (pid {})", std::process::id()));
        let listening: Vec<String> = endpoints.iter().map(ToString::to_string).collect();
        notifier.notify(&format!("READY=1\nSTATUS=listening on {}", listening.join(", ")));
        // Pings start once ready: the manager's watchdog covers a running daemon.
        if let Some(every) = notifier.watchdog {
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval(every);
                loop {
                    ticks.tick().await;
                    notifier.notify("WATCHDOG=1");
                }
            });
        }
    };
    let stopper = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("SIGINT received"),
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
        }
        manager.notify("STOPPING=1\nSTATUS=stopping: services first, then the bus");
        stopper.cancel();
    });
    let handoff = daemon.run(shutdown, ready).await?;
    if handoff.is_none() {
        tracing::info!("stopped");
    }
    Ok(handoff)
}

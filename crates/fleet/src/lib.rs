//! The fleet, hosted by `switchboard up` when the config has `[fleet]`:
//! daemons on many machines joined through a NATS cluster (docs/fleet.md).
//! Nothing that stays on one machine touches NATS; only what `export` and
//! `import` name crosses, and each host's policy applies to the principals
//! other hosts send it (`user:alice@web-1`).
//!
//! - `config`: `[fleet]`, validated.
//! - `subjects`: the NATS subjects, with the sending host in each.
//! - `roster`: which hosts are alive and what they offer (pure).
//! - `wire`: a call and its answer as NATS headers (pure).
//! - `bridge`: the I/O — heartbeats, stand-ins, calls both ways.
//! - `topics`: exported and imported topic patterns.
//! - `broadcasts` (I/O) and `gather` (pure): broadcasts to every host.
//! - `queues`: queues kept on JetStream, shared by every host.
//!
//! `$sys.fleet.status` (and `switchboard ls --fleet`) reports the link and
//! the hosts heard from.

mod bridge;
mod broadcasts;
mod config;
mod gather;
mod queue_plan;
mod queues;
mod roster;
mod subjects;
mod topics;
mod wire;

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use switchboard::{Bus, Reject, Service};
use switchboard_daemon::host::{App, AppContext, AppError, ConfigError, Principal, Section};

pub use config::Joining;
pub use roster::HostStatus;

/// The service that reports the fleet (`$sys.fleet.status`).
pub const FLEET_SERVICE: &str = "$sys.fleet";
pub const FLEET_STATUS: &str = "status";

/// What `$sys.fleet.status` answers (MessagePack).
#[derive(Debug, Serialize)]
pub struct FleetStatus {
    pub host: String,
    pub servers: Vec<String>,
    /// `connected`, `disconnected` or `pending`, as the NATS client says.
    pub link: String,
    pub hosts: Vec<HostStatus>,
}

pub struct Fleet {
    running: Option<Running>,
}

struct Running {
    bridge: Arc<bridge::Bridge>,
    queues: Arc<queues::FleetQueues>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    bus: Bus,
    _status: Service,
}

impl App for Fleet {
    const NAME: &'static str = "fleet";
    const SECTIONS: &'static [&'static str] = &["fleet"];
    type Config = Option<Joining>;

    fn configure(section: &Section<'_>) -> Result<Option<Joining>, ConfigError> {
        config::parse(section)
    }

    async fn start(
        context: AppContext,
        joining: Option<Joining>,
        _: Option<Bytes>,
    ) -> Result<Self, AppError> {
        let Some(joining) = joining else { return Ok(Self { running: None }) };
        let failed = |err: &dyn std::fmt::Display| AppError::new(Self::NAME, err);
        let endpoint =
            context.endpoints.first().cloned().ok_or_else(|| failed(&"the daemon listens nowhere"))?;
        let nats = connect(&joining).await.map_err(|err| failed(&err))?;
        tracing::info!(host = joining.host, servers = ?joining.servers, "fleet: joining");
        let bridge = bridge::Bridge::new(joining, nats, context.router.clone(), endpoint.clone())
            .await
            .map_err(|err| failed(&err))?;
        let mut tasks = vec![tokio::spawn(bridge.clone().run())];
        // Also with no `queues` in the config: a fleet queue may be declared
        // here, or on another host, at any time.
        let queues = queues::FleetQueues::start(bridge.nats.clone(), context.router.clone(), &bridge.joining);

        let dial = context.router.dialer(Principal::daemon(), "switchboard-fleet");
        let bus = Bus::connect_hosted(endpoint, "switchboard-fleet".into(), dial)
            .await
            .map_err(|err| failed(&format!("cannot connect to its own daemon: {err}")))?;
        bus.set_direct_calls(false);
        if !bridge.joining.export_topics.is_empty() {
            tasks.push(tokio::spawn(topics::keep_retained_values(bridge.clone(), bus.clone())));
        }
        for pattern in &bridge.joining.export_topics {
            tasks.push(tokio::spawn(topics::export(bridge.clone(), bus.clone(), pattern.clone())));
        }
        for pattern in &bridge.joining.import_topics {
            tasks.push(tokio::spawn(topics::import(bridge.clone(), pattern.clone())));
        }
        let reporting = bridge.clone();
        let status = bus
            .serve(FLEET_SERVICE)
            .map_err(|err| failed(&err))?
            .method(FLEET_STATUS, move |_| {
                let bridge = reporting.clone();
                async move {
                    let status = FleetStatus {
                        host: bridge.joining.host.clone(),
                        servers: bridge.joining.servers.clone(),
                        link: link_state(&bridge.nats),
                        hosts: bridge.hosts(),
                    };
                    rmp_serde::to_vec_named(&status)
                        .map(Bytes::from)
                        .map_err(|err| Reject::new(err.to_string()))
                }
            })
            .start()
            .await
            .map_err(|err| failed(&format!("cannot register {FLEET_SERVICE}: {err}")))?;
        Ok(Self { running: Some(Running { bridge, queues, tasks, bus, _status: status }) })
    }

    async fn reload(&mut self, joining: Option<Joining>) -> Result<Bytes, String> {
        // Joining, leaving or moving to other servers is a restart's work:
        // say so instead of pretending.
        let _ = joining;
        Ok(Bytes::from_static(b"the fleet's settings change when the daemon restarts"))
    }

    async fn stop(self) {
        if let Some(running) = self.running {
            for task in &running.tasks {
                task.abort();
            }
            running.queues.stop();
            running.bridge.stop();
            running.bus.close();
        }
    }
}

fn link_state(nats: &async_nats::Client) -> String {
    match nats.connection_state() {
        async_nats::connection::State::Connected => "connected",
        async_nats::connection::State::Disconnected => "disconnected",
        async_nats::connection::State::Pending => "pending",
    }
    .to_owned()
}

/// Connects to NATS; the client keeps reconnecting by itself, and a
/// server down at start is retried rather than failing the daemon.
async fn connect(joining: &Joining) -> Result<async_nats::Client, String> {
    let mut options = async_nats::ConnectOptions::new()
        .name(format!("switchboard-fleet {}", joining.host))
        .retry_on_initial_connect()
        // The servers in the order given: the first is usually this host's own.
        .retain_servers_order()
        // Each host reads only its own replies: its NATS user may be given
        // `_INBOX_HOST.>` and nothing of the others'.
        .custom_inbox_prefix(format!("_INBOX_{}", joining.host))
        .max_reconnects(None);
    options = match &joining.credentials {
        config::Credentials::None => options,
        config::Credentials::UserPassword(user, password) => {
            options.user_and_password(user.clone(), password.clone())
        }
        config::Credentials::Token(token) => options.token(token.clone()),
        config::Credentials::Nkey(seed) => options.nkey(seed.clone()),
        config::Credentials::File(path) => options
            .credentials_file(path)
            .await
            .map_err(|err| format!("cannot read {}: {err}", path.display()))?,
    };
    if let Some(tls) = &joining.tls {
        options = options.require_tls(true);
        if let Some(ca) = &tls.ca {
            options = options.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
    }
    options.connect(joining.servers.clone()).await.map_err(|err| format!("cannot reach NATS: {err}"))
}

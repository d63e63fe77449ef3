//! The systems users would otherwise pick, run beside Switchboard.
//!
//! Each peer's server is started from the distribution's package (see
//! `scripts/install-peers.sh`) through `child-exec`, which ends it if the
//! bench dies; its clients are the usual Rust crates.

pub mod dbus;
pub mod iceoryx2;
pub mod nats;
pub mod rabbitmq;
pub mod zeromq;

use std::path::PathBuf;

/// Where a peer's server binary is, if installed.
pub fn find(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    let extra = ["/usr/sbin", "/sbin", "/usr/local/sbin"];
    std::env::split_paths(&path)
        .chain(extra.iter().map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// A free TCP port on loopback (bound and released).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Every peer this run has: each started once if installed; a missing one
/// is skipped with a note, or stops the run when peers are required.
pub struct Peers {
    pub dbus: Option<dbus::DBus>,
    pub dbus_broker: Option<dbus::DBus>,
    pub nats: Option<nats::Nats>,
    pub rabbit: Option<rabbitmq::Rabbit>,
    /// libzmq is linked in, so ZeroMQ always runs (no server to install).
    pub zmq: zeromq::Zmq,
}

impl Peers {
    pub fn start(dir: &std::path::Path, data_dir: &std::path::Path, required: bool) -> anyhow::Result<Self> {
        let dbus = match find("dbus-daemon") {
            Some(daemon) => Some(dbus::DBus::start(&daemon, &dir.join("dbus"))?),
            None => missing(required, "dbus-daemon is not installed: D-Bus cases skipped")?,
        };
        let dbus_broker = match (&dbus, find("dbus-broker-launch"), find("systemd-socket-activate")) {
            (Some(regular), Some(launch), Some(activate)) => {
                let started =
                    dbus::DBus::start_broker(&activate, &launch, &regular.address, &dir.join("dbus-broker"));
                failed(required, "dbus-broker", started)?
            }
            _ => missing(
                required,
                "dbus-broker, dbus-daemon or systemd-socket-activate is missing: dbus-broker cases skipped",
            )?,
        };
        let nats = match find("nats-server") {
            Some(server) => Some(nats::Nats::start(&server, data_dir)?),
            None => missing(required, "nats-server is not installed: NATS cases skipped")?,
        };
        // The broker itself, not /usr/sbin's wrapper (which switches user and
        // drops the environment that gives this run its private ports).
        let broker = Some(PathBuf::from("/usr/lib/rabbitmq/bin/rabbitmq-server")).filter(|p| p.is_file());
        let rabbit = match (broker, find("epmd")) {
            (Some(server), Some(epmd)) => {
                failed(required, "RabbitMQ", rabbitmq::Rabbit::start(&server, &epmd, dir))?
            }
            _ => missing(required, "rabbitmq-server is not installed: RabbitMQ cases skipped")?,
        };
        Ok(Self { dbus, dbus_broker, nats, rabbit, zmq: zeromq::Zmq::start(dir)? })
    }
}

/// A peer that is not installed: an error if peers are required, else a note.
fn missing<T>(required: bool, why: &str) -> anyhow::Result<Option<T>> {
    if required {
        anyhow::bail!("{why}: run scripts/install-peers.sh");
    }
    eprintln!("{why} (scripts/install-peers.sh installs it)");
    Ok(None)
}

/// A peer that is installed but may not have started.
fn failed<T>(required: bool, name: &str, started: anyhow::Result<T>) -> anyhow::Result<Option<T>> {
    match started {
        Ok(peer) => Ok(Some(peer)),
        Err(err) if required => Err(err.context(format!("{name} did not start"))),
        Err(err) => {
            eprintln!("{name} did not start ({err:#}): its cases are skipped");
            Ok(None)
        }
    }
}

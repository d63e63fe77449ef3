//! `switchboard up` under a service manager: systemd's notify protocol
//! (`READY=1`, `STATUS=`, `STOPPING=1`, `WATCHDOG=1` to `$NOTIFY_SOCKET`) and
//! socket activation (listening sockets in `LISTEN_FDS`).
//!
//! [`ServiceManager::from_env`] reads what the manager handed over and
//! removes it from the environment — before any thread starts — so that the
//! services the daemon supervises never see the daemon's own notify socket
//! or descriptors. Without a manager every method does nothing.

use std::ffi::OsString;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::time::Duration;

use switchboard_daemon::listen::Inherited;

/// What the service manager handed to this process.
pub struct ServiceManager {
    notify: Option<(UnixDatagram, SocketAddr)>,
    /// Ping at least this often (half of `WATCHDOG_USEC`), if asked to.
    pub watchdog: Option<Duration>,
    /// Listening sockets from socket activation, in `LISTEN_FDS` order.
    pub sockets: Vec<Inherited>,
    /// The notify and watchdog variables as they were, for the daemon's
    /// successor process after a `reexec` (the same service to the manager).
    pub environment: Vec<(String, OsString)>,
}

impl ServiceManager {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC`/`WATCHDOG_PID` and
    /// `LISTEN_FDS`/`LISTEN_PID`, then removes them from the environment.
    /// Must run before the runtime's threads start.
    pub fn from_env() -> anyhow::Result<Self> {
        let notify = match std::env::var_os("NOTIFY_SOCKET") {
            Some(path) => Some(notify_socket(&path.to_string_lossy())?),
            None => None,
        };
        let for_us = std::env::var("WATCHDOG_PID")
            .map_or(true, |pid| pid.trim().parse::<u32>().ok() == Some(std::process::id()));
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|usec| usec.trim().parse::<u64>().ok())
            .filter(|usec| *usec > 0 && for_us)
            .map(|usec| Duration::from_micros(usec / 2));
        let sockets = inherited_sockets()?;
        let environment = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"]
            .into_iter()
            .filter_map(|name| Some((name.to_owned(), std::env::var_os(name)?)))
            .collect();
        for name in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDNAMES"] {
            // Edition 2021: not yet `unsafe`; sound here because no other
            // thread exists yet (see `from_env`'s contract).
            std::env::remove_var(name);
        }
        Ok(Self { notify, watchdog, sockets, environment })
    }

    /// Sends one notify message (`READY=1\nSTATUS=…`); failures are logged,
    /// never fatal: the daemon serves whether or not the manager hears it.
    pub fn notify(&self, state: &str) {
        if let Some((socket, address)) = &self.notify {
            if let Err(err) = socket.send_to_addr(state.as_bytes(), address) {
                tracing::warn!("cannot tell the service manager {state:?}: {err}");
            }
        }
    }
}

/// `/run/systemd/notify`, or `@name` for an abstract socket.
fn notify_socket(path: &str) -> anyhow::Result<(UnixDatagram, SocketAddr)> {
    let address = match path.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes())?,
        None => SocketAddr::from_pathname(path)?,
    };
    Ok((UnixDatagram::unbound()?, address))
}

/// The listening sockets of `LISTEN_FDS` (Unix stream or TCP), or an error
/// naming the one that is neither.
fn inherited_sockets() -> anyhow::Result<Vec<Inherited>> {
    let mut fds = listenfd::ListenFd::from_env();
    let mut sockets = Vec::with_capacity(fds.len());
    for index in 0..fds.len() {
        let socket = match fds.take_unix_listener(index) {
            Ok(Some(unix)) => Inherited::Unix { listener: Arc::new(unix), lock: None },
            Ok(None) => continue,
            Err(_) => match fds.take_tcp_listener(index) {
                Ok(Some(tcp)) => Inherited::Tcp(Arc::new(tcp)),
                Ok(None) => continue,
                Err(err) => {
                    return Err(io::Error::new(
                        err.kind(),
                        format!(
                            "LISTEN_FDS socket {index} is neither a Unix stream nor a TCP listener: {err}"
                        ),
                    )
                    .into())
                }
            },
        };
        sockets.push(socket);
    }
    Ok(sockets)
}

//! D-Bus: a method call through the bus daemon, as systemd services make
//! them. dbus-daemon runs with the distribution's stock session
//! configuration, on a private socket; dbus-broker with the same
//! configuration, started the way systemd starts it (below); the client is
//! zbus.
//!
//! dbus-broker's launcher wants three things systemd normally provides: its
//! listening socket handed over by socket activation (`systemd-socket-activate`
//! does that), the journal's socket to log to (it exits if it cannot
//! connect: without journald the bench binds a sink there for the run), and
//! a "regular" bus to watch systemd's signals on (given the bench's
//! dbus-daemon; with `-E`, since `systemd-socket-activate` passes the
//! launcher no environment of its own — which is what made it exit with
//! "No medium found" before).

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::children::{self, Child};
use crate::stats::Sample;

const NAME: &str = "org.switchboard.Bench";
const PATH: &str = "/bench";

/// A running dbus-daemon and an echo service on it.
pub struct DBus {
    pub address: String,
    _daemon: Child,
    _echo: Child,
    _journal: Option<JournalSink>,
}

impl DBus {
    pub fn start(daemon: &Path, dir: &Path) -> anyhow::Result<Self> {
        Self::serve(dir, "dbus.sock", None, |_, address| {
            let daemon = daemon.display().to_string();
            vec![
                daemon,
                "--session".into(),
                format!("--address={address}"),
                "--nofork".into(),
                "--nopidfile".into(),
            ]
        })
    }

    /// dbus-broker on a private socket, its launcher started by socket
    /// activation, watching `regular` (a running bus) as systemd's bus.
    pub fn start_broker(activate: &Path, launch: &Path, regular: &str, dir: &Path) -> anyhow::Result<Self> {
        let journal = JournalSink::ensure()?;
        Self::serve(dir, "broker.sock", journal, |socket, _| {
            vec![
                activate.display().to_string(),
                "-E".into(),
                format!("DBUS_SESSION_BUS_ADDRESS={regular}"),
                "-E".into(),
                format!("XDG_RUNTIME_DIR={}", dir.display()),
                "-l".into(),
                socket,
                launch.display().to_string(),
                "--scope".into(),
                "user".into(),
            ]
        })
    }

    /// Runs the bus `command(socket, address)` builds, listening on `dir/socket`,
    /// and the echo service on it.
    fn serve(
        dir: &Path,
        socket: &str,
        journal: Option<JournalSink>,
        command: impl FnOnce(String, &str) -> Vec<String>,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let socket = dir.join(socket);
        let _ = std::fs::remove_file(&socket);
        let address = format!("unix:path={}", socket.display());
        let socket = socket.display().to_string();
        let mut args = vec!["child-exec".to_owned(), "--wait-path".into(), socket.clone(), "--".into()];
        args.extend(command(socket, &address));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let daemon = children::spawn(&args)?;
        let echo = children::spawn(&["child-dbus-echo", &address])?;
        Ok(Self { address, _daemon: daemon, _echo: echo, _journal: journal })
    }
}

/// Where dbus-broker's launcher logs; it refuses to run if nothing listens.
const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// A datagram socket at the journal's address, read and discarded, for a
/// machine without journald; removed when the run ends.
struct JournalSink {
    path: PathBuf,
}

impl JournalSink {
    /// `None` when a journal already listens there.
    fn ensure() -> anyhow::Result<Option<Self>> {
        let path = PathBuf::from(JOURNAL_SOCKET);
        if UnixDatagram::unbound()?.connect(&path).is_ok() {
            return Ok(None);
        }
        // Nothing listens: a file left there is a stale socket.
        let _ = std::fs::remove_file(&path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let socket = UnixDatagram::bind(&path)
            .map_err(|err| anyhow::anyhow!("cannot provide {JOURNAL_SOCKET} for dbus-broker: {err}"))?;
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            while socket.recv(&mut buf).is_ok() {}
        });
        Ok(Some(Self { path }))
    }
}

impl Drop for JournalSink {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

struct Echo;

#[zbus::interface(name = "org.switchboard.Bench")]
impl Echo {
    async fn echo(&self, data: Vec<u8>) -> Vec<u8> {
        data
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

/// Child: serve `Echo` under the bench's well-known name.
pub fn echo(address: &str) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let _connection =
            zbus::connection::Builder::address(address).name(NAME).serve_at(PATH, Echo).build().await?;
        println!("ready");
        std::io::stdout().flush()?;
        std::future::pending::<()>().await;
        Ok(())
    })
}

/// Sequential method calls: latency.
pub fn call_latency(address: &str, size: usize, samples: usize) -> anyhow::Result<Sample> {
    runtime()?.block_on(async {
        let connection = zbus::connection::Builder::address(address).build().await?;
        let payload = vec![7u8; size];
        let mut times = Vec::with_capacity(samples);
        for i in 0..samples + samples / 10 {
            let t = Instant::now();
            let reply = connection.call_method(Some(NAME), PATH, Some(NAME), "Echo", &(&payload,)).await?;
            let echoed: Vec<u8> = reply.body().deserialize()?;
            anyhow::ensure!(echoed.len() == size, "echo returned {} bytes", echoed.len());
            if i >= samples / 10 {
                times.push(t.elapsed());
            }
        }
        Ok(Sample::latency(times))
    })
}

//! D-Bus: a method call through the bus daemon, as systemd services make
//! them. dbus-daemon runs with the distribution's stock session
//! configuration, on a private socket; the client is zbus.

use std::io::Write;
use std::path::Path;
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
}

impl DBus {
    pub fn start(daemon: &Path, dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let socket = dir.join("dbus.sock");
        let _ = std::fs::remove_file(&socket);
        let address = format!("unix:path={}", socket.display());
        let daemon = children::spawn(&[
            "child-exec",
            "--wait-path",
            &socket.display().to_string(),
            "--",
            &daemon.display().to_string(),
            "--session",
            &format!("--address={address}"),
            "--nofork",
            "--nopidfile",
        ])?;
        let echo = children::spawn(&["child-dbus-echo", &address])?;
        Ok(Self { address, _daemon: daemon, _echo: echo })
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

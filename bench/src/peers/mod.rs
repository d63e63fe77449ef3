//! The systems users would otherwise pick, run beside Switchboard.
//!
//! Each peer's server is started from the distribution's package (see
//! `scripts/install-peers.sh`) through `child-exec`, which ends it if the
//! bench dies; its clients are the usual Rust crates.

pub mod dbus;
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

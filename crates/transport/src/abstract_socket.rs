//! Abstract Unix sockets (Linux): where an instance listens for the direct
//! channels the daemon grants its callers.
//!
//! An abstract name lives in the kernel, not the file system: nothing to
//! clean up when the process dies, no directory permissions to get right.
//! It also means anyone on the machine may connect or bind a name first;
//! both ends of a direct channel therefore check each other's peer
//! credentials, and the listener proves nothing by its name alone.

use std::io;
use std::os::unix::net::{SocketAddr, UnixListener as StdListener, UnixStream as StdStream};

use tokio::net::UnixListener;

use crate::Stream;

#[cfg(target_os = "linux")]
fn address(name: &str) -> io::Result<SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name.as_bytes())
}

#[cfg(not(target_os = "linux"))]
fn address(_name: &str) -> io::Result<SocketAddr> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "abstract Unix sockets are Linux only"))
}

/// A listening abstract socket.
pub struct AbstractListener {
    inner: UnixListener,
    name: String,
}

impl AbstractListener {
    /// Binds `name` (without the leading NUL); `AddrInUse` if taken. Must be
    /// called within a tokio runtime.
    pub fn bind(name: &str) -> io::Result<Self> {
        let std = StdListener::bind_addr(&address(name)?)?;
        std.set_nonblocking(true)?;
        Ok(Self { inner: UnixListener::from_std(std)?, name: name.to_owned() })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub async fn accept(&self) -> io::Result<Stream> {
        let (stream, _) = self.inner.accept().await?;
        Stream::from_unix(stream)
    }
}

impl Stream {
    /// Connects to the abstract socket `name`.
    pub async fn connect_abstract(name: &str) -> io::Result<Self> {
        let address = address(name)?;
        // A Unix connect only blocks while the listener's backlog is full.
        let std = tokio::task::spawn_blocking(move || StdStream::connect_addr(&address))
            .await
            .map_err(io::Error::other)??;
        Self::from_std_unix(std)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connects_to_a_bound_name_and_sees_our_own_process() {
        let name = format!("switchboard-test/{}/abstract", std::process::id());
        let listener = AbstractListener::bind(&name).expect("bind");
        assert_eq!(AbstractListener::bind(&name).err().map(|e| e.kind()), Some(io::ErrorKind::AddrInUse));
        let (client, server) = tokio::join!(Stream::connect_abstract(&name), listener.accept());
        let (client, server) = (client.expect("connect"), server.expect("accept"));
        for stream in [&client, &server] {
            assert_eq!(stream.peer_cred().and_then(|c| c.pid), Some(std::process::id()));
        }
        let missing = Stream::connect_abstract("switchboard-test/nobody-listens-here").await;
        assert_eq!(missing.err().map(|e| e.kind()), Some(io::ErrorKind::ConnectionRefused));
    }
}

//! A connected socket of either kind, split into independently owned halves.

use std::io;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

use crate::Endpoint;

/// The read half of a [`Stream`].
pub type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
/// The write half of a [`Stream`].
pub type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

/// Who is on the other end of a Unix socket, as the kernel says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<u32>,
}

/// A connected socket.
#[derive(Debug)]
pub enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    /// Connects to `endpoint`.
    pub async fn connect(endpoint: &Endpoint) -> io::Result<Self> {
        match endpoint {
            Endpoint::Unix(path) => Ok(Self::Unix(UnixStream::connect(path).await?)),
            Endpoint::Tcp(addr) => {
                let stream = TcpStream::connect(addr.as_str()).await?;
                // Frames are small and latency-bound; batching is done above.
                stream.set_nodelay(true)?;
                Ok(Self::Tcp(stream))
            }
        }
    }

    /// The peer's OS credentials, for Unix sockets.
    pub fn peer_cred(&self) -> Option<PeerCred> {
        match self {
            Self::Unix(stream) => stream.peer_cred().ok().map(|cred| PeerCred {
                uid: cred.uid(),
                gid: cred.gid(),
                pid: cred.pid().and_then(|pid| u32::try_from(pid).ok()),
            }),
            Self::Tcp(_) => None,
        }
    }

    /// Splits into halves that separate tasks can own.
    pub fn into_split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Self::Unix(stream) => {
                let (r, w) = stream.into_split();
                (Box::new(r), Box::new(w))
            }
            Self::Tcp(stream) => {
                let (r, w) = stream.into_split();
                (Box::new(r), Box::new(w))
            }
        }
    }
}

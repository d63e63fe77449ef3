//! Endpoints the daemon listens on, and the accept loops.
//!
//! Binding is done up front ([`bind`]) so every configuration error — a
//! live daemon already on the socket, a non-loopback plain TCP address, a
//! directory owned by someone else — surfaces before the daemon says it is
//! ready. Accepting takes a connection permit *before* `accept`, so the
//! connection limit holds without ever accepting and dropping.

mod unix;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use switchboard_proto::ErrorCode;
use switchboard_transport::{Endpoint, Stream};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::session::{self, SharedRouter};
use crate::{DaemonError, Limits};
pub use unix::UnixEndpoint;

/// A bound endpoint.
pub enum Listener {
    Unix(UnixEndpoint),
    Tcp { listener: TcpListener, endpoint: Endpoint },
}

impl Listener {
    /// Where it listens, in the form clients use.
    pub fn endpoint(&self) -> Endpoint {
        match self {
            Self::Unix(unix) => Endpoint::Unix(unix.path().to_owned()),
            Self::Tcp { endpoint, .. } => endpoint.clone(),
        }
    }

    async fn accept(&self) -> io::Result<(Stream, String)> {
        match self {
            Self::Unix(unix) => {
                let (stream, _) = unix.listener().accept().await?;
                Ok((Stream::from_unix(stream)?, "unix".to_owned()))
            }
            Self::Tcp { listener, .. } => {
                let (stream, addr) = listener.accept().await?;
                Ok((Stream::from_tcp(stream)?, addr.to_string()))
            }
        }
    }
}

/// Binds every endpoint, or fails naming the one that could not be bound.
/// Unix sockets get `socket_mode`; plain TCP needs `allow_tcp` and loopback.
pub async fn bind(
    endpoints: &[Endpoint],
    socket_mode: u32,
    allow_tcp: bool,
) -> Result<Vec<Listener>, DaemonError> {
    let mut listeners = Vec::with_capacity(endpoints.len());
    for endpoint in endpoints {
        let listener = match endpoint {
            Endpoint::Unix(path) => Listener::Unix(UnixEndpoint::bind(path, socket_mode)?),
            Endpoint::Tcp(addr) => bind_tcp(endpoint, addr, allow_tcp).await?,
        };
        listeners.push(listener);
    }
    Ok(listeners)
}

async fn bind_tcp(endpoint: &Endpoint, addr: &str, allowed: bool) -> Result<Listener, DaemonError> {
    let failed = |source| DaemonError::Listen { endpoint: endpoint.clone(), source };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(addr).await.map_err(failed)?.collect();
    // Without TLS a TCP socket is readable by anyone on the path, so plain
    // TCP is only ever offered on loopback, and only when asked for.
    if addrs.is_empty() || addrs.iter().any(|a| !a.ip().is_loopback()) {
        return Err(DaemonError::NotLoopback { endpoint: endpoint.clone() });
    }
    if !allowed {
        return Err(DaemonError::PlainTcpNotAllowed { endpoint: endpoint.clone() });
    }
    let listener = TcpListener::bind(addrs.as_slice()).await.map_err(failed)?;
    let local = listener.local_addr().map_err(failed)?;
    Ok(Listener::Tcp { listener, endpoint: Endpoint::Tcp(local.to_string()) })
}

/// Accepts connections until `stop_accepting` fires, spawning a session per
/// connection on `sessions`.
pub async fn accept_loop(
    listener: Arc<Listener>,
    router: SharedRouter,
    limits: Limits,
    stop_accepting: CancellationToken,
    stop_sessions: CancellationToken,
    sessions: TaskTracker,
    permits: Arc<Semaphore>,
) {
    let mut backoff = Duration::from_millis(10);
    loop {
        let accepted = tokio::select! {
            _ = stop_accepting.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        // Over the connection limit a client is told so, not left waiting.
        let permit = permits.clone().try_acquire_owned().ok();
        match accepted {
            Ok((stream, peer)) if permit.is_none() => {
                let limit = limits.max_connections;
                tracing::warn!(%peer, "connection refused: {limit} connections is the limit");
                let why = format!("the daemon already has {limit} connections (its limit)");
                sessions.spawn(session::refuse(stream, ErrorCode::Overloaded, why));
            }
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(10);
                let (router, limits, stop) = (router.clone(), limits.clone(), stop_sessions.clone());
                sessions.spawn(async move {
                    session::serve(stream, peer, router, limits, stop).await;
                    drop(permit);
                });
            }
            Err(err) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(endpoint = %listener.endpoint(), "accept failed: {err}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

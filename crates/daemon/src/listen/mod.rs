//! Endpoints the daemon listens on, and the accept loops.
//!
//! Binding is done up front ([`bind`]) so every configuration error — a
//! live daemon already on the socket, a non-loopback plain TCP address, a
//! `tls://` endpoint without certificates — surfaces before the daemon says
//! it is ready. A connection that has not finished its handshake counts
//! against the handshake budget ([`budget`]: per peer and in total), and
//! the connection limit is taken only once it has; over either it is
//! answered with a `Goodbye` saying so, never left waiting. A TLS handshake
//! runs in the connection's own task, bounded by the handshake timeout.

pub mod budget;
mod unix;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use switchboard_proto::ErrorCode;
use switchboard_transport::tls::TlsServer;
use switchboard_transport::{Endpoint, Stream};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::session::{self, Admission, Origin, SharedRouter};
use crate::{DaemonError, Limits};
use budget::{HandshakeBudget, PeerKey};
pub use unix::UnixEndpoint;

/// What binding may do.
pub struct Rules {
    /// Mode of Unix sockets.
    pub socket_mode: u32,
    /// Whether plain TCP (loopback only) is allowed at all.
    pub allow_plain_tcp: bool,
    /// Certificates for `tls://` endpoints.
    pub tls: Option<Arc<TlsServer>>,
}

/// A listening socket this process was handed at start, served instead of
/// or beside `listen`: by systemd (socket activation, `LISTEN_FDS`), or by
/// the daemon process this one replaced (`switchboard reexec`).
#[derive(Debug, Clone)]
pub enum Inherited {
    /// With `lock` (the held lock file) the daemon owns the socket's files
    /// and removes them when it stops; without, the service manager does.
    Unix {
        listener: Arc<std::os::unix::net::UnixListener>,
        lock: Option<Arc<std::fs::File>>,
    },
    Tcp(Arc<std::net::TcpListener>),
    /// A TCP socket served with TLS (only ever handed over by a predecessor).
    Tls(Arc<std::net::TcpListener>),
}

/// A bound endpoint.
pub enum Listener {
    Unix(UnixEndpoint),
    Tcp { listener: TcpListener, endpoint: Endpoint },
    Tls { listener: TcpListener, endpoint: Endpoint, tls: Arc<TlsServer> },
}

/// An accepted connection, before any handshake.
enum Incoming {
    Ready(Stream),
    /// Still to go through the TLS handshake.
    Tls(TcpStream, Arc<TlsServer>),
}

impl Listener {
    /// Where it listens, in the form clients use.
    pub fn endpoint(&self) -> Endpoint {
        match self {
            Self::Unix(unix) => Endpoint::Unix(unix.path().to_owned()),
            Self::Tcp { endpoint, .. } | Self::Tls { endpoint, .. } => endpoint.clone(),
        }
    }

    /// The socket, to hand to a successor: the files of a Unix socket this
    /// daemon bound are kept (the successor owns them now).
    pub fn hand_over(self) -> io::Result<Inherited> {
        let dup = |fd: std::os::fd::BorrowedFd<'_>| fd.try_clone_to_owned();
        use std::os::fd::AsFd;
        Ok(match self {
            Self::Unix(unix) => {
                let (listener, lock) = unix.hand_over()?;
                Inherited::Unix { listener: Arc::new(listener), lock: lock.map(Arc::new) }
            }
            Self::Tcp { listener, .. } => Inherited::Tcp(Arc::new(dup(listener.as_fd())?.into())),
            Self::Tls { listener, .. } => Inherited::Tls(Arc::new(dup(listener.as_fd())?.into())),
        })
    }

    /// The next connection, where it comes from, and whom its handshake
    /// is counted against.
    async fn accept(&self) -> io::Result<(Incoming, String, PeerKey)> {
        match self {
            Self::Unix(unix) => {
                let (stream, _) = unix.listener().accept().await?;
                let stream = Stream::from_unix(stream)?;
                let key = PeerKey::Uid(stream.peer_cred().map_or(u32::MAX, |cred| cred.uid));
                Ok((Incoming::Ready(stream), "unix".to_owned(), key))
            }
            Self::Tcp { listener, .. } => {
                let (stream, addr) = listener.accept().await?;
                Ok((Incoming::Ready(Stream::from_tcp(stream)?), addr.to_string(), PeerKey::Addr(addr.ip())))
            }
            Self::Tls { listener, tls, .. } => {
                let (stream, addr) = listener.accept().await?;
                Ok((Incoming::Tls(stream, tls.clone()), format!("tls {addr}"), PeerKey::Addr(addr.ip())))
            }
        }
    }
}

/// Binds every endpoint, or fails naming the one that could not be bound.
pub async fn bind(endpoints: &[Endpoint], rules: &Rules) -> Result<Vec<Listener>, DaemonError> {
    let mut listeners = Vec::with_capacity(endpoints.len());
    for endpoint in endpoints {
        let listener = match endpoint {
            Endpoint::Unix(path) => Listener::Unix(UnixEndpoint::bind(path, rules.socket_mode)?),
            Endpoint::Tcp(addr) => {
                let (listener, endpoint) = bind_tcp(endpoint, addr, !rules.allow_plain_tcp).await?;
                Listener::Tcp { listener, endpoint: Endpoint::Tcp(endpoint) }
            }
            Endpoint::Tls(addr) => {
                let tls = rules
                    .tls
                    .clone()
                    .ok_or_else(|| DaemonError::NoTlsConfig { endpoint: endpoint.clone() })?;
                let (listener, local) = bind_tcp(endpoint, addr, false).await?;
                Listener::Tls { listener, endpoint: Endpoint::Tls(local), tls }
            }
        };
        listeners.push(listener);
    }
    Ok(listeners)
}

/// Serves inherited sockets under the same rules as bound ones: plain TCP
/// only on loopback and only when allowed, TLS only with certificates.
pub fn adopt(inherited: &[Inherited], rules: &Rules) -> Result<Vec<Listener>, DaemonError> {
    let failed = |err: io::Error| DaemonError::Inherited { why: format!("an inherited TCP socket: {err}") };
    let tcp_listener = |tcp: &std::net::TcpListener| -> Result<(TcpListener, String), DaemonError> {
        let local = tcp.local_addr().map_err(failed)?;
        let tcp = tcp.try_clone().map_err(failed)?;
        tcp.set_nonblocking(true).map_err(failed)?;
        Ok((TcpListener::from_std(tcp).map_err(failed)?, local.to_string()))
    };
    let mut listeners = Vec::with_capacity(inherited.len());
    for socket in inherited {
        let listener = match socket {
            Inherited::Unix { listener, lock } => {
                Listener::Unix(UnixEndpoint::adopt(listener, lock.as_deref())?)
            }
            Inherited::Tcp(tcp) => {
                let (listener, local) = tcp_listener(tcp)?;
                let endpoint = Endpoint::Tcp(local);
                if !listener.local_addr().is_ok_and(|a| a.ip().is_loopback()) {
                    return Err(DaemonError::NotLoopback { endpoint });
                }
                if !rules.allow_plain_tcp {
                    return Err(DaemonError::PlainTcpNotAllowed { endpoint });
                }
                Listener::Tcp { listener, endpoint }
            }
            Inherited::Tls(tcp) => {
                let (listener, local) = tcp_listener(tcp)?;
                let endpoint = Endpoint::Tls(local);
                let tls = rules
                    .tls
                    .clone()
                    .ok_or_else(|| DaemonError::NoTlsConfig { endpoint: endpoint.clone() })?;
                Listener::Tls { listener, endpoint, tls }
            }
        };
        listeners.push(listener);
    }
    Ok(listeners)
}

/// Binds a TCP address; `plain` ones must be loopback and allowed.
async fn bind_tcp(
    endpoint: &Endpoint,
    addr: &str,
    refuse_plain: bool,
) -> Result<(TcpListener, String), DaemonError> {
    let failed = |source| DaemonError::Listen { endpoint: endpoint.clone(), source };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(addr).await.map_err(failed)?.collect();
    if matches!(endpoint, Endpoint::Tcp(_)) {
        // Without TLS a TCP socket is readable by anyone on the path, so
        // plain TCP is only ever offered on loopback, and only when asked for.
        if addrs.is_empty() || addrs.iter().any(|a| !a.ip().is_loopback()) {
            return Err(DaemonError::NotLoopback { endpoint: endpoint.clone() });
        }
        if refuse_plain {
            return Err(DaemonError::PlainTcpNotAllowed { endpoint: endpoint.clone() });
        }
    }
    let listener = TcpListener::bind(addrs.as_slice()).await.map_err(failed)?;
    let local = listener.local_addr().map_err(failed)?;
    Ok((listener, local.to_string()))
}

/// What every accept loop shares: the connection limit and the budget of
/// pending handshakes.
#[derive(Clone)]
pub struct Gates {
    pub connections: Arc<Semaphore>,
    pub handshakes: Arc<HandshakeBudget>,
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
    gates: Gates,
) {
    let Gates { connections: permits, handshakes } = gates;
    let mut backoff = Duration::from_millis(10);
    loop {
        let accepted = tokio::select! {
            _ = stop_accepting.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((incoming, peer, key)) => {
                backoff = Duration::from_millis(10);
                // Over the handshake budget a client is told so, not left waiting.
                let slot = match handshakes.try_enter(key) {
                    Ok(slot) => slot,
                    Err(why) => {
                        tracing::warn!(%peer, "connection refused: {why}");
                        if let Incoming::Ready(stream) = incoming {
                            sessions.spawn(session::refuse(stream, ErrorCode::Overloaded, why));
                        }
                        continue;
                    }
                };
                let admission = Admission { handshake: Some(slot), permits: Some(permits.clone()) };
                let (router, limits, stop) = (router.clone(), limits.clone(), stop_sessions.clone());
                sessions.spawn(async move {
                    let (stream, origin) = match incoming {
                        Incoming::Ready(stream) => (stream, Origin::Socket),
                        Incoming::Tls(tcp, tls) => {
                            match tokio::time::timeout(limits.handshake_timeout, tls.accept(tcp)).await {
                                Ok(Ok(accepted)) => (accepted.stream, Origin::Tls { common_name: accepted.common_name }),
                                Ok(Err(err)) => return tracing::warn!(%peer, "refused: {err}"),
                                Err(_) => return tracing::warn!(%peer, "refused: no TLS handshake within {:?}", limits.handshake_timeout),
                            }
                        }
                    };
                    session::serve(stream, peer, origin, router, limits, stop, admission).await;
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

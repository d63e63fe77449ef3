//! Where the gateway's connections come from: plain TCP (loopback only) or
//! TLS, each connection with the [`Peer`] it came from — its address and,
//! over TLS, the common name of the client certificate it proved, which
//! becomes its `cert:CN` principal. TLS handshakes run in tasks of their own,
//! bounded in number and time, so a client that stalls its handshake holds
//! neither the accept loop nor anyone else's connection.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use switchboard_transport::tls::{ServerStream, TlsServer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};

/// Longest a TLS handshake may take before its connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most TLS handshakes under way at once; past it, connections wait in the
/// kernel's accept queue.
pub const MAX_HANDSHAKES: usize = 256;

/// What a connection proved about who is on its other end: over TLS, the
/// common name of its verified client certificate, if it sent one.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    pub common_name: Option<String>,
}

/// Plain TCP, for a loopback address.
pub struct Plain(pub TcpListener);

impl Listener for Plain {
    type Io = TcpStream;
    type Addr = Peer;

    async fn accept(&mut self) -> (TcpStream, Peer) {
        loop {
            match self.0.accept().await {
                Ok((tcp, _)) => {
                    let _ = tcp.set_nodelay(true);
                    return (tcp, Peer::default());
                }
                Err(err) => accept_failed(err).await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Peer> {
        self.0.local_addr().map(|_| Peer::default())
    }
}

/// TLS: connections arrive here once their handshake is done.
pub struct Tls {
    done: mpsc::Receiver<(ServerStream, Peer)>,
    accepting: tokio::task::JoinHandle<()>,
}

impl Tls {
    pub fn new(tcp: TcpListener, server: Arc<TlsServer>) -> Self {
        let (ready, done) = mpsc::channel(MAX_HANDSHAKES);
        let accepting = tokio::spawn(handshakes(tcp, server, ready));
        Self { done, accepting }
    }
}

impl Drop for Tls {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

async fn handshakes(tcp: TcpListener, server: Arc<TlsServer>, ready: mpsc::Sender<(ServerStream, Peer)>) {
    let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let (stream, addr) = match tcp.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                accept_failed(err).await;
                continue;
            }
        };
        let (server, ready) = (server.clone(), ready.clone());
        tokio::spawn(async move {
            let _slot = slot;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, server.handshake(stream)).await {
                Ok(Ok((tls, common_name))) => {
                    let _ = ready.send((tls, Peer { common_name })).await;
                }
                Ok(Err(err)) => tracing::debug!("gateway: TLS handshake with {addr} failed: {err}"),
                Err(_) => {
                    tracing::debug!("gateway: TLS handshake with {addr} took over {HANDSHAKE_TIMEOUT:?}")
                }
            }
        });
    }
}

impl Listener for Tls {
    type Io = ServerStream;
    type Addr = Peer;

    async fn accept(&mut self) -> (ServerStream, Peer) {
        match self.done.recv().await {
            Some(accepted) => accepted,
            // The handshake task only ends with the listener: wait forever,
            // as a listener with nothing more to accept does.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Peer> {
        Ok(Peer::default())
    }
}

impl Connected<IncomingStream<'_, Plain>> for Peer {
    fn connect_info(stream: IncomingStream<'_, Plain>) -> Self {
        stream.remote_addr().clone()
    }
}

impl Connected<IncomingStream<'_, Tls>> for Peer {
    fn connect_info(stream: IncomingStream<'_, Tls>) -> Self {
        stream.remote_addr().clone()
    }
}

/// Out of descriptors and the like: wait a little instead of spinning.
async fn accept_failed(err: std::io::Error) {
    tracing::warn!("gateway: accept failed: {err}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

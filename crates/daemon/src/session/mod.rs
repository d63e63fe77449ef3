//! One connection: handshake, then a reader loop that hands frames to the
//! router, and a writer task that drains the session's outbox.
//!
//! The session owns its socket and nothing else; it never decides where a
//! frame goes. It ends on end of stream, on an invalid frame (logged with the
//! reason, answered with a `Goodbye`), when the router kills it as a slow
//! consumer, or at shutdown — and only this connection is affected.

mod handshake;

use std::sync::{Arc, Mutex, MutexGuard};

use switchboard_proto::{ErrorCode, Frame, Hello, SessionId, FEATURE_BLOBS};
use switchboard_transport::{run_writer, FrameReader, Outbox, ReadError, Stream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::listen::budget::HandshakeSlot;
use crate::policy::Principal;
use crate::router::access::LocalPeer;
use crate::router::topics::BacklogSignal;
use crate::router::{Congested, Router, SessionLink, Wait};
use crate::Limits;

/// The router as sessions share it.
pub type SharedRouter = Arc<Mutex<Router>>;

/// Locks the router. Every update is completed before the lock is released,
/// so a panic elsewhere cannot leave it half-changed: poisoning is ignored.
pub fn lock(router: &SharedRouter) -> MutexGuard<'_, Router> {
    router.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How a connection reached the daemon, which decides what proves who it is.
pub enum Origin {
    /// Directly: a Unix socket (the kernel's peer credentials) or plain TCP (none).
    Socket,
    /// Through TLS, bridged over an internal socket pair whose peer
    /// credentials are the daemon's own and must never be used.
    Tls { common_name: Option<String> },
    /// Opened by a hosted app through [`crate::host::RouterHandle`] for
    /// `principal`: the app vouches for who it is; the policy, limits and
    /// reloads of that principal apply as to anyone.
    Hosted { principal: Principal },
}

/// What lets a connection in: its place among pending handshakes, given
/// back once it has said `Hello`, and the connection limit it then takes
/// (none for the daemon's own connections).
pub struct Admission {
    pub handshake: Option<HandshakeSlot>,
    pub permits: Option<Arc<Semaphore>>,
}

/// Serves one accepted connection until it ends.
pub async fn serve(
    stream: Stream,
    peer: String,
    origin: Origin,
    router: SharedRouter,
    limits: Limits,
    stop: CancellationToken,
    admission: Admission,
) {
    let (cred, common_name, hosted) = match origin {
        Origin::Socket => (stream.peer_cred(), None, None),
        Origin::Tls { common_name } => (None, common_name, None),
        Origin::Hosted { principal } => (None, None, Some(principal)),
    };
    let (read, write) = match stream.into_split() {
        Ok(halves) => halves,
        Err(err) => return tracing::warn!(%peer, "cannot register the connection: {err}"),
    };
    let mut reader = FrameReader::new(read, handshake::MAX_HELLO);
    let outbox = Arc::new(Outbox::bounded(limits.congested_at, limits.max_outbox));
    let writer = {
        let outbox = outbox.clone();
        tokio::spawn(async move { run_writer(&outbox, write).await })
    };
    let hello = match handshake::accept(&mut reader, &outbox, &limits).await {
        Ok(hello) => hello,
        Err(why) => {
            tracing::warn!(%peer, "handshake refused: {why}");
            drop(admission.handshake);
            return turn_away(&outbox, writer, None, &limits).await;
        }
    };
    drop(admission.handshake);
    // Over the connection limit a client is told so, not left waiting.
    let _permit = match admission.permits.map(Semaphore::try_acquire_owned).transpose() {
        Ok(permit) => permit,
        Err(_) => {
            let limit = limits.max_connections;
            tracing::warn!(%peer, client = %hello.client_name, "connection refused: {limit} connections is the limit");
            let message = format!("the daemon already has {limit} connections (its limit)");
            let goodbye = Frame::Goodbye { code: ErrorCode::Overloaded, message };
            return turn_away(&outbox, writer, Some(goodbye), &limits).await;
        }
    };
    reader.set_max_frame(limits.max_frame);
    agree_on_blobs(&hello, cred.is_some(), &mut reader, &outbox);
    let uid = cred.map_or(u32::MAX, |c| c.uid);
    let pid = cred.and_then(|c| c.pid).unwrap_or(0);
    let kill = stop.child_token();
    let backlog = Arc::new(BacklogSignal::default());
    let local = cred.map(LocalPeer::identify);
    let link = SessionLink {
        outbox: outbox.clone(),
        kill: kill.clone(),
        backlog: backlog.clone(),
        client_name: hello.client_name.clone(),
        uid,
        pid,
    };
    let admitted = enter(&router, Claim { local, common_name, hosted }, &hello, link, &limits);
    let session = match admitted {
        Ok(session) => session,
        Err((code, message)) => {
            tracing::warn!(%peer, client = %hello.client_name, pid, "connection refused: {message}");
            return turn_away(&outbox, writer, Some(Frame::Goodbye { code, message }), &limits).await;
        }
    };
    tracing::debug!(session, %peer, client = %hello.client_name, pid, "session open");

    let link = Link { session, router: &router, outbox: &outbox, backlog: &backlog, kill: &kill };
    match read_loop(&link, &mut reader, &limits).await {
        Ok(()) => tracing::debug!(session, "session closed"),
        Err(why) => {
            tracing::warn!(session, %peer, client = %hello.client_name, pid, "closing connection: {why}");
            let _ = outbox.push(&Frame::Goodbye { code: goodbye_code(&why), message: why.to_string() });
        }
    }
    lock(&router).remove_session(session);
    outbox.close();
    // A peer that stopped reading must not hold the session open forever.
    let abort = writer.abort_handle();
    if tokio::time::timeout(limits.handshake_timeout, writer).await.is_err() {
        abort.abort();
    }
}

/// The code of the `Goodbye` that ends a connection for `why`.
fn goodbye_code(why: &ReadError) -> ErrorCode {
    match why {
        ReadError::Decode(switchboard_proto::DecodeError::TooLarge { .. }) => ErrorCode::PayloadTooLarge,
        ReadError::Blob { .. } | ReadError::BadBlob { .. } => ErrorCode::BadRequest,
        _ => ErrorCode::ProtocolViolation,
    }
}

/// Takes blobs on this connection if the client asked and can pass them:
/// only over a Unix socket (the one with peer credentials); a descriptor
/// cannot cross TCP, TLS's bridge or a hosted app's link.
fn agree_on_blobs(hello: &Hello, unix: bool, reader: &mut FrameReader, outbox: &Outbox) {
    if hello.features & FEATURE_BLOBS != 0 && unix {
        reader.accept_blobs();
        outbox.accept_blobs();
    }
}

/// Who a connection says it is, before the router has checked.
struct Claim {
    local: Option<LocalPeer>,
    common_name: Option<String>,
    /// The principal a host opened it for.
    hosted: Option<Principal>,
}

/// Says who the connection is and lets it into the router (answering with
/// `Welcome`), or says why not.
fn enter(
    router: &SharedRouter,
    claim: Claim,
    hello: &Hello,
    link: SessionLink,
    limits: &Limits,
) -> Result<SessionId, (ErrorCode, String)> {
    let outbox = link.outbox.clone();
    let mut router = lock(router);
    let principal = match claim.hosted {
        Some(_) if !hello.credential.is_empty() => Err((
            ErrorCode::BadRequest,
            "a hosted connection presents no credential: its host says who it is".to_owned(),
        )),
        Some(principal) => Ok(principal),
        None => router.authenticate(claim.local, claim.common_name.as_deref(), &hello.credential),
    };
    let session = principal.and_then(|principal| router.add_session(link, principal))?;
    let features = if outbox.takes_blobs() { FEATURE_BLOBS } else { 0 };
    let _ = outbox.push(&handshake::welcome(session, features, limits));
    Ok(session)
}

/// Ends a connection that will not be served: sends `goodbye` if there is
/// one, and lets the writer flush it for at most the handshake timeout.
async fn turn_away(
    outbox: &Outbox,
    writer: tokio::task::JoinHandle<std::io::Result<()>>,
    goodbye: Option<Frame>,
    limits: &Limits,
) {
    if let Some(goodbye) = goodbye {
        let _ = outbox.push(&goodbye);
    }
    outbox.close();
    let _ = tokio::time::timeout(limits.handshake_timeout, writer).await;
}

/// Answers a connection that may not be served with a `Goodbye` saying
/// why, without reading from it, and closes it.
pub async fn refuse(stream: Stream, code: ErrorCode, message: String) {
    let Ok((_read, write)) = stream.into_split() else { return };
    let outbox = Outbox::new(usize::MAX);
    let _ = outbox.push(&Frame::Goodbye { code, message });
    outbox.close();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), run_writer(&outbox, write)).await;
}

/// Why the reader loop ended early.
type LoopResult = Result<(), ReadError>;

/// What the reader loop works with.
struct Link<'a> {
    session: SessionId,
    router: &'a SharedRouter,
    outbox: &'a Outbox,
    /// Raised by the router when a subscription of ours has a backlog.
    backlog: &'a BacklogSignal,
    kill: &'a CancellationToken,
}

async fn read_loop(link: &Link<'_>, reader: &mut FrameReader, limits: &Limits) -> LoopResult {
    let (session, router, kill) = (link.session, link.router, link.kill);
    loop {
        let backlogged = link.backlog.is_raised();
        if link.outbox.is_congested() {
            // It is not reading what we send it: read none of its requests
            // (each may add a reply) until it does, or let it go.
            let drained = tokio::select! {
                _ = kill.cancelled() => return Ok(()),
                drained = link.outbox.wait_uncongested(limits.slow_consumer) => drained,
            };
            if !drained && link.outbox.is_closed() {
                return Ok(()); // its socket failed: it is gone
            }
            if !drained {
                return Err(ReadError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "it read nothing of the {} bytes waiting for it for {:?}",
                        link.outbox.queued_bytes(),
                        limits.slow_consumer
                    ),
                )));
            }
            if backlogged {
                lock(router).pump(session);
            }
            continue;
        }
        let next = tokio::select! {
            biased;
            _ = kill.cancelled() => return Ok(()),
            // A publisher elsewhere gave us a backlog: look again.
            () = link.backlog.raised(), if !backlogged => continue,
            // Our socket drained: move waiting topic messages into it.
            true = link.outbox.wait_uncongested(limits.slow_consumer), if backlogged => {
                lock(router).pump(session);
                continue;
            }
            next = reader.next() => next?,
        };
        let Some(first) = next else { return Ok(()) };
        // Handle everything already buffered under one lock.
        let congested = {
            let mut router = lock(router);
            let mut frame = Some(first);
            let mut congested = None;
            while let Some(current) = frame.take() {
                match router.handle(session, current) {
                    Ok(Some(dest)) => {
                        congested = Some(dest);
                        break;
                    }
                    Ok(None) => {}
                    Err(unexpected) => {
                        return Err(ReadError::Io(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            unexpected.to_string(),
                        )))
                    }
                }
                frame = reader.try_next()?;
            }
            congested
        };
        let Some(Congested { session: dest, outbox, wait }) = congested else { continue };
        if wait == Wait::Subscriber {
            if !outbox.is_congested() {
                // Its backlog is moving to its socket: let that run first.
                tokio::task::yield_now().await;
            } else if !outbox.wait_uncongested(limits.publish_hold).await {
                // Congested past the hold: it lags instead.
                lock(router).lag(dest);
            }
        } else if !outbox.wait_uncongested(limits.slow_consumer).await {
            tracing::warn!(
                session = dest,
                queued = outbox.queued_bytes(),
                "disconnecting slow consumer: it read nothing for {:?}",
                limits.slow_consumer
            );
            lock(router).kill_session(dest);
        }
    }
}

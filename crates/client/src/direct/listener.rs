//! The instance's end of direct channels: one abstract socket per
//! connection to the daemon, the tickets the daemon announced, and one task
//! per channel feeding calls to the same handlers the daemon's requests reach.
//!
//! A channel is accepted only with a ticket the daemon gave for it, once,
//! from the process and user the daemon saw make the grant request. It must
//! never serve a call the daemon would not have routed: it serves only its
//! own service, and stops when the daemon revokes the grant.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchboard_proto::direct::{DirectGrant, TICKET_PREFIX};
use switchboard_proto::{
    Caller, ErrorCode, Frame, InstanceId, Request, Welcome, DEFAULT_MAX_FRAME, FEATURE_BLOBS,
    PROTOCOL_VERSION,
};
use switchboard_transport::{run_writer, AbstractListener, Blob, FrameReader, Outbox, PeerCred, Stream};
use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::answer::Replies;
use crate::connection::lock;
use crate::service::ServiceState;

/// A ticket not used within this time is forgotten.
const TICKET_LIFETIME: Duration = Duration::from_secs(10);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Handshake limit: a `Hello` is small.
const HELLO_MAX_FRAME: u32 = 64 * 1024;
/// Connections still in their handshake at once; more are closed at once.
const MAX_HANDSHAKES: usize = 64;
/// After a (non-policy) revoke, how long the caller has to say goodbye.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Calls one caller may have waiting on a channel.
const CHANNEL_INFLIGHT: u32 = 4096;
const CONGESTED_AT: usize = 4 * 1024 * 1024;

/// What a ticket admits.
struct Ticket {
    grant: u64,
    caller: Caller,
    service: Arc<ServiceState>,
    instance: InstanceId,
    max_frame: u32,
    /// The largest blob the caller may send (its principal's limit).
    max_blob: u64,
    expires: Instant,
}

/// Why a channel must end: its grant's revocation.
type Stop = Option<(ErrorCode, String)>;

pub(crate) struct Listener {
    address: String,
    tickets: Mutex<HashMap<String, Ticket>>,
    /// Open channels by grant: how to stop each.
    channels: Mutex<HashMap<u64, watch::Sender<Stop>>>,
    handshakes: Arc<Semaphore>,
}

impl Listener {
    /// Binds a fresh abstract name and accepts on it until `closed`.
    pub fn start(closed: CancellationToken) -> std::io::Result<Arc<Self>> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let mut attempt = 0;
        let socket = loop {
            // Anyone may bind any abstract name: a taken one is tried again
            // under another; callers check whose socket they reach anyway.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let name = format!(
                "switchboard-direct/{}/{}/{nanos:08x}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            );
            match AbstractListener::bind(&name) {
                Ok(socket) => break socket,
                Err(err) if err.kind() == std::io::ErrorKind::AddrInUse && attempt < 8 => attempt += 1,
                Err(err) => return Err(err),
            }
        };
        let listener = Arc::new(Self {
            address: socket.name().to_owned(),
            tickets: Mutex::new(HashMap::new()),
            channels: Mutex::new(HashMap::new()),
            handshakes: Arc::new(Semaphore::new(MAX_HANDSHAKES)),
        });
        tokio::spawn(listener.clone().accept(socket, closed));
        Ok(listener)
    }

    /// Remembers the daemon's grant for `caller`; returns it with our address.
    pub fn offer(
        &self,
        mut grant: DirectGrant,
        caller: Caller,
        service: Arc<ServiceState>,
        max_frame: u32,
    ) -> DirectGrant {
        let now = Instant::now();
        let mut tickets = lock(&self.tickets);
        tickets.retain(|_, t| t.expires > now);
        tickets.insert(
            grant.ticket.clone(),
            Ticket {
                grant: grant.grant,
                caller,
                service,
                instance: grant.instance,
                max_frame,
                max_blob: grant.caller_max_blob,
                expires: now + TICKET_LIFETIME,
            },
        );
        grant.address = self.address.clone();
        grant
    }

    /// The daemon withdrew `grant` (or, with `None`, every grant: the
    /// connection to the daemon is gone and nobody could revoke them).
    pub fn revoke(&self, grant: Option<u64>, code: ErrorCode, message: &str) {
        let channels = lock(&self.channels);
        let stop = Some((code, message.to_owned()));
        match grant {
            Some(grant) => {
                if let Some(channel) = channels.get(&grant) {
                    channel.send_replace(stop);
                }
                lock(&self.tickets).retain(|_, t| t.grant != grant);
            }
            None => {
                for channel in channels.values() {
                    channel.send_replace(stop.clone());
                }
                lock(&self.tickets).clear();
            }
        }
    }

    async fn accept(self: Arc<Self>, socket: AbstractListener, closed: CancellationToken) {
        loop {
            let stream = tokio::select! {
                _ = closed.cancelled() => return,
                accepted = socket.accept() => accepted,
            };
            let stream = match stream {
                Ok(stream) => stream,
                Err(err) => {
                    tracing::warn!("direct channel accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Over the limit the connection is simply dropped (closed).
            if let Ok(permit) = self.handshakes.clone().try_acquire_owned() {
                tokio::spawn(self.clone().serve(stream, permit));
            }
        }
    }

    /// One channel: the handshake, then calls until either end ends it.
    async fn serve(self: Arc<Self>, stream: Stream, handshake: tokio::sync::OwnedSemaphorePermit) {
        let cred = stream.peer_cred();
        let Ok((read, write)) = stream.into_split() else { return };
        let mut reader = FrameReader::new(read, HELLO_MAX_FRAME);
        let outbox = Arc::new(Outbox::new(CONGESTED_AT));
        {
            let outbox = outbox.clone();
            tokio::spawn(async move { run_writer(&outbox, write).await });
        }
        let hello = match tokio::time::timeout(HANDSHAKE_TIMEOUT, reader.next()).await {
            Ok(Ok(Some(Frame::Hello(hello)))) => hello,
            _ => return outbox.close(),
        };
        let (stop_tx, stop) = watch::channel(None);
        // The ticket is taken and the channel registered under the channels'
        // lock (the order `revoke` takes them in), so a revoke either finds
        // the ticket or the channel, never neither.
        let accepted = {
            let mut channels = lock(&self.channels);
            let ticket =
                hello.credential.strip_prefix(TICKET_PREFIX).and_then(|t| lock(&self.tickets).remove(t));
            let accepted = admit(ticket, cred, hello.version);
            if let Ok(ticket) = &accepted {
                channels.insert(ticket.grant, stop_tx);
            }
            accepted
        };
        let ticket = match accepted {
            Ok(ticket) => ticket,
            Err(message) => {
                tracing::warn!(pid = ?cred.and_then(|c| c.pid), "direct channel refused: {message}");
                let _ = outbox.push(&Frame::Goodbye { code: ErrorCode::PermissionDenied, message });
                return outbox.close();
            }
        };
        drop(handshake);
        let max_frame = ticket.max_frame.min(DEFAULT_MAX_FRAME);
        let blobs = hello.features & FEATURE_BLOBS != 0 && ticket.max_blob > 0 && crate::blobs::enabled();
        if blobs {
            reader.accept_blobs();
            outbox.accept_blobs();
        }
        let _ = outbox.push(&Frame::Welcome(Welcome {
            version: PROTOCOL_VERSION,
            features: if blobs { FEATURE_BLOBS } else { 0 },
            session: ticket.grant,
            max_frame,
            max_inflight: CHANNEL_INFLIGHT,
        }));
        reader.set_max_frame(max_frame);
        let replies = Arc::new(Replies::direct(outbox, max_frame));
        serve_calls(&ticket, &mut reader, &replies, stop).await;
        lock(&self.channels).remove(&ticket.grant);
        // `replies` drops here; the channel closes once the last handler answers.
    }
}

/// Whether `ticket` admits the peer with `cred`: known, unexpired, presented
/// by the process and user it was granted to, in our protocol version.
fn admit(ticket: Option<Ticket>, cred: Option<PeerCred>, version: u16) -> Result<Ticket, String> {
    let ticket = ticket.ok_or("unknown or used ticket")?;
    if ticket.expires <= Instant::now() {
        return Err("expired ticket".into());
    }
    if cred.and_then(|c| c.pid) != Some(ticket.caller.pid) || cred.map(|c| c.uid) != Some(ticket.caller.uid) {
        let (pid, uid) = (ticket.caller.pid, ticket.caller.uid);
        return Err(format!("the ticket was granted to pid {pid} uid {uid}, not to this process"));
    }
    if version != PROTOCOL_VERSION {
        return Err(format!("protocol version {version} is not {PROTOCOL_VERSION}"));
    }
    Ok(ticket)
}

/// Feeds the channel's calls to the service until the caller says goodbye,
/// the socket ends, or the grant is revoked.
async fn serve_calls(
    ticket: &Ticket,
    reader: &mut FrameReader,
    replies: &Arc<Replies>,
    mut stop: watch::Receiver<Stop>,
) {
    let mut grace: Option<tokio::time::Instant> = None;
    loop {
        let grace_over = async {
            match grace {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let first = tokio::select! {
            frame = reader.next() => frame,
            changed = stop.changed(), if grace.is_none() => {
                let reason = stop.borrow().clone();
                match (changed, reason) {
                    (Ok(()), Some((code, message))) if code != ErrorCode::PermissionDenied => {
                        // The caller answers what it sent before this with its goodbye.
                        let _ = replies.outbox.push(&Frame::Goodbye { code, message });
                        grace = Some(tokio::time::Instant::now() + CLOSE_GRACE);
                        continue;
                    }
                    _ => return,
                }
            }
            () = grace_over => return,
        };
        // Everything already buffered is served before waiting again.
        let mut frame = first;
        loop {
            match frame {
                Ok(Some(frame)) => {
                    if !serve_frame(ticket, replies, frame) {
                        return;
                    }
                }
                Ok(None) => return,
                Err(err) => {
                    tracing::debug!(grant = ticket.grant, "direct channel closed: {err}");
                    return;
                }
            }
            frame = match reader.try_next() {
                Ok(None) => break,
                other => other,
            };
        }
    }
}

/// Serves one frame from the caller; false when the channel must end.
fn serve_frame(ticket: &Ticket, replies: &Arc<Replies>, frame: Frame) -> bool {
    match frame {
        Frame::Call(call) if call.method.is_reserved() => {
            // `__control` and its kind come from the daemon only, never
            // over a channel another process opened.
            let message = format!("method {} is reserved for the daemon", call.method);
            let _ =
                replies.outbox.push(&Frame::Error { id: call.id, code: ErrorCode::NoSuchMethod, message });
            true
        }
        Frame::Call(call)
            if call.payload.len() as u64 > ticket.max_blob && Blob::of(&call.payload).is_some() =>
        {
            let message = format!(
                "a blob of {} bytes is over {}'s blob limit of {} bytes",
                call.payload.len(),
                ticket.caller.principal,
                ticket.max_blob
            );
            let _ =
                replies.outbox.push(&Frame::Error { id: call.id, code: ErrorCode::PayloadTooLarge, message });
            true
        }
        Frame::Call(call) if call.service == *ticket.service.name() => {
            let request = Request {
                id: call.id,
                timeout_ms: call.timeout_ms,
                instance: ticket.instance,
                caller: ticket.caller.clone(),
                method: call.method,
                headers: call.headers,
                payload: call.payload,
            };
            ticket.service.dispatch(request, replies);
            true
        }
        Frame::Call(call) => {
            let message = format!("this channel serves {}, not {}", ticket.service.name(), call.service);
            let _ =
                replies.outbox.push(&Frame::Error { id: call.id, code: ErrorCode::NoSuchService, message });
            true
        }
        Frame::Goodbye { .. } => false,
        other => {
            let message = format!("unexpected {} frame on a direct channel", other.kind_name());
            let _ = replies.outbox.push(&Frame::Goodbye { code: ErrorCode::ProtocolViolation, message });
            false
        }
    }
}

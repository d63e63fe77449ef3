//! The one task that owns the connection to the daemon.
//!
//! It performs the handshake, reads every frame (answers wake their waiting
//! callers; requests go to the service they belong to), and when the
//! connection breaks it fails what was in flight with `ConnectionLost`,
//! reconnects with exponential backoff, and registers every service and
//! watch again. Writes never go through it: callers push into the link's
//! outbox, drained by a separate writer task in batches.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use switchboard_proto::direct::GRANT_METHOD;
use switchboard_proto::sys::{MonitorEvent, RegistryEvent};
use switchboard_proto::{
    ErrorCode, Frame, Held, Hello, InstanceId, SessionId, DEFAULT_MAX_FRAME, PROTOCOL_VERSION,
};
use switchboard_transport::tls::TlsClient;
use switchboard_transport::{run_writer, Endpoint, FrameReader, Outbox, ReadError, Stream};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::answer::Replies;
use crate::calls::Gathering;
use crate::direct::{self, Direct};
use crate::queues::ConsumerSlot;
use crate::service::ServiceState;
use crate::topics::{Inbox, Item, Message};
use crate::{CallError, ConnectError};

/// Bytes queued to the daemon before `Outbox::is_congested` says so.
const CONGESTED_AT: usize = 4 * 1024 * 1024;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_START: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Makes a connected socket without an address: a daemon hosted in this
/// process hands its apps one end of a socket pair per connection
/// (`switchboard_daemon::host`). Called again on every reconnect.
pub type Dialer = Arc<dyn Fn() -> std::io::Result<Stream> + Send + Sync>;

/// An error answer as it came off the wire.
pub(crate) type WireError = (ErrorCode, String);

/// Who is waiting for the answer to a request id.
pub(crate) enum Waiter {
    Reply(oneshot::Sender<Result<Bytes, WireError>>),
    /// A registration: the reader maps the instance to its service *before*
    /// waking the registrant, so no request for it can arrive unmapped.
    Register(Arc<ServiceState>, oneshot::Sender<Result<InstanceId, WireError>>),
    /// A broadcast: answers arrive per instance until all are in.
    Broadcast(Arc<Mutex<Gathering>>),
}

/// The live connection, as callers use it.
pub(crate) struct Link {
    pub outbox: Arc<Outbox>,
    pub max_frame: u32,
    pub session: SessionId,
    /// Calls in flight on this connection, bounded by the daemon's limit.
    pub inflight: Arc<Semaphore>,
    /// Where answers to requests from the daemon go.
    pub replies: Arc<Replies>,
}

/// State shared by every `Bus` clone and the connection task.
pub(crate) struct Shared {
    pub endpoint: Endpoint,
    pub client_name: String,
    /// Sent in every handshake (reconnects too): `secret:…`, `token:…` or empty.
    pub credential: String,
    /// For `tls://` endpoints.
    pub tls: Option<TlsClient>,
    /// Instead of the endpoint, when the daemon is hosted in this process.
    pub dialer: Option<Dialer>,
    pub link: watch::Sender<Option<Arc<Link>>>,
    pub waiters: Mutex<HashMap<u32, Waiter>>,
    next_id: AtomicU32,
    /// Services to register again after a reconnect.
    pub services: Mutex<Vec<Arc<ServiceState>>>,
    /// Instance id (this connection's) → the service serving it.
    pub instances: Mutex<HashMap<InstanceId, Arc<ServiceState>>>,
    pub watches: Mutex<HashMap<u32, mpsc::Sender<RegistryEvent>>>,
    /// Monitors this connection runs, by the id of the call that started each.
    pub monitors: Mutex<HashMap<u32, mpsc::Sender<MonitorEvent>>>,
    /// Subscription id → where its messages go.
    pub subscriptions: Mutex<HashMap<u32, Arc<Inbox>>>,
    /// Queue consumer id → where its deliveries go.
    pub consumers: Mutex<HashMap<u32, Arc<ConsumerSlot>>>,
    /// Direct channels, as caller and as service.
    pub direct: Direct,
    /// Per target service: retry budgets, circuit breakers (off unless set).
    pub retry_budgets: crate::retry::Budgets,
    pub breakers: crate::breaker::Breakers,
    /// Traced calls in flight: where their hop records go.
    pub hop_sinks: Arc<crate::hops::HopSinks>,
    pub closed: CancellationToken,
    /// Counts reconnects whose registrations were restored (a supervised
    /// instance attaches again on each).
    pub restored: watch::Sender<u64>,
}

/// Locks a mutex whose data stays consistent even if a holder panicked
/// (every update is one insert or remove).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    pub fn new(route: Route, client_name: String, credential: String) -> Self {
        Self {
            endpoint: route.endpoint,
            client_name,
            credential,
            tls: route.tls,
            dialer: route.dialer,
            link: watch::channel(None).0,
            waiters: Mutex::new(HashMap::new()),
            next_id: AtomicU32::new(0),
            services: Mutex::new(Vec::new()),
            instances: Mutex::new(HashMap::new()),
            watches: Mutex::new(HashMap::new()),
            monitors: Mutex::new(HashMap::new()),
            subscriptions: Mutex::new(HashMap::new()),
            consumers: Mutex::new(HashMap::new()),
            direct: Direct::new(),
            retry_budgets: crate::retry::Budgets::default(),
            breakers: crate::breaker::Breakers::default(),
            hop_sinks: Arc::default(),
            closed: CancellationToken::new(),
            restored: watch::channel(0).0,
        }
    }

    /// A fresh request id (never 0).
    pub fn next_id(&self) -> u32 {
        loop {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
            if id != 0 {
                return id;
            }
        }
    }
}

/// A connection that completed its handshake.
pub(crate) struct Connected {
    link: Arc<Link>,
    reader: FrameReader,
    writer: JoinHandle<std::io::Result<()>>,
}

/// Where a connection goes and how it gets there.
pub(crate) struct Route {
    /// The daemon's address (with a dialer: only what logs and errors show).
    pub endpoint: Endpoint,
    pub tls: Option<TlsClient>,
    pub dialer: Option<Dialer>,
}

/// Connects and performs the handshake.
pub(crate) async fn connect(shared: &Shared) -> Result<Connected, ConnectError> {
    let (endpoint, credential) = (&shared.endpoint, &shared.credential);
    let unreachable = |source| ConnectError::Unreachable { endpoint: endpoint.clone(), source };
    let stream = match (endpoint, &shared.tls, &shared.dialer) {
        // Our own process is at the other end: no credentials to check.
        (_, _, Some(dial)) => dial().map_err(unreachable)?,
        (Endpoint::Tls(addr), Some(tls), None) => tls
            .connect(addr)
            .await
            .map_err(|err| ConnectError::Handshake { endpoint: endpoint.clone(), why: err.to_string() })?,
        _ => Stream::connect(endpoint).await.map_err(unreachable)?,
    };
    if !credential.is_empty() {
        if let Some(cred) = stream.peer_cred() {
            if !trusted_daemon_uid(cred.uid) {
                return Err(ConnectError::UntrustedDaemon { endpoint: endpoint.clone(), uid: cred.uid });
            }
        }
    }
    let (read, write) = stream.into_split().map_err(unreachable)?;
    let mut reader = FrameReader::new(read, DEFAULT_MAX_FRAME);
    let outbox = Arc::new(Outbox::new(CONGESTED_AT));
    let writer = {
        let outbox = outbox.clone();
        tokio::spawn(async move { run_writer(&outbox, write).await })
    };
    let hello = Hello {
        version: PROTOCOL_VERSION,
        features: crate::blobs::features(),
        client_name: shared.client_name.clone(),
        credential: credential.clone(),
    };
    let _ = outbox.push(&Frame::Hello(hello));
    let handshake_failed = |why: String| ConnectError::Handshake { endpoint: endpoint.clone(), why };
    let answer = tokio::time::timeout(HANDSHAKE_TIMEOUT, reader.next())
        .await
        .map_err(|_| handshake_failed(format!("no answer within {HANDSHAKE_TIMEOUT:?}")))?
        .map_err(|err| handshake_failed(err.to_string()))?;
    let welcome = match answer {
        Some(Frame::Welcome(welcome)) => welcome,
        Some(Frame::Goodbye { code, message }) => {
            return Err(ConnectError::Refused { endpoint: endpoint.clone(), code, message })
        }
        Some(other) => return Err(handshake_failed(format!("expected Welcome, got {}", other.kind_name()))),
        None => return Err(handshake_failed("the daemon closed the connection".into())),
    };
    reader.set_max_frame(welcome.max_frame);
    if welcome.features & switchboard_proto::FEATURE_BLOBS != 0 {
        // Only the daemon's replies can grant regions.
        reader.accept_regions();
        outbox.accept_blobs();
    }
    let link = Arc::new(Link {
        replies: Arc::new(Replies::new(outbox.clone(), welcome.max_frame)),
        outbox,
        max_frame: welcome.max_frame,
        session: welcome.session,
        inflight: Arc::new(Semaphore::new(welcome.max_inflight.max(1) as usize)),
    });
    Ok(Connected { link, reader, writer })
}

/// Whether a daemon running as `uid` may be given credentials: ours, root's,
/// or the one named in `SWITCHBOARD_DAEMON_UID`. Anyone else could have
/// bound the socket first (a default path under /tmp) to collect secrets.
fn trusted_daemon_uid(uid: u32) -> bool {
    let named = std::env::var("SWITCHBOARD_DAEMON_UID").ok().and_then(|v| v.trim().parse::<u32>().ok());
    uid == rustix::process::getuid().as_raw() || uid == 0 || named == Some(uid)
}

/// Runs the connection until the bus is closed, reconnecting as needed.
pub(crate) async fn run(shared: Arc<Shared>, mut conn: Connected) {
    let mut reconnected = false;
    loop {
        let link = conn.link.clone();
        shared.link.send_replace(Some(link.clone()));
        if reconnected {
            tokio::spawn(restore(shared.clone()));
        }
        let why = read_loop(&shared, &link, &mut conn.reader).await;
        // Unpublish first so no caller pushes into the dying link.
        shared.link.send_replace(None);
        link.outbox.close();
        lock(&shared.waiters).clear(); // wakes every waiter with ConnectionLost
        lock(&shared.instances).clear();
        shared.direct.close_all(&shared, "the connection to the daemon was lost");
        conn.writer.abort();
        if shared.closed.is_cancelled() {
            return;
        }
        tracing::warn!(endpoint = %shared.endpoint, "connection to the daemon lost ({why}); reconnecting");
        let Some(next) = reconnect(&shared).await else {
            return;
        };
        conn = next;
        reconnected = true;
    }
}

async fn reconnect(shared: &Shared) -> Option<Connected> {
    let mut backoff = BACKOFF_START;
    loop {
        tokio::select! {
            _ = shared.closed.cancelled() => return None,
            _ = tokio::time::sleep(backoff) => {}
        }
        match connect(shared).await {
            Ok(conn) => {
                tracing::info!(endpoint = %shared.endpoint, "reconnected to the daemon");
                return Some(conn);
            }
            Err(err) => tracing::debug!("reconnect failed: {err}"),
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// After a reconnect: register every service, watch and subscription again.
async fn restore(shared: Arc<Shared>) {
    let bus = crate::Bus::from_shared(shared.clone());
    let services = lock(&shared.services).clone();
    for service in services {
        if let Err(err) = bus.register_state(service.clone()).await {
            tracing::warn!(service = %service.name(), "could not register again after reconnect: {err}");
        }
    }
    let watches: Vec<u32> = lock(&shared.watches).keys().copied().collect();
    let subscriptions: Vec<Arc<Inbox>> = lock(&shared.subscriptions).values().cloned().collect();
    let link = shared.link.borrow().clone();
    if let Some(link) = link {
        for req in watches {
            let _ = link.outbox.push(&Frame::Watch { req });
        }
        let consumers: Vec<(u32, Arc<ConsumerSlot>)> =
            lock(&shared.consumers).iter().map(|(id, slot)| (*id, slot.clone())).collect();
        for (consumer, slot) in consumers {
            let req = shared.next_id();
            let frame =
                Frame::QueueConsume { req, consumer, prefetch: slot.prefetch, queue: slot.queue.clone() };
            let _ = link.outbox.push(&frame);
        }
        for inbox in subscriptions {
            let req = shared.next_id();
            let _ =
                link.outbox.push(&Frame::Subscribe { req, sid: inbox.sid, pattern: inbox.pattern.clone() });
        }
    }
    shared.restored.send_modify(|count| *count += 1);
}

async fn read_loop(shared: &Arc<Shared>, link: &Arc<Link>, reader: &mut FrameReader) -> String {
    // The inbox of the last message's subscription: streams of messages
    // mostly belong to one, and subscription ids are never reused, so this
    // saves a map lookup under a lock per message.
    let mut last_inbox: Option<(u32, Arc<Inbox>)> = None;
    loop {
        let mut frame = tokio::select! {
            biased;
            _ = shared.closed.cancelled() => return "bus closed".into(),
            frame = reader.next() => frame,
        };
        // Everything already buffered is handled before waiting again: the
        // wait (a cancellation future made and dropped) cost more than a
        // small message's whole handling.
        loop {
            match frame {
                Ok(Some(Frame::Message(m))) => deliver_message(shared, &mut last_inbox, m),
                Ok(Some(frame)) => {
                    if let Err(why) = dispatch(shared, link, frame) {
                        return why;
                    }
                }
                Ok(None) => return "the daemon closed the connection".into(),
                Err(ReadError::Io(err)) => return err.to_string(),
                Err(err) => return format!("invalid data from the daemon: {err}"),
            }
            frame = match reader.try_next() {
                Ok(None) => break,
                buffered => buffered,
            };
        }
    }
}

fn deliver_message(shared: &Shared, last: &mut Option<(u32, Arc<Inbox>)>, m: switchboard_proto::Message) {
    if last.as_ref().is_none_or(|(sid, _)| *sid != m.sid) {
        *last = lock(&shared.subscriptions).get(&m.sid).map(|inbox| (m.sid, inbox.clone()));
    }
    if let Some((_, inbox)) = last {
        inbox.push(Item::Message(Message {
            topic: m.topic,
            payload: m.payload,
            headers: m.headers,
            publisher: m.publisher,
            retained: m.retained,
        }));
    }
}

fn dispatch(shared: &Arc<Shared>, link: &Arc<Link>, frame: Frame) -> Result<(), String> {
    match frame {
        Frame::Reply { id, payload } => answer(shared, id, Ok(payload), 0),
        Frame::Error { id: 0, code, message } => {
            // A refused publication or notification: it has no request to fail.
            tracing::warn!("the daemon refused a message ({}): {message}", code.name());
        }
        Frame::Error { id, code, message } => answer(shared, id, Err((code, message)), 0),
        Frame::Registered { req, instance } => answer(shared, req, Ok(Bytes::new()), instance),
        Frame::Request(request) => {
            let service = lock(&shared.instances).get(&request.instance).cloned();
            match service {
                Some(service) if request.method.as_str() == GRANT_METHOD => {
                    direct::offer(shared, link, &service, request)
                }
                Some(service) => service.dispatch(request, &link.replies),
                None if request.id != 0 => {
                    let _ = link.outbox.push(&Frame::Error {
                        id: request.id,
                        code: ErrorCode::NoSuchInstance,
                        message: format!("instance {} is no longer served here", request.instance),
                    });
                }
                None => {}
            }
        }
        Frame::Event { req, payload } => crate::discovery::event(shared, req, &payload),
        Frame::Message(m) => deliver_message(shared, &mut None, m),
        Frame::Lagged { sid, missed } => {
            if let Some(inbox) = lock(&shared.subscriptions).get(&sid) {
                inbox.push(Item::Lagged(missed));
            }
        }
        Frame::QueueDelivery(delivery) => {
            let slot = lock(&shared.consumers).get(&delivery.consumer).cloned();
            let tag = delivery.tag;
            let delivered = slot.is_some_and(|slot| slot.deliveries.send(delivery).is_ok());
            if !delivered {
                // Nobody here wants it any more: give it back at once.
                let req = shared.next_id();
                let _ = link.outbox.push(&Frame::QueueNack { req, tag, delay_ms: 0 });
            }
        }
        Frame::BroadcastStart { id, instances } => {
            gather(shared, id, |g| g.start(instances));
        }
        Frame::BroadcastResult { id, instance, code, payload } => {
            let result = match code {
                None => Ok(payload),
                Some(code) => {
                    let message = String::from_utf8_lossy(&payload).into_owned();
                    Err(CallError::from_wire(code, message, Duration::ZERO))
                }
            };
            gather(shared, id, |g| g.result(instance, result));
        }
        Frame::Hops { id, headers } => shared.hop_sinks.deliver(id, &headers),
        Frame::Revoke { grant, code, message } => direct::revoked(shared, grant, code, &message),
        Frame::Ended { what, id, code, message } => ended(shared, what, id, code, message),
        Frame::Goodbye { code, message } => {
            tracing::info!("the daemon says goodbye ({}): {message}", code.name());
        }
        other => return Err(format!("unexpected {} frame from the daemon", other.kind_name())),
    }
    Ok(())
}

/// The daemon ended something this connection held (a policy reload no
/// longer allows it): its stream ends, saying why where it can.
fn ended(shared: &Shared, what: Held, id: u64, code: ErrorCode, message: String) {
    tracing::warn!("the daemon ended {} {id} ({}): {message}", what.name(), code.name());
    let error = CallError::from_wire(code, message, Duration::ZERO);
    match what {
        Held::Subscription => {
            let inbox = u32::try_from(id).ok().and_then(|sid| lock(&shared.subscriptions).remove(&sid));
            if let Some(inbox) = inbox {
                inbox.end(Some(error));
            }
        }
        Held::Consumer => {
            // Dropping its sender ends the consumer's deliveries.
            if let Ok(consumer) = u32::try_from(id) {
                lock(&shared.consumers).remove(&consumer);
            }
        }
        Held::Registration => {
            lock(&shared.instances).remove(&id);
        }
        Held::Watch => {
            if let Ok(req) = u32::try_from(id) {
                lock(&shared.watches).remove(&req);
            }
        }
    }
}

/// Feeds a broadcast's gathering; forgets it once complete.
fn gather(shared: &Shared, id: u32, step: impl FnOnce(&mut Gathering) -> bool) {
    let mut waiters = lock(&shared.waiters);
    let Some(Waiter::Broadcast(gathering)) = waiters.get(&id) else {
        return;
    };
    let complete = step(&mut lock(gathering));
    if complete {
        waiters.remove(&id);
    }
}

fn answer(shared: &Shared, id: u32, result: Result<Bytes, WireError>, instance: InstanceId) {
    let Some(waiter) = lock(&shared.waiters).remove(&id) else {
        return;
    };
    match waiter {
        Waiter::Broadcast(gathering) => {
            if let Err(error) = result {
                lock(&gathering).fail(error);
            }
        }
        Waiter::Reply(tx) => {
            let _ = tx.send(result);
        }
        Waiter::Register(service, tx) => {
            let result = result.map(|_| {
                service.set_instance(instance);
                lock(&shared.instances).insert(instance, service);
                instance
            });
            let _ = tx.send(result);
        }
    }
}

//! [`Bus`]: the handle applications hold. Cheap to clone; every clone shares
//! one connection, and any number of requests are multiplexed on it.
//!
//! This module owns connecting and the plumbing every request shares:
//! waiting for a live connection, ids, the in-flight bound, deadlines. The
//! operations themselves live in `calls.rs`, `topics.rs` and `discovery.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use switchboard_proto::{Frame, InstanceId, NameError, ServiceName};
use switchboard_transport::tls::TlsClient;
use switchboard_transport::{default_endpoint, Endpoint};
use tokio::sync::{oneshot, OwnedSemaphorePermit};

use crate::connection::{self, Link, Shared, Waiter, WireError};
use crate::service::{ServiceBuilder, ServiceState};
use crate::{CallError, ConnectError};

/// Deadline of a request when none is given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Closes the connection when the last `Bus` clone is dropped.
struct Owner(Arc<Shared>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.closed.cancel();
    }
}

/// A connection to the switchboard daemon.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use switchboard::{Bus, Reject};
///
/// let bus = Bus::connect_default().await?;
/// // Serve a method...
/// let _echo = bus
///     .serve("demo")?
///     .method("echo", |request| async move { Ok::<_, Reject>(request.payload) })
///     .start()
///     .await?;
/// // ...and call it.
/// let reply = bus.call("demo.echo", &b"hi"[..]).await?;
/// assert_eq!(&reply[..], b"hi");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Bus {
    pub(crate) shared: Arc<Shared>,
    _owner: Option<Arc<Owner>>,
}

impl Bus {
    /// Connects to `addr` (`unix:PATH`, `tcp://HOST:PORT` or a socket path).
    pub async fn connect(addr: &str) -> Result<Self, ConnectError> {
        Self::connect_endpoint(Endpoint::parse(addr)?, default_client_name()).await
    }

    /// Connects to `$SWITCHBOARD_ADDR`, else the default socket.
    pub async fn connect_default() -> Result<Self, ConnectError> {
        Self::connect_endpoint(default_endpoint()?, default_client_name()).await
    }

    /// Connects to `addr` presenting a bearer token from the daemon's config
    /// (`[security] tokens`); the daemon then knows this client as `token:NAME`.
    pub async fn connect_with_token(addr: &str, token: &str) -> Result<Self, ConnectError> {
        Self::connect_as(Endpoint::parse(addr)?, default_client_name(), format!("token:{token}"), None).await
    }

    /// Connects to a `tls://HOST:PORT` endpoint, verifying the daemon with
    /// `tls` (and presenting its client certificate, if it has one: the
    /// daemon then knows this client as `cert:COMMON-NAME`).
    pub async fn connect_tls(addr: &str, tls: &TlsClient) -> Result<Self, ConnectError> {
        let credential = credential_from_env();
        Self::connect_as(Endpoint::parse(addr)?, default_client_name(), credential, Some(tls.clone())).await
    }

    /// Connects to `endpoint`, naming this client `client_name` (shown by
    /// `switchboard ls`). The credential comes from the environment: the
    /// instance secret a supervisor gave this process
    /// (`SWITCHBOARD_INSTANCE_SECRET`), else `SWITCHBOARD_TOKEN`.
    pub async fn connect_endpoint(endpoint: Endpoint, client_name: String) -> Result<Self, ConnectError> {
        Self::connect_as(endpoint, client_name, credential_from_env(), None).await
    }

    /// Connects through `dial`, which hands out connected sockets: how an
    /// app hosted by `switchboard up` reaches the daemon it runs in (the
    /// host decides who the connection is). `endpoint` is only what logs and
    /// errors name. Reconnects dial again.
    pub async fn connect_hosted(
        endpoint: Endpoint,
        client_name: String,
        dial: connection::Dialer,
    ) -> Result<Self, ConnectError> {
        let route = connection::Route { endpoint, tls: None, dialer: Some(dial) };
        Self::open(route, client_name, String::new()).await
    }

    async fn connect_as(
        endpoint: Endpoint,
        client_name: String,
        credential: String,
        tls: Option<TlsClient>,
    ) -> Result<Self, ConnectError> {
        Self::open(connection::Route { endpoint, tls, dialer: None }, client_name, credential).await
    }

    async fn open(
        route: connection::Route,
        client_name: String,
        credential: String,
    ) -> Result<Self, ConnectError> {
        let shared = Arc::new(Shared::new(route, client_name, credential));
        let conn = connection::connect(&shared).await?;
        tokio::spawn(connection::run(shared.clone(), conn));
        // Wait until the connection task has published the link.
        let mut link = shared.link.subscribe();
        let _ = link.wait_for(Option::is_some).await;
        let owner = Arc::new(Owner(shared.clone()));
        Ok(Self { shared, _owner: Some(owner) })
    }

    /// A handle for the connection task's own use; does not keep it alive.
    pub(crate) fn from_shared(shared: Arc<Shared>) -> Self {
        Self { shared, _owner: None }
    }

    /// The endpoint this bus connects to.
    pub fn endpoint(&self) -> &Endpoint {
        &self.shared.endpoint
    }

    /// The daemon's id for the current connection, if connected.
    pub fn session(&self) -> Option<u64> {
        self.shared.link.borrow().as_ref().map(|link| link.session)
    }

    /// Whether calls may take direct channels to the instances they reach
    /// (on by default; `SWITCHBOARD_DIRECT=0` turns it off for a process).
    /// Off, every call goes through the daemon and open channels close.
    pub fn set_direct_calls(&self, enabled: bool) {
        self.shared.direct.set_enabled(&self.shared, enabled);
    }

    /// Circuit breakers for the services this bus calls: with a policy, a
    /// service that keeps failing gets `CircuitOpen` at once until a probe
    /// call succeeds (see [`crate::breaker`]); `None` (the default) turns
    /// them off. Setting it starts every breaker closed.
    pub fn set_breakers(&self, policy: Option<crate::BreakerPolicy>) {
        self.shared.breakers.set_policy(policy);
    }

    /// `service`'s own breaker setting, whatever [`Bus::set_breakers`] says
    /// for the rest: a policy of its own (tighter for a flaky dependency,
    /// looser for a slow one), or `None` for no breaker at all.
    pub fn set_breaker_for(
        &self,
        service: &str,
        policy: Option<crate::BreakerPolicy>,
    ) -> Result<(), NameError> {
        self.shared.breakers.set_policy_for(ServiceName::parse(service)?, policy);
        Ok(())
    }

    /// The services whose breaker is open or half-open now, by name.
    pub fn open_breakers(&self) -> Vec<(String, crate::BreakerState)> {
        self.shared.breakers.not_closed()
    }

    /// The instance that calls to `service` reach over a direct channel
    /// right now, if one is open.
    pub fn direct_instance(&self, service: &str) -> Option<InstanceId> {
        let service = ServiceName::parse(service).ok()?;
        self.shared.direct.instance_for(&service)
    }

    /// Closes the connection now (it also closes when the last clone drops).
    pub fn close(&self) {
        self.shared.closed.cancel();
    }

    /// Starts declaring a service to serve from this connection.
    pub fn serve(&self, service: &str) -> Result<ServiceBuilder, NameError> {
        Ok(ServiceBuilder::new(self.clone(), ServiceName::parse(service)?))
    }

    /// Registers a service's state with the daemon; used at start and after
    /// a reconnect.
    pub(crate) async fn register_state(&self, state: Arc<ServiceState>) -> Result<InstanceId, CallError> {
        let deadline = Instant::now() + DEFAULT_TIMEOUT;
        let frame = |req, _: &Link| state.register_frame(req);
        let waiter = |tx| Waiter::Register(state.clone(), tx);
        self.round_trip(deadline, DEFAULT_TIMEOUT, false, |_| Ok(()), frame, waiter).await
    }

    /// Unregisters an instance.
    pub(crate) async fn unregister(&self, instance: InstanceId) -> Result<(), CallError> {
        self.control(|req| Frame::Unregister { req, instance }).await.map(drop)
    }

    /// A control request answered by `Reply` or `Error`.
    pub(crate) async fn control(&self, frame: impl Fn(u32) -> Frame) -> Result<Bytes, CallError> {
        let deadline = Instant::now() + DEFAULT_TIMEOUT;
        let frame = |req, _: &Link| frame(req);
        self.round_trip(deadline, DEFAULT_TIMEOUT, false, |_| Ok(()), frame, Waiter::Reply).await
    }

    /// Waits for a live connection, up to `deadline`.
    pub(crate) async fn wait_link(
        &self,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Arc<Link>, CallError> {
        if let Some(link) = self.shared.link.borrow().clone() {
            return Ok(link);
        }
        let mut rx = self.shared.link.subscribe();
        let wait = rx.wait_for(Option::is_some);
        tokio::select! {
            _ = self.shared.closed.cancelled() => Err(CallError::Closed),
            found = tokio::time::timeout_at(deadline.into(), wait) => match found {
                Ok(Ok(link)) => link.clone().ok_or(CallError::Closed),
                Ok(Err(_)) => Err(CallError::Closed),
                Err(_) => Err(CallError::Timeout(timeout)),
            },
        }
    }

    /// Queues a request built for a fresh id, with its waiter registered.
    ///
    /// A request that could not be queued (the connection died first) is
    /// retried on the next connection; once queued it is never resent, so a
    /// lost connection yields `ConnectionLost`, not a duplicate.
    pub(crate) async fn send_request(
        &self,
        deadline: Instant,
        timeout: Duration,
        counts_inflight: bool,
        check: impl Fn(&Link) -> Result<(), CallError>,
        frame: impl Fn(u32, &Link) -> Frame,
        waiter: Waiter,
    ) -> Result<Sent, CallError> {
        let mut waiter = Some(waiter);
        loop {
            let link = self.wait_link(deadline, timeout).await?;
            check(&link)?;
            let permit = if counts_inflight {
                let acquire = link.inflight.clone().acquire_owned();
                match tokio::time::timeout_at(deadline.into(), acquire).await {
                    Ok(Ok(permit)) => Some(permit),
                    Ok(Err(_)) => return Err(CallError::Closed),
                    Err(_) => return Err(CallError::Timeout(timeout)),
                }
            } else {
                None
            };
            let id = self.shared.next_id();
            let Some(entry) = waiter.take() else {
                return Err(CallError::ConnectionLost);
            };
            connection::lock(&self.shared.waiters).insert(id, entry);
            if link.outbox.push(&frame(id, &link)).is_ok() {
                return Ok(Sent { id, _permit: permit });
            }
            // The link died before the frame was queued: take the waiter
            // back and try the next connection.
            waiter = connection::lock(&self.shared.waiters).remove(&id);
            tokio::task::yield_now().await;
        }
    }

    /// Sends a request and waits for its single answer.
    pub(crate) async fn round_trip<T>(
        &self,
        deadline: Instant,
        timeout: Duration,
        counts_inflight: bool,
        check: impl Fn(&Link) -> Result<(), CallError>,
        frame: impl Fn(u32, &Link) -> Frame,
        waiter: impl FnOnce(oneshot::Sender<Result<T, WireError>>) -> Waiter,
    ) -> Result<T, CallError> {
        let (tx, rx) = oneshot::channel();
        let sent = self.send_request(deadline, timeout, counts_inflight, check, frame, waiter(tx)).await?;
        match tokio::time::timeout_at(deadline.into(), rx).await {
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err((code, message)))) => Err(CallError::from_wire(code, message, timeout)),
            Ok(Err(_)) => Err(self.lost()),
            Err(_) => {
                connection::lock(&self.shared.waiters).remove(&sent.id);
                Err(CallError::Timeout(timeout))
            }
        }
    }

    /// The error for a waiter dropped without an answer.
    pub(crate) fn lost(&self) -> CallError {
        if self.shared.closed.is_cancelled() {
            CallError::Closed
        } else {
            CallError::ConnectionLost
        }
    }
}

/// A queued request: its id, and its place among the calls in flight.
pub(crate) struct Sent {
    pub id: u32,
    _permit: Option<OwnedSemaphorePermit>,
}

/// Milliseconds left, rounded up: the daemon's deadline must never fall
/// before the caller's, or a timeout would come back early.
pub(crate) fn remaining_ms(deadline: Instant) -> u32 {
    let left = deadline.saturating_duration_since(Instant::now()).as_micros().div_ceil(1000);
    u32::try_from(left).unwrap_or(u32::MAX).max(1)
}

fn default_client_name() -> String {
    std::env::args()
        .next()
        .and_then(|arg0| {
            std::path::Path::new(&arg0).file_name().map(|name| name.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "client".to_owned())
}

/// Encodes a value as MessagePack, maps keyed by field name (the bus's
/// payload convention, and what the CLI's JSON becomes).
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, CallError> {
    rmp_serde::to_vec_named(value).map(Bytes::from).map_err(|err| CallError::Encode(err.to_string()))
}

/// Decodes a MessagePack payload.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, CallError> {
    rmp_serde::from_slice(payload).map_err(|err| CallError::Decode(err.to_string()))
}

/// What the client proves beyond its OS identity, from the environment: the
/// instance secret the supervisor gave this process, else a bearer token.
fn credential_from_env() -> String {
    use switchboard_proto::supervision::ENV_SECRET;
    match (std::env::var(ENV_SECRET), std::env::var("SWITCHBOARD_TOKEN")) {
        (Ok(secret), _) if !secret.is_empty() => format!("secret:{secret}"),
        (_, Ok(token)) if !token.is_empty() => format!("token:{token}"),
        _ => String::new(),
    }
}

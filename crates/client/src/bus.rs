//! [`Bus`]: the handle applications hold. Cheap to clone; every clone shares
//! one connection, and any number of calls are multiplexed on it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use switchboard_proto::sys::{self, DaemonInfo, RegistryEvent, ServiceInfo};
use switchboard_proto::{
    Call, Frame, InstanceId, MethodName, NameError, Notify, ServiceName, Target,
};
use switchboard_transport::{default_endpoint, Endpoint};
use tokio::sync::{mpsc, oneshot};

use crate::connection::{self, lock, Link, Shared, Waiter, WireError};
use crate::service::{ServiceBuilder, ServiceState};
use crate::{CallError, ConnectError};

/// Deadline of a call when none is given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Bytes a `Call` frame adds around its payload and names.
const CALL_OVERHEAD: usize = 1 + 4 + 4 + 8 + 1 + 1;

/// Options of one call.
#[derive(Debug, Clone, Copy)]
pub struct CallOptions {
    /// The reply or an error comes back within this time.
    pub timeout: Duration,
    /// Send to this instance instead of letting the daemon choose.
    pub instance: Option<InstanceId>,
}

impl Default for CallOptions {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_TIMEOUT,
            instance: None,
        }
    }
}

impl CallOptions {
    pub fn timeout(timeout: Duration) -> Self {
        Self {
            timeout,
            ..Self::default()
        }
    }
}

/// Anything that names a call target: `"billing.charge"` or a parsed [`Target`].
pub trait IntoTarget {
    fn into_target(self) -> Result<Target, NameError>;
}

impl IntoTarget for &str {
    fn into_target(self) -> Result<Target, NameError> {
        Target::parse(self)
    }
}

impl IntoTarget for &String {
    fn into_target(self) -> Result<Target, NameError> {
        Target::parse(self)
    }
}

impl IntoTarget for Target {
    fn into_target(self) -> Result<Target, NameError> {
        Ok(self)
    }
}

impl IntoTarget for &Target {
    fn into_target(self) -> Result<Target, NameError> {
        Ok(self.clone())
    }
}

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
    shared: Arc<Shared>,
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

    /// Connects to `endpoint`, naming this client `client_name` (shown by
    /// `switchboard ls`).
    pub async fn connect_endpoint(
        endpoint: Endpoint,
        client_name: String,
    ) -> Result<Self, ConnectError> {
        let conn = connection::connect(&endpoint, &client_name).await?;
        let shared = Arc::new(Shared::new(endpoint, client_name));
        tokio::spawn(connection::run(shared.clone(), conn));
        // Wait until the connection task has published the link.
        let mut link = shared.link.subscribe();
        let _ = link.wait_for(Option::is_some).await;
        let owner = Arc::new(Owner(shared.clone()));
        Ok(Self {
            shared,
            _owner: Some(owner),
        })
    }

    /// A handle for the connection task's own use; does not keep it alive.
    pub(crate) fn from_shared(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            _owner: None,
        }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The endpoint this bus connects to.
    pub fn endpoint(&self) -> &Endpoint {
        &self.shared.endpoint
    }

    /// The daemon's id for the current connection, if connected.
    pub fn session(&self) -> Option<u64> {
        self.shared.link.borrow().as_ref().map(|link| link.session)
    }

    /// Closes the connection now (it also closes when the last clone drops).
    pub fn close(&self) {
        self.shared.closed.cancel();
    }

    /// Calls `target` with `payload` and waits up to [`DEFAULT_TIMEOUT`].
    pub async fn call(
        &self,
        target: impl IntoTarget,
        payload: impl Into<Bytes>,
    ) -> Result<Bytes, CallError> {
        self.call_with(target, payload, CallOptions::default())
            .await
    }

    /// Calls `target` with `payload` under `options`.
    pub async fn call_with(
        &self,
        target: impl IntoTarget,
        payload: impl Into<Bytes>,
        options: CallOptions,
    ) -> Result<Bytes, CallError> {
        let Target { service, method } = target.into_target()?;
        let payload = payload.into();
        let deadline = Instant::now() + options.timeout;
        let instance = options.instance.unwrap_or(0);
        let check = |link: &Link| check_size(link, &service, &method, &payload);
        let frame = |id, _: &Link| {
            Frame::Call(Call {
                id,
                timeout_ms: remaining_ms(deadline),
                instance,
                service: service.clone(),
                method: method.clone(),
                payload: payload.clone(),
            })
        };
        self.round_trip(deadline, options.timeout, true, check, frame, Waiter::Reply)
            .await
    }

    /// Calls `target` with a MessagePack-encoded `request` and decodes the reply.
    pub async fn call_as<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        target: impl IntoTarget,
        request: &Req,
    ) -> Result<Resp, CallError> {
        let reply = self.call(target, encode(request)?).await?;
        decode(&reply)
    }

    /// Sends a one-way notification to `target` (no reply, no error from
    /// the callee; an unknown target is dropped by the daemon).
    pub async fn notify(
        &self,
        target: impl IntoTarget,
        payload: impl Into<Bytes>,
    ) -> Result<(), CallError> {
        let Target { service, method } = target.into_target()?;
        let payload = payload.into();
        let deadline = Instant::now() + DEFAULT_TIMEOUT;
        loop {
            let link = self.wait_link(deadline, DEFAULT_TIMEOUT).await?;
            check_size(&link, &service, &method, &payload)?;
            let frame = Frame::Notify(Notify {
                instance: 0,
                service: service.clone(),
                method: method.clone(),
                payload: payload.clone(),
            });
            if link.outbox.push(&frame).is_ok() {
                return Ok(());
            }
            tokio::task::yield_now().await;
        }
    }

    /// Starts declaring a service to serve from this connection.
    pub fn serve(&self, service: &str) -> Result<ServiceBuilder, NameError> {
        Ok(ServiceBuilder::new(
            self.clone(),
            ServiceName::parse(service)?,
        ))
    }

    /// Every registered service with its instances and methods.
    pub async fn services(&self) -> Result<Vec<ServiceInfo>, CallError> {
        let target = format!("{}.{}", sys::REGISTRY_SERVICE, sys::REGISTRY_LIST);
        let reply = self.call(&target, Bytes::new()).await?;
        sys::decode(&reply).map_err(|err| CallError::Decode(err.to_string()))
    }

    /// Facts about the daemon (version, pid, counts).
    pub async fn daemon_info(&self) -> Result<DaemonInfo, CallError> {
        let target = format!("{}.{}", sys::DAEMON_SERVICE, sys::DAEMON_INFO);
        let reply = self.call(&target, Bytes::new()).await?;
        sys::decode(&reply).map_err(|err| CallError::Decode(err.to_string()))
    }

    /// A stream of registry changes (instances up and down) from now on.
    /// Events beyond `capacity` unread are dropped (and logged).
    pub async fn watch(&self, capacity: usize) -> Result<mpsc::Receiver<RegistryEvent>, CallError> {
        let deadline = Instant::now() + DEFAULT_TIMEOUT;
        let (tx, rx) = mpsc::channel(capacity.max(1));
        // The watch is known by the id of the request that opened it.
        let frame = |req, _: &Link| {
            lock(&self.shared.watches).insert(req, tx.clone());
            Frame::Watch { req }
        };
        let result = self
            .round_trip(
                deadline,
                DEFAULT_TIMEOUT,
                false,
                |_| Ok(()),
                frame,
                Waiter::Reply,
            )
            .await;
        match result {
            Ok(_) => Ok(rx),
            Err(err) => {
                lock(&self.shared.watches).retain(|_, sender| !sender.same_channel(&tx));
                Err(err)
            }
        }
    }

    /// Registers a service's state with the daemon; used at start and after
    /// a reconnect.
    pub(crate) async fn register_state(
        &self,
        state: Arc<ServiceState>,
    ) -> Result<InstanceId, CallError> {
        let deadline = Instant::now() + DEFAULT_TIMEOUT;
        let frame = |req, _: &Link| state.register_frame(req);
        let waiter = |tx| Waiter::Register(state.clone(), tx);
        self.round_trip(deadline, DEFAULT_TIMEOUT, false, |_| Ok(()), frame, waiter)
            .await
    }

    /// Unregisters an instance.
    pub(crate) async fn unregister(&self, instance: InstanceId) -> Result<(), CallError> {
        let deadline = Instant::now() + DEFAULT_TIMEOUT;
        let frame = |req, _: &Link| Frame::Unregister { req, instance };
        self.round_trip(
            deadline,
            DEFAULT_TIMEOUT,
            false,
            |_| Ok(()),
            frame,
            Waiter::Reply,
        )
        .await?;
        Ok(())
    }

    /// Waits for a live connection, up to `deadline`.
    async fn wait_link(
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

    /// Sends a request built for a fresh id and waits for its answer.
    ///
    /// A request that could not be queued (the connection died first) is
    /// retried on the next connection; once queued it is never resent, so a
    /// lost connection yields `ConnectionLost`, not a duplicate.
    async fn round_trip<T>(
        &self,
        deadline: Instant,
        timeout: Duration,
        counts_inflight: bool,
        check: impl Fn(&Link) -> Result<(), CallError>,
        frame: impl Fn(u32, &Link) -> Frame,
        waiter: impl Fn(oneshot::Sender<Result<T, WireError>>) -> Waiter,
    ) -> Result<T, CallError> {
        loop {
            let link = self.wait_link(deadline, timeout).await?;
            check(&link)?;
            let _permit = if counts_inflight {
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
            let (tx, rx) = oneshot::channel();
            lock(&self.shared.waiters).insert(id, waiter(tx));
            if link.outbox.push(&frame(id, &link)).is_err() {
                lock(&self.shared.waiters).remove(&id);
                tokio::task::yield_now().await;
                continue;
            }
            return match tokio::time::timeout_at(deadline.into(), rx).await {
                Ok(Ok(Ok(value))) => Ok(value),
                Ok(Ok(Err((code, message)))) => Err(CallError::from_wire(code, message, timeout)),
                Ok(Err(_)) if self.shared.closed.is_cancelled() => Err(CallError::Closed),
                Ok(Err(_)) => Err(CallError::ConnectionLost),
                Err(_) => {
                    lock(&self.shared.waiters).remove(&id);
                    Err(CallError::Timeout(timeout))
                }
            };
        }
    }
}

fn check_size(
    link: &Link,
    service: &ServiceName,
    method: &MethodName,
    payload: &Bytes,
) -> Result<(), CallError> {
    let size = CALL_OVERHEAD + service.as_bytes().len() + method.as_bytes().len() + payload.len();
    if size > link.max_frame as usize {
        return Err(CallError::PayloadTooLarge(format!(
            "payload of {} bytes does not fit the daemon's maximum frame of {} bytes",
            payload.len(),
            link.max_frame
        )));
    }
    Ok(())
}

fn remaining_ms(deadline: Instant) -> u32 {
    let left = deadline
        .saturating_duration_since(Instant::now())
        .as_millis();
    u32::try_from(left).unwrap_or(u32::MAX).max(1)
}

fn default_client_name() -> String {
    std::env::args()
        .next()
        .and_then(|arg0| {
            std::path::Path::new(&arg0)
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "client".to_owned())
}

/// Encodes a value as a MessagePack map (the bus's payload convention).
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, CallError> {
    rmp_serde::to_vec_named(value)
        .map(Bytes::from)
        .map_err(|err| CallError::Encode(err.to_string()))
}

/// Decodes a MessagePack payload.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, CallError> {
    rmp_serde::from_slice(payload).map_err(|err| CallError::Decode(err.to_string()))
}

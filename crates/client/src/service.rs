//! The service side: declare methods with handlers, register, serve.
//!
//! Each request runs its handler on its own task, at most
//! `max_concurrency` at once; up to `max_queued` more wait their turn, and
//! beyond that the caller gets `Overloaded` at once rather than memory
//! growing. A handler that panics still answers (with `Rejected`), so its
//! caller never waits for a deadline that nothing will meet.

use std::collections::HashMap;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::de::DeserializeOwned;
use switchboard_proto::stats::{CallReport, MethodCounts};
use switchboard_proto::trace::{TraceParent, TRACEPARENT};
use switchboard_proto::{
    Caller, ErrorCode, Frame, Headers, InstanceId, MethodName, MethodSpec, NameError, ServiceName,
};
use tokio::sync::Semaphore;

use crate::answer::{Admitted, Answer, Replies};
use crate::connection::lock;
use crate::{Bus, CallError, RegisterError, Reject};

pub use crate::supervised::{log, notify_ready, run, Control, ControlKind, Controls, RunError};

/// What a handler returns.
pub type HandlerResult = Result<Bytes, Reject>;
type HandlerFuture = Pin<Box<dyn Future<Output = HandlerResult> + Send>>;
type Handler = Arc<dyn Fn(Request) -> HandlerFuture + Send + Sync>;

/// A method as registered: its handler, its signature text, and the calls
/// it served over direct channels since the last report to the daemon.
struct Method {
    handler: Handler,
    signature: String,
    served: Arc<Mutex<MethodCounts>>,
}

/// Handlers running at once, per service, unless told otherwise.
pub const DEFAULT_CONCURRENCY: usize = 256;
/// Requests waiting for a handler slot before callers get `Overloaded`.
pub const DEFAULT_QUEUED: usize = 4096;

/// One incoming call or notification.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: MethodName,
    pub payload: Bytes,
    /// Headers the caller attached.
    pub headers: Headers,
    /// Who sent it, as the daemon verified it.
    pub caller: Caller,
    /// The instance (of this service) it was routed to.
    pub instance: InstanceId,
    /// When the caller stops waiting; `None` for a notification.
    pub deadline: Option<Instant>,
}

impl Request {
    /// The caller's trace context (its `traceparent` header), if valid;
    /// calls made while serving this continue its trace by themselves.
    pub fn trace(&self) -> Option<TraceParent> {
        self.headers.get(TRACEPARENT).and_then(TraceParent::parse)
    }

    /// Whether this is a one-way notification (its result goes nowhere).
    pub fn is_notification(&self) -> bool {
        self.deadline.is_none()
    }

    /// Decodes the MessagePack payload, rejecting the call if it does not fit `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, Reject> {
        rmp_serde::from_slice(&self.payload)
            .map_err(|err| Reject::new(format!("cannot decode arguments of {}: {err}", self.method)))
    }
}

/// Declares a service; see [`Bus::serve`].
pub struct ServiceBuilder {
    pub(crate) bus: Bus,
    name: Result<ServiceName, NameError>,
    handlers: Vec<(Result<MethodName, NameError>, Method)>,
    /// Methods fed from the durable queue `<service>.<method>`.
    queued: Vec<(String, Handler)>,
    max_concurrency: usize,
    max_queued: usize,
}

impl ServiceBuilder {
    pub(crate) fn new(bus: Bus, name: ServiceName) -> Self {
        Self::named(bus, Ok(name))
    }

    /// A builder for a contract's server adapter; an invalid name is
    /// reported by [`ServiceBuilder::start`].
    #[doc(hidden)]
    pub fn for_contract(bus: &Bus, service: &str) -> Self {
        Self::named(bus.clone(), ServiceName::parse(service))
    }

    fn named(bus: Bus, name: Result<ServiceName, NameError>) -> Self {
        Self {
            bus,
            name,
            handlers: Vec::new(),
            queued: Vec::new(),
            max_concurrency: DEFAULT_CONCURRENCY,
            max_queued: DEFAULT_QUEUED,
        }
    }

    /// Serves `method` with `handler`.
    pub fn method<F, Fut>(self, method: &str, handler: F) -> Self
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.method_with_signature(method, "", handler)
    }

    /// Serves `method` with `handler`, registering a human-readable
    /// signature (shown by `switchboard ls SERVICE`).
    pub fn method_with_signature<F, Fut>(mut self, method: &str, signature: &str, handler: F) -> Self
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |request| Box::pin(handler(request)));
        let method_spec = Method { handler, signature: signature.to_owned(), served: Arc::default() };
        self.handlers.push((MethodName::parse(method), method_spec));
        self
    }

    /// Serves `method` from the durable queue `<service>.<method>`: each
    /// message is handed to `handler` and acked once it returns `Ok`; a
    /// rejected message is returned to the queue (and dead-lettered after
    /// the queue's `max_attempts`). Messages put while no instance runs wait
    /// in the queue.
    pub fn queued_method<F, Fut>(mut self, method: &str, handler: F) -> Self
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |request| Box::pin(handler(request)));
        self.queued.push((method.to_owned(), handler));
        self
    }

    /// Most handlers running at once (default 256).
    pub fn max_concurrency(mut self, limit: usize) -> Self {
        self.max_concurrency = limit.max(1);
        self
    }

    /// Most requests waiting for a slot before callers get `Overloaded`.
    pub fn max_queued(mut self, limit: usize) -> Self {
        self.max_queued = limit;
        self
    }

    /// Registers the service; it is served until [`Service::stop`] or the
    /// bus closes, and registered again after every reconnect.
    pub async fn start(self) -> Result<Service, RegisterError> {
        let name = self.name?;
        let mut handlers = HashMap::new();
        for (method, handler) in self.handlers {
            handlers.insert(method?, handler);
        }
        if handlers.is_empty() && self.queued.is_empty() {
            return Err(RegisterError::NoMethods(name.to_string()));
        }
        let mut consumers = Vec::new();
        for (method, handler) in self.queued {
            let queue = self.bus.queue(&format!("{name}.{method}"))?;
            let consumer =
                queue.consume(self.max_concurrency.min(256) as u32).await.map_err(RegisterError::Queue)?;
            consumers.push(tokio::spawn(serve_queue(consumer, method, handler)).abort_handle());
        }
        let state = Arc::new(ServiceState {
            name,
            handlers,
            slots: Arc::new(Semaphore::new(self.max_concurrency)),
            admitted: AtomicUsize::new(0),
            max_admitted: self.max_concurrency + self.max_queued,
            instance: AtomicU64::new(0),
        });
        let registered = !state.handlers.is_empty();
        if registered {
            self.bus.register_state(state.clone()).await.map_err(RegisterError::Refused)?;
            lock(&self.bus.shared.services).push(state.clone());
        }
        Ok(Service { bus: self.bus, state, registered, consumers })
    }
}

/// Runs a queued method: one task per delivery (the consumer's prefetch
/// bounds how many at once), acked when the handler succeeds.
async fn serve_queue(mut consumer: crate::Consumer, method: String, handler: Handler) {
    let Ok(method) = MethodName::parse(&method) else { return };
    while let Some(delivery) = consumer.next().await {
        let handler = handler.clone();
        let method = method.clone();
        tokio::spawn(async move {
            let request = Request {
                method,
                payload: delivery.payload.clone(),
                headers: delivery.headers.clone(),
                caller: Caller::default(),
                instance: 0,
                deadline: None,
            };
            let outcome = match handler(request).await {
                Ok(_) => delivery.ack().await,
                Err(reject) => {
                    tracing::warn!(
                        id = delivery.id,
                        attempt = delivery.attempt,
                        "queued handler rejected: {reject}"
                    );
                    delivery.nack(Duration::from_millis(100)).await
                }
            };
            if let Err(err) = outcome {
                tracing::debug!("queued delivery not settled: {err}");
            }
        });
    }
}

/// A running service registration.
pub struct Service {
    bus: Bus,
    state: Arc<ServiceState>,
    /// Whether it has call methods registered with the daemon.
    registered: bool,
    /// Tasks consuming its queued methods.
    consumers: Vec<tokio::task::AbortHandle>,
}

impl Drop for Service {
    fn drop(&mut self) {
        for consumer in &self.consumers {
            consumer.abort();
        }
    }
}

impl Service {
    /// The instance id the daemon gave this registration (changes after a reconnect).
    pub fn instance(&self) -> InstanceId {
        self.state.instance.load(Ordering::Relaxed)
    }

    /// Its registration, whose instance id a reconnect updates.
    pub(crate) fn state(&self) -> Arc<ServiceState> {
        self.state.clone()
    }

    pub fn name(&self) -> &ServiceName {
        &self.state.name
    }

    /// Stops serving: the daemon forgets this instance, and queued methods
    /// stop consuming (their messages wait for the next instance).
    pub async fn stop(self) -> Result<(), CallError> {
        for consumer in &self.consumers {
            consumer.abort();
        }
        if !self.registered {
            return Ok(());
        }
        let shared = &self.bus.shared;
        lock(&shared.services).retain(|s| !Arc::ptr_eq(s, &self.state));
        let instance = self.instance();
        lock(&shared.instances).remove(&instance);
        self.bus.unregister(instance).await
    }
}

/// A service as the connection task sees it.
pub(crate) struct ServiceState {
    name: ServiceName,
    handlers: HashMap<MethodName, Method>,
    slots: Arc<Semaphore>,
    admitted: AtomicUsize,
    max_admitted: usize,
    instance: AtomicU64,
}

impl ServiceState {
    pub fn name(&self) -> &ServiceName {
        &self.name
    }

    pub fn instance(&self) -> InstanceId {
        self.instance.load(Ordering::Relaxed)
    }

    /// What its methods served over direct channels since the last time
    /// this was asked (the counts start again from zero).
    pub fn take_served(&self) -> CallReport {
        let methods = self
            .handlers
            .iter()
            .filter_map(|(name, method)| {
                let counts = std::mem::take(&mut *lock(&method.served));
                (counts.calls > 0).then(|| (name.to_string(), counts))
            })
            .collect();
        CallReport { service: self.name.to_string(), methods }
    }

    /// A request admitted by `dispatch` was answered.
    pub fn release_admission(&self) {
        self.admitted.fetch_sub(1, Ordering::AcqRel);
    }

    pub fn set_instance(&self, instance: InstanceId) {
        self.instance.store(instance, Ordering::Relaxed);
    }

    pub fn register_frame(&self, req: u32) -> Frame {
        let mut methods: Vec<MethodSpec> = self
            .handlers
            .iter()
            .map(|(name, method)| MethodSpec { name: name.clone(), signature: method.signature.clone() })
            .collect();
        methods.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
        Frame::Register { req, service: self.name.clone(), methods }
    }

    /// Runs the handler for `request` on its own task; its answer goes to `replies`.
    pub fn dispatch(self: &Arc<Self>, request: switchboard_proto::Request, replies: &Arc<Replies>) {
        let mut answer = Answer { replies: replies.clone(), id: request.id, hops: None, served: None };
        let Some(method) = self.handlers.get(&request.method) else {
            let message = format!("service {} has no method {}", self.name, request.method);
            return answer.error(ErrorCode::NoSuchMethod, message);
        };
        let handler = method.handler.clone();
        let now = Instant::now();
        if replies.direct && request.id != 0 {
            answer.served = Some((method.served.clone(), now));
        }
        if self.admitted.fetch_add(1, Ordering::AcqRel) >= self.max_admitted {
            self.admitted.fetch_sub(1, Ordering::AcqRel);
            let message = format!("service {} has {} requests waiting", self.name, self.max_admitted);
            return answer.error(ErrorCode::Overloaded, message);
        }
        let deadline = (request.id != 0).then(|| now + Duration::from_millis(u64::from(request.timeout_ms)));
        let traceparent = request.headers.get_raw(TRACEPARENT).and_then(|value| value.try_into().ok());
        answer.hops = crate::hops::Reporting::asked(&self.name, &request, traceparent.is_some());
        let hops = answer.hops.as_ref().map(|reporting| reporting.log());
        let inherited = crate::context::Inherited { deadline, traceparent, hops };
        let request = Request {
            method: request.method,
            payload: request.payload,
            headers: request.headers,
            caller: request.caller,
            instance: request.instance,
            deadline,
        };
        let mut guard = Admitted { state: self.clone(), answer: Some(answer) };
        // Fast path: with a slot free, poll the handler once right here. Most
        // handlers finish without waiting, and then the reply leaves without
        // a task hand-off (and without taking the slot: nothing else runs
        // meanwhile); the rest take a slot and continue on their own task.
        if self.slots.available_permits() > 0 {
            let mut future = handler(request);
            let mut cx = Context::from_waker(Waker::noop());
            let first_poll = || crate::context::sync_scope(inherited, || future.as_mut().poll(&mut cx));
            match catch_unwind(AssertUnwindSafe(first_poll)) {
                Ok(Poll::Ready(result)) => {
                    if let Some(mut answer) = guard.answer.take() {
                        answer.result(result);
                    }
                }
                // The guard answers "panicked" when it drops.
                Err(_) => {}
                // Spawned tasks are polled again at once, with a real waker.
                Ok(Poll::Pending) => {
                    // Taken at once, so the next request sees it gone; only a
                    // race with another thread can make this one wait.
                    let slot = self.slots.clone().try_acquire_owned().map_err(|_| self.slots.clone());
                    tokio::spawn(async move {
                        let _slot = match slot {
                            Ok(slot) => slot,
                            Err(slots) => match slots.acquire_owned().await {
                                Ok(slot) => slot,
                                Err(_) => return,
                            },
                        };
                        let result = crate::context::scope(inherited, future).await;
                        if let Some(mut answer) = guard.answer.take() {
                            answer.result(result);
                        }
                    });
                }
            }
            return;
        }
        tokio::spawn(async move {
            let mut guard = guard;
            let Ok(_slot) = guard.state.slots.clone().acquire_owned().await else {
                return;
            };
            let result = crate::context::scope(inherited, handler(request)).await;
            if let Some(mut answer) = guard.answer.take() {
                answer.result(result);
            }
        });
    }
}

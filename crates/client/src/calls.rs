//! Calls, notifications and broadcasts from the caller's side.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use switchboard_proto::{
    Broadcast, Call, Frame, Headers, InstanceId, MethodName, NameError, Notify, ServiceName, Target,
};
use tokio::sync::oneshot;

use crate::bus::{decode, encode, remaining_ms, DEFAULT_TIMEOUT};
use crate::connection::{lock, Link, Waiter, WireError};
use crate::direct::{self, Sent};
use crate::hops::HopsInFlight;
use crate::retry::RetryPolicy;
use crate::{Bus, CallError};

/// Options of one call, notification or broadcast.
#[derive(Debug, Clone)]
pub struct CallOptions {
    /// The answer (or an error) comes back within this time.
    pub timeout: Duration,
    /// Send to this instance instead of letting the daemon choose (calls).
    pub instance: Option<InstanceId>,
    /// Key/value headers the callee sees.
    pub headers: Headers,
    /// Try a call again after failures that allow it ([`RetryPolicy`]),
    /// within the same timeout.
    pub retry: Option<RetryPolicy>,
}

impl Default for CallOptions {
    fn default() -> Self {
        Self { timeout: DEFAULT_TIMEOUT, instance: None, headers: Headers::new(), retry: None }
    }
}

impl CallOptions {
    pub fn timeout(timeout: Duration) -> Self {
        Self { timeout, ..Self::default() }
    }

    /// Retries under `policy` (calls only).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }
}

/// What one attempt of a call needs of its options (the whole options
/// would make every call's future larger).
struct Once {
    timeout: Duration,
    instance: Option<InstanceId>,
    headers: Headers,
}

impl Once {
    fn of(options: CallOptions) -> Self {
        Self { timeout: options.timeout, instance: options.instance, headers: options.headers }
    }
}

/// A call's result, and how many attempts it took (1 without retries; 0
/// when none could be made).
#[derive(Debug)]
pub struct Attempted {
    pub result: Result<Bytes, CallError>,
    pub attempts: u32,
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

/// One instance's answer to a broadcast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceReply {
    pub instance: InstanceId,
    pub result: Result<Bytes, CallError>,
}

/// Every answer to a broadcast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BroadcastOutcome {
    /// One entry per instance the broadcast went to, in registration order.
    pub replies: Vec<InstanceReply>,
    /// True when every instance answered (or was reported gone) before the
    /// deadline; false when some entries are `Timeout`s filled in at it.
    pub complete: bool,
}

/// A broadcast being gathered by the connection task.
pub(crate) struct Gathering {
    instances: Option<Vec<InstanceId>>,
    replies: Vec<InstanceReply>,
    done: Option<oneshot::Sender<Result<(), WireError>>>,
}

impl Gathering {
    /// The daemon said which instances the broadcast went to.
    pub fn start(&mut self, instances: Vec<InstanceId>) -> bool {
        self.instances = Some(instances);
        self.finish_if_complete()
    }

    /// One instance answered; returns true once all have.
    pub fn result(&mut self, instance: InstanceId, result: Result<Bytes, CallError>) -> bool {
        self.replies.push(InstanceReply { instance, result });
        self.finish_if_complete()
    }

    /// The broadcast failed as a whole (no such service…).
    pub fn fail(&mut self, error: WireError) {
        if let Some(done) = self.done.take() {
            let _ = done.send(Err(error));
        }
    }

    fn finish_if_complete(&mut self) -> bool {
        let complete = self.instances.as_ref().is_some_and(|all| self.replies.len() >= all.len());
        if complete {
            if let Some(done) = self.done.take() {
                let _ = done.send(Ok(()));
            }
        }
        complete
    }
}

fn check_size(
    link: &Link,
    service: &ServiceName,
    method: &MethodName,
    headers: &Headers,
    payload: &Bytes,
) -> Result<(), CallError> {
    fits(link, call_size(service, method, headers, payload), payload)
}

/// The size of a `Call` frame (length prefix excluded).
fn call_size(service: &ServiceName, method: &MethodName, headers: &Headers, payload: &Bytes) -> usize {
    switchboard_proto::sizes::call_len(service, method, headers, payload.len())
}

/// Whether a frame of `size` bytes carrying `payload` bytes fits the
/// connection's maximum frame.
pub(crate) fn fits(link: &Link, size: usize, payload: &Bytes) -> Result<(), CallError> {
    if size > link.max_frame as usize && !crate::blobs::passes_as_blob(&link.outbox, payload) {
        return Err(CallError::PayloadTooLarge(format!(
            "payload of {} bytes does not fit the daemon's maximum frame of {} bytes",
            payload.len(),
            link.max_frame
        )));
    }
    Ok(())
}

impl Bus {
    /// Calls `target` with `payload` and waits up to [`DEFAULT_TIMEOUT`].
    pub async fn call(&self, target: impl IntoTarget, payload: impl Into<Bytes>) -> Result<Bytes, CallError> {
        self.call_with(target, payload, CallOptions::default()).await
    }

    /// Calls `target` with `payload` under `options`.
    pub async fn call_with(
        &self,
        target: impl IntoTarget,
        payload: impl Into<Bytes>,
        options: CallOptions,
    ) -> Result<Bytes, CallError> {
        if options.retry.is_some() {
            // Boxed: inline, the retry loop's state would make every call's
            // future (moved at least once per call) twice as large.
            return Box::pin(self.call_attempts(target, payload, options)).await.result;
        }
        self.call_once(target.into_target()?, payload.into(), Once::of(options)).await
    }

    /// A call under `options` that reports how many attempts it took: with
    /// a retry policy, it is tried again while the failure allows it, the
    /// service's retry budget has one, and the deadline leaves time for it.
    /// Every attempt carries the same trace context.
    pub async fn call_attempts(
        &self,
        target: impl IntoTarget,
        payload: impl Into<Bytes>,
        options: CallOptions,
    ) -> Attempted {
        let failed = |error: CallError| Attempted { result: Err(error), attempts: 0 };
        let target = match target.into_target() {
            Ok(target) => target,
            Err(err) => return failed(err.into()),
        };
        let (deadline, _) = match crate::deadline::effective(options.timeout) {
            Ok(effective) => effective,
            Err(left) => return failed(CallError::Timeout(left)),
        };
        let policy = options.retry.clone().unwrap_or_else(|| RetryPolicy::default().attempts(1));
        let payload = payload.into();
        let headers = crate::trace::outgoing(options.headers.clone());
        let budgets = &self.shared.retry_budgets;
        budgets.deposit(&target.service);
        let mut attempts = 1;
        loop {
            let timeout = deadline.saturating_duration_since(Instant::now());
            let once = Once { timeout, instance: options.instance, headers: headers.clone() };
            let result = self.call_once(target.clone(), payload.clone(), once).await;
            let Err(error) = &result else { return Attempted { result, attempts } };
            let wait = policy.backoff(attempts, crate::random::unit());
            let in_time = Instant::now() + wait < deadline;
            if !policy.allows(error, attempts) || !in_time || !budgets.withdraw(&target.service) {
                return Attempted { result, attempts };
            }
            tracing::debug!(%error, attempts, ?wait, "retrying {}.{}", target.service, target.method);
            tokio::time::sleep(wait).await;
            attempts += 1;
        }
    }

    /// One attempt of a call: through the service's circuit breaker (if
    /// on), with the trace context; a traced call's hop records gather in
    /// its log until the answer. One function, on purpose: every layer of
    /// `async fn` keeps its own copy of the arguments in the call's future,
    /// which is moved at least once per call.
    async fn call_once(&self, target: Target, payload: Bytes, once: Once) -> Result<Bytes, CallError> {
        let breakers = &self.shared.breakers;
        let in_flight =
            breakers.admit(&target.service)?.map(|a| breakers.in_flight(target.service.clone(), a));
        let Target { service, method } = target;
        let Once { timeout, instance, headers } = once;
        // (The length first: asking the link costs a lock, on every call.)
        let payload = if payload.len() < crate::blobs::AUTO_BLOB {
            payload
        } else {
            crate::blobs::outgoing(self.takes_blobs(), payload)
        };
        let (headers, hops) = crate::hops::outgoing(crate::trace::outgoing(headers));
        let hops = hops.map(|log| HopsInFlight::new(&self.shared.hop_sinks, log));
        let traced = |id| {
            if let Some(hops) = &hops {
                hops.register(id);
            }
        };
        let result = 'sent: {
            // Inside a handler the request's own deadline bounds this call.
            let (deadline, timeout) = match crate::deadline::effective(timeout) {
                Ok(effective) => effective,
                Err(left) => break 'sent Err(CallError::Timeout(left)),
            };
            let mut call = Call { id: 0, timeout_ms: 0, instance: 0, service, method, headers, payload };
            // A call that names its host goes where the daemon sends it.
            let named_host = call.headers.get(switchboard_proto::fleet::HOST_HEADER).is_some();
            let channel = if named_host { None } else { direct::channel_for(self, &call.service, instance) };
            if let Some(channel) = channel {
                let size = call_size(&call.service, &call.method, &call.headers, &call.payload);
                call.id = self.shared.next_id();
                traced(call.id);
                call.timeout_ms = remaining_ms(deadline);
                call.instance = channel.instance;
                match channel.call(call, size, deadline, timeout).await {
                    Sent::Answered(result) => break 'sent result,
                    Sent::NotSent(unsent) => call = unsent,
                }
            }
            let Call { service, method, headers, payload, .. } = call;
            let check = |link: &Link| check_size(link, &service, &method, &headers, &payload);
            let frame = |id, _: &Link| {
                traced(id);
                Frame::Call(Call {
                    id,
                    timeout_ms: remaining_ms(deadline),
                    instance: instance.unwrap_or(0),
                    service: service.clone(),
                    method: method.clone(),
                    headers: headers.clone(),
                    payload: payload.clone(),
                })
            };
            self.round_trip(deadline, timeout, true, check, frame, Waiter::Reply).await
        };
        if in_flight.is_some_and(|in_flight| in_flight.finish(&result)) {
            self.report_breakers();
        }
        result
    }

    /// Tells the daemon which breakers are open now (`switchboard ls
    /// --breakers` lists them), from a task of its own: the state is read
    /// when the report leaves, so the last report sent is the latest.
    fn report_breakers(&self) {
        let bus = self.clone();
        tokio::spawn(async move {
            let report = switchboard_proto::sys::encode(&bus.shared.breakers.report());
            let target = Target {
                service: ServiceName::parse(switchboard_proto::sys::DAEMON_SERVICE).ok()?,
                method: MethodName::parse(switchboard_proto::sys::DAEMON_REPORT_BREAKERS).ok()?,
            };
            if let Err(err) = bus.call_with(target, Bytes::from(report), CallOptions::default()).await {
                tracing::debug!("could not report circuit breakers to the daemon: {err}");
            }
            Some(())
        });
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

    /// Sends a one-way notification to one instance of `target` (no reply;
    /// an unknown target is dropped by the daemon).
    pub async fn notify(&self, target: impl IntoTarget, payload: impl Into<Bytes>) -> Result<(), CallError> {
        self.notify_with(target, payload, CallOptions::default(), false).await
    }

    /// Sends a one-way notification to every instance of `target`.
    pub async fn notify_all(
        &self,
        target: impl IntoTarget,
        payload: impl Into<Bytes>,
    ) -> Result<(), CallError> {
        self.notify_with(target, payload, CallOptions::default(), true).await
    }

    /// A notification with options; `all` sends it to every instance.
    pub async fn notify_with(
        &self,
        target: impl IntoTarget,
        payload: impl Into<Bytes>,
        options: CallOptions,
        all: bool,
    ) -> Result<(), CallError> {
        let Target { service, method } = target.into_target()?;
        let payload = payload.into();
        let deadline = Instant::now() + options.timeout;
        let options = CallOptions { headers: crate::trace::outgoing(options.headers), ..options };
        loop {
            let link = self.wait_link(deadline, options.timeout).await?;
            check_size(&link, &service, &method, &options.headers, &payload)?;
            // One-way traffic has no in-flight bound: wait for room instead.
            if link.outbox.is_congested() {
                link.outbox.wait_uncongested(options.timeout).await;
            }
            let frame = Frame::Notify(Notify {
                all,
                instance: options.instance.unwrap_or(0),
                service: service.clone(),
                method: method.clone(),
                headers: options.headers.clone(),
                payload: payload.clone(),
            });
            if link.outbox.push(&frame).is_ok() {
                return Ok(());
            }
            tokio::task::yield_now().await;
        }
    }

    /// Calls `target` on every instance registered now and gathers one
    /// answer per instance. Returns at the deadline at the latest; instances
    /// that had not answered then are reported as `Timeout`.
    pub async fn broadcast(
        &self,
        target: impl IntoTarget,
        payload: impl Into<Bytes>,
        options: CallOptions,
    ) -> Result<BroadcastOutcome, CallError> {
        let Target { service, method } = target.into_target()?;
        let payload = payload.into();
        let (deadline, timeout) = crate::deadline::effective(options.timeout).map_err(CallError::Timeout)?;
        let headers = crate::trace::outgoing(options.headers);
        let (done, finished) = oneshot::channel();
        let gathering =
            Arc::new(Mutex::new(Gathering { instances: None, replies: Vec::new(), done: Some(done) }));
        let check = |link: &Link| check_size(link, &service, &method, &headers, &payload);
        let frame = |id, _: &Link| {
            Frame::Broadcast(Broadcast {
                id,
                timeout_ms: remaining_ms(deadline),
                service: service.clone(),
                method: method.clone(),
                headers: headers.clone(),
                payload: payload.clone(),
            })
        };
        let waiter = Waiter::Broadcast(gathering.clone());
        let sent = self.send_request(deadline, timeout, true, check, frame, waiter).await?;
        let outcome = tokio::time::timeout_at(deadline.into(), finished).await;
        lock(&self.shared.waiters).remove(&sent.id);
        match outcome {
            Ok(Ok(Err((code, message)))) => return Err(CallError::from_wire(code, message, timeout)),
            Ok(Err(_)) => return Err(self.lost()),
            Ok(Ok(Ok(()))) | Err(_) => {}
        }
        let mut gathering = lock(&gathering);
        let Some(instances) = gathering.instances.take() else {
            return Err(CallError::Timeout(timeout));
        };
        let mut replies = std::mem::take(&mut gathering.replies);
        let complete = replies.len() >= instances.len();
        let ordered = instances
            .iter()
            .map(|instance| match replies.iter().position(|r| r.instance == *instance) {
                Some(at) => replies.swap_remove(at),
                None => InstanceReply { instance: *instance, result: Err(CallError::Timeout(timeout)) },
            })
            .collect();
        Ok(BroadcastOutcome { replies: ordered, complete })
    }

    /// Broadcasts a MessagePack-encoded `request` and decodes each reply.
    pub async fn broadcast_as<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        target: impl IntoTarget,
        request: &Req,
        options: CallOptions,
    ) -> Result<Vec<(InstanceId, Result<Resp, CallError>)>, CallError> {
        let outcome = self.broadcast(target, encode(request)?, options).await?;
        Ok(outcome
            .replies
            .into_iter()
            .map(|reply| (reply.instance, reply.result.and_then(|bytes| decode(&bytes))))
            .collect())
    }
}

//! Hop records of traced calls ([`switchboard_proto::hops`]): a traced call
//! ([`Bus::call_traced`], `switchboard call --trace`) gathers what each
//! handler along it saw; a handler serving a request that asks for hops
//! reports its own, and its callees', just before its answer.
//!
//! Nothing here runs for a call that did not ask: the context holds no log
//! and the sink map stays empty.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Instant;

use bytes::Bytes;
use switchboard_proto::hops::{from_headers, to_headers, HOPS_REQUEST};
use switchboard_proto::{Frame, Headers, InstanceId, MethodName, ServiceName};

use crate::calls::{CallOptions, IntoTarget};
use crate::connection::lock;
use crate::{Bus, CallError};

pub use switchboard_proto::hops::Hop;

/// A call's result and what every handler along it saw, nearest first
/// (depth 0: the service called; its callees follow it at depth 1, …).
#[derive(Debug)]
pub struct Traced {
    pub result: Result<Bytes, CallError>,
    pub hops: Vec<Hop>,
}

impl Bus {
    /// A call (with `options`, retries included) that also gathers the hop
    /// records of every handler along it that reports them — the Rust and
    /// Python clients do — with the deadline each saw and how long it took.
    pub async fn call_traced(
        &self,
        target: impl IntoTarget,
        payload: impl Into<Bytes>,
        options: CallOptions,
    ) -> Traced {
        let log = Open::new();
        let context = crate::context::Inherited { hops: Some(log.name), ..crate::context::current() };
        let result = crate::context::scope(context, self.call_with(target, payload, options)).await;
        Traced { result, hops: log.log.take() }
    }
}

/// Where the hop records of one traced call, or of the calls one traced
/// request's handler makes, gather.
#[derive(Debug, Default)]
pub(crate) struct HopLog(Mutex<Vec<Hop>>);

impl HopLog {
    pub fn take(&self) -> Vec<Hop> {
        std::mem::take(&mut *lock(&self.0))
    }
}

/// A hop log named by a number, so that the context every handler carries
/// ([`crate::context::Inherited`]) stays `Copy`: looked up only by the calls
/// a traced request makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct LogRef(NonZeroU32);

static LOGS: LazyLock<Mutex<HashMap<LogRef, Arc<HopLog>>>> = LazyLock::new(Mutex::default);
static NEXT_LOG: AtomicU32 = AtomicU32::new(1);

impl LogRef {
    pub fn get(self) -> Option<Arc<HopLog>> {
        lock(&LOGS).get(&self).cloned()
    }
}

/// A hop log, named while it lives.
pub(crate) struct Open {
    pub name: LogRef,
    pub log: Arc<HopLog>,
}

impl Open {
    pub fn new() -> Self {
        let log = Arc::new(HopLog::default());
        let mut logs = lock(&LOGS);
        loop {
            // Wraps after 4 billion logs: skip 0 and any still open.
            let Some(n) = NonZeroU32::new(NEXT_LOG.fetch_add(1, Ordering::Relaxed)) else { continue };
            if let std::collections::hash_map::Entry::Vacant(slot) = logs.entry(LogRef(n)) {
                slot.insert(log.clone());
                return Self { name: LogRef(n), log };
            }
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        lock(&LOGS).remove(&self.name);
    }
}

/// Traced calls in flight, by request id: where their `Hops` frames go.
#[derive(Default)]
pub(crate) struct HopSinks(Mutex<HashMap<u32, Arc<HopLog>>>);

impl HopSinks {
    pub fn register(&self, id: u32, log: &Arc<HopLog>) {
        lock(&self.0).insert(id, log.clone());
    }

    pub fn deliver(&self, id: u32, headers: &Headers) {
        if let Some(log) = lock(&self.0).get(&id) {
            lock(&log.0).extend(from_headers(headers));
        }
    }

    /// Forgets every id of a finished call (retries and reconnects may
    /// have sent it under several).
    pub fn forget(&self, log: &Arc<HopLog>) {
        lock(&self.0).retain(|_, held| !Arc::ptr_eq(held, log));
    }
}

/// The hop records of one call in flight: where its `Hops` frames go under
/// each id it is sent with, forgotten when the call ends or is dropped.
pub(crate) struct HopsInFlight<'a> {
    sinks: &'a HopSinks,
    log: Arc<HopLog>,
}

impl<'a> HopsInFlight<'a> {
    pub fn new(sinks: &'a HopSinks, log: Arc<HopLog>) -> Self {
        Self { sinks, log }
    }

    pub fn register(&self, id: u32) {
        self.sinks.register(id, &self.log);
    }
}

impl Drop for HopsInFlight<'_> {
    fn drop(&mut self) {
        self.sinks.forget(&self.log);
    }
}

/// `headers` for a call about to be sent, asking for hops when the current
/// context gathers them; and the log their records go to.
pub(crate) fn outgoing(headers: Headers) -> (Headers, Option<Arc<HopLog>>) {
    let Some(log) = crate::context::hops() else { return (headers, None) };
    if headers.get_raw(HOPS_REQUEST).is_some() {
        return (headers, Some(log));
    }
    (headers.with(HOPS_REQUEST, "1").unwrap_or(headers), Some(log))
}

/// A handler's own hop while it runs, reported with its answer.
pub(crate) struct Reporting {
    open: Open,
    service: ServiceName,
    method: MethodName,
    instance: InstanceId,
    deadline_ms: u32,
    started: Instant,
}

impl Reporting {
    /// Where the calls its handler makes put their records.
    pub fn log(&self) -> LogRef {
        self.open.name
    }

    /// For a call whose request asked for hops (notifications have no
    /// answer to report with). `traced`: whether the request carries a
    /// `traceparent` (found already): a request whose only header it is
    /// asks for nothing more, which spares most requests a second look
    /// through their headers. Inlined, so that is all most requests pay.
    #[inline]
    pub fn asked(
        service: &ServiceName,
        request: &switchboard_proto::Request,
        traced: bool,
    ) -> Option<Box<Self>> {
        let others = request.headers.len() - usize::from(traced);
        if request.id == 0 || others == 0 || request.headers.get_raw(HOPS_REQUEST).is_none() {
            return None;
        }
        Some(Self::start(service, request))
    }

    #[cold]
    fn start(service: &ServiceName, request: &switchboard_proto::Request) -> Box<Self> {
        Box::new(Self {
            open: Open::new(),
            service: service.clone(),
            method: request.method.clone(),
            instance: request.instance,
            deadline_ms: request.timeout_ms,
            started: Instant::now(),
        })
    }

    /// The `Hops` frame to send just before answer `id`: this hop, then
    /// the records its calls gathered, one level deeper.
    pub fn frame(&self, id: u32, outcome: &str) -> Frame {
        let own = Hop {
            depth: 0,
            service: self.service.to_string(),
            method: self.method.to_string(),
            instance: self.instance,
            deadline_ms: self.deadline_ms,
            took_us: u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX),
            outcome: outcome.to_owned(),
        };
        let hops = std::iter::once(own).chain(self.open.log.take().into_iter().map(Hop::deeper));
        // Every value is short and at most the header limit are kept: only
        // a malformed name could be refused, and then the hop goes unreported.
        Frame::Hops { id, headers: to_headers(hops).unwrap_or_default() }
    }
}

//! What a handler's outgoing calls inherit from the request it serves: its
//! deadline ([`crate::deadline`]), its trace context ([`crate::trace`]) and,
//! when its caller asked for them, where hop records go ([`crate::hops`]).
//!
//! One task-local value, set around the handler's first poll and around
//! its task; nothing else writes it.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use crate::hops::{HopLog, LogRef};

use switchboard_proto::trace::TraceParent;

/// The served request's context: its deadline, its `traceparent` as it
/// came (parsed only when a call made under it needs it; most requests make
/// none, and copying it costs no atomic operation, unlike its headers), and
/// where a traced call's hop records go (by number, to stay `Copy`).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Inherited {
    pub deadline: Option<Instant>,
    pub traceparent: Option<[u8; 55]>,
    pub hops: Option<LogRef>,
}

impl Inherited {
    pub fn trace(&self) -> Option<TraceParent> {
        std::str::from_utf8(self.traceparent.as_ref()?).ok().and_then(TraceParent::parse)
    }
}

tokio::task_local! {
    static INHERITED: Inherited;
}

/// Runs `future` with `inherited` as what its calls inherit.
pub(crate) fn scope<F: Future>(inherited: Inherited, future: F) -> impl Future<Output = F::Output> {
    INHERITED.scope(inherited, future)
}

/// Runs `f` (one poll of a handler) with `inherited`.
pub(crate) fn sync_scope<R>(inherited: Inherited, f: impl FnOnce() -> R) -> R {
    INHERITED.sync_scope(inherited, f)
}

/// The deadline of the request the current task serves, if any.
pub(crate) fn deadline() -> Option<Instant> {
    INHERITED.try_with(|inherited| inherited.deadline).ok().flatten()
}

/// The trace context of the request the current task serves, if any.
pub(crate) fn trace() -> Option<TraceParent> {
    INHERITED.try_with(|inherited| inherited.trace()).ok().flatten()
}

/// Where the hop records of calls made now go, if a traced call asked.
pub(crate) fn hops() -> Option<Arc<HopLog>> {
    INHERITED.try_with(|inherited| inherited.hops).ok().flatten().and_then(LogRef::get)
}

/// The whole context (for work handed to another task).
pub(crate) fn current() -> Inherited {
    INHERITED.try_with(|inherited| *inherited).unwrap_or_default()
}

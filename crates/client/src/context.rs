//! What a handler's outgoing calls inherit from the request it serves: its
//! deadline ([`crate::deadline`]) and its trace context ([`crate::trace`]).
//!
//! One task-local value, set around the handler's first poll and around
//! its task; nothing else writes it.

use std::future::Future;
use std::time::Instant;

use switchboard_proto::trace::{TraceParent, TRACEPARENT};
use switchboard_proto::Headers;

/// The served request's context: its deadline, and its headers, whose
/// `traceparent` is read only when a call made under it needs it (most
/// requests make none).
#[derive(Debug, Clone, Default)]
pub(crate) struct Inherited {
    pub deadline: Option<Instant>,
    pub headers: Headers,
}

impl Inherited {
    pub fn trace(&self) -> Option<TraceParent> {
        if self.headers.is_empty() {
            return None;
        }
        self.headers.get(TRACEPARENT).and_then(TraceParent::parse)
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
    INHERITED.try_with(Inherited::trace).ok().flatten()
}

/// The whole context (for work handed to another task).
pub(crate) fn current() -> Inherited {
    INHERITED.try_with(Inherited::clone).unwrap_or_default()
}

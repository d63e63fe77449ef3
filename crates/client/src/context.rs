//! What a handler's outgoing calls inherit from the request it serves: its
//! deadline ([`crate::deadline`]) and its trace context ([`crate::trace`]).
//!
//! One task-local value, set around the handler's first poll and around
//! its task; nothing else writes it.

use std::future::Future;
use std::time::Instant;

use switchboard_proto::trace::TraceParent;

/// The served request's context.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Inherited {
    pub deadline: Option<Instant>,
    pub trace: Option<TraceParent>,
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

/// The context of the request the current task serves (empty outside one).
pub(crate) fn current() -> Inherited {
    INHERITED.try_with(|inherited| *inherited).unwrap_or_default()
}

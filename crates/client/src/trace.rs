//! Trace context that travels: every call, notification, broadcast,
//! publication and queue message carries a W3C `traceparent` header. Made
//! while serving a request, it continues that request's trace (same trace
//! id, a new span id); made anywhere else, it starts a new trace. A header
//! the caller set itself is left as it is.
//!
//! Handlers read theirs with [`current`] (or `Request::trace`), and
//! `service::log` records its trace id, so one id follows a chain of calls
//! through every service and its logs.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU8, Ordering};

use bytes::BytesMut;
use switchboard_proto::Headers;

use crate::random::random;

pub use switchboard_proto::trace::{TraceParent, TRACEPARENT};

/// The trace context of the request the current task serves, if any.
pub fn current() -> Option<TraceParent> {
    crate::context::trace()
}

/// A new trace, for a caller that wants to know its id before it sends
/// (put it in the call's headers as [`TRACEPARENT`]).
pub fn start() -> TraceParent {
    TraceParent::root(u128::from(random()) << 64 | u128::from(random()), random())
}

/// Whether this process adds trace context to what it sends: on unless
/// `SWITCHBOARD_TRACE=0` (read once) or [`set_enabled`]`(false)`. Off saves
/// the ≈ 70 bytes and the id making per message that a caller doing
/// hundreds of thousands of calls a second pays (docs/PERFORMANCE.md); a
/// `traceparent` set by the caller still travels, and handlers still
/// continue the traces of requests that carry one.
pub fn enabled() -> bool {
    match ENABLED.load(Ordering::Relaxed) {
        UNSET => {
            let on = std::env::var_os("SWITCHBOARD_TRACE").is_none_or(|v| v != "0");
            ENABLED.store(if on { ON } else { OFF }, Ordering::Relaxed);
            on
        }
        state => state == ON,
    }
}

/// Turns adding trace context on or off for this whole process.
pub fn set_enabled(on: bool) {
    ENABLED.store(if on { ON } else { OFF }, Ordering::Relaxed);
}

const UNSET: u8 = 0;
const ON: u8 = 1;
const OFF: u8 = 2;
static ENABLED: AtomicU8 = AtomicU8::new(UNSET);

/// `headers` with the `traceparent` an outgoing message should carry.
pub(crate) fn outgoing(headers: Headers) -> Headers {
    if !headers.is_empty() && headers.get_raw(TRACEPARENT).is_some() {
        return headers;
    }
    let next = match current() {
        Some(parent) => parent.child(random()),
        None if !enabled() => return headers,
        None => start(),
    };
    let value = next.encode();
    let Ok(value) = std::str::from_utf8(&value) else { return headers };
    ARENA.with(|arena| {
        let mut arena = arena.borrow_mut();
        if arena.capacity() < 128 {
            // Blocks for many messages in one allocation.
            *arena = BytesMut::with_capacity(8192);
        }
        // Only a header block already at its limit refuses one more pair;
        // the message then goes without (the daemon would refuse nothing else).
        headers.with_in(TRACEPARENT, value, &mut arena).unwrap_or(headers)
    })
}

thread_local! {
    /// Where this thread's traceparent header blocks are written.
    static ARENA: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_a_request_each_message_starts_a_trace_and_a_set_header_is_kept() {
        let first = outgoing(Headers::new());
        let second = outgoing(Headers::new());
        let parse = |h: &Headers| TraceParent::parse(h.get(TRACEPARENT).unwrap()).unwrap();
        assert_ne!(parse(&first).trace_id, parse(&second).trace_id);
        let own = Headers::from_pairs([("lang", "fr"), (TRACEPARENT, "mine")]).unwrap();
        assert_eq!(outgoing(own.clone()), own);
        let other = outgoing(Headers::from_pairs([("lang", "fr")]).unwrap());
        assert_eq!(other.get("lang"), Some("fr"));
        assert!(other.get(TRACEPARENT).is_some());
    }

    #[tokio::test]
    async fn inside_a_request_the_trace_continues_with_a_new_span() {
        let parent = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        let inherited =
            crate::context::Inherited { deadline: None, traceparent: Some(parent.encode()), hops: None };
        let child = crate::context::scope(inherited, async { outgoing(Headers::new()) }).await;
        let child = TraceParent::parse(child.get(TRACEPARENT).unwrap()).unwrap();
        assert_eq!(child.trace_id, parent.trace_id);
        assert_ne!(child.parent_id, parent.parent_id);
        assert_eq!(current(), None, "nothing is inherited outside the scope");
    }
}

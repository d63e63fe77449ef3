//! Deadlines that travel: a handler's outgoing calls inherit what is left
//! of the deadline of the request it serves.
//!
//! While a handler runs, the request's deadline is a task-local value.
//! A call made under it gets the sooner of its own timeout and that deadline
//! minus [`MARGIN`] (the time the answer needs to travel back); a call whose
//! inherited deadline has already passed fails at once with `Timeout`,
//! without being sent. An explicit timeout can only shorten the deadline.

use std::time::{Duration, Instant};

/// Kept back from an inherited deadline so the answer can still reach the
/// caller that set it.
pub const MARGIN: Duration = Duration::from_millis(5);

/// The deadline of the request the current task serves, if any.
pub fn inherited() -> Option<Instant> {
    crate::context::deadline()
}

/// The deadline and timeout of a call made now with `timeout` of its own:
/// `Err` with the time that was left (zero) when the inherited deadline has
/// passed and the call must not be sent.
pub(crate) fn effective(timeout: Duration) -> Result<(Instant, Duration), Duration> {
    let now = Instant::now();
    let own = now + timeout;
    match inherited().map(|deadline| deadline.checked_sub(MARGIN).unwrap_or(deadline)) {
        Some(inherited) if inherited <= now => Err(Duration::ZERO),
        Some(inherited) if inherited < own => Ok((inherited, inherited - now)),
        _ => Ok((own, timeout)),
    }
}

//! Calls routed to a callee and not yet answered.
//!
//! The daemon gives each forwarded call its own id, so callers' ids never
//! collide at a callee; this table maps it back to the caller's id.

use std::collections::HashMap;
use std::time::Instant;

use switchboard_proto::{InstanceId, SessionId};

use super::stats::Slot;

/// What a call is counted under in the router's statistics, and since when.
#[derive(Debug, Clone, Copy)]
pub struct CountedAs {
    pub slot: Slot,
    pub started: Instant,
}

/// One call awaiting its reply.
#[derive(Debug, Clone, Copy)]
pub struct PendingCall {
    pub caller: SessionId,
    pub caller_id: u32,
    pub instance: InstanceId,
    pub deadline: Instant,
    /// Part of a broadcast: `caller_id` names the broadcast, and the answer
    /// goes back as a `BroadcastResult`.
    pub broadcast: bool,
    /// `None` for the daemon's own requests (a direct channel's grant).
    pub counted: Option<CountedAs>,
}

#[derive(Debug, Default)]
pub struct Pending {
    calls: HashMap<u32, PendingCall>,
    next_id: u32,
}

impl Pending {
    /// Records a call and returns the id the callee will see (never 0).
    pub fn insert(&mut self, call: PendingCall) -> u32 {
        loop {
            self.next_id = self.next_id.wrapping_add(1);
            if self.next_id != 0 && !self.calls.contains_key(&self.next_id) {
                break;
            }
        }
        self.calls.insert(self.next_id, call);
        self.next_id
    }

    pub fn get(&self, id: u32) -> Option<&PendingCall> {
        self.calls.get(&id)
    }

    pub fn remove(&mut self, id: u32) -> Option<PendingCall> {
        self.calls.remove(&id)
    }

    /// Removes and returns every call matching `pred`.
    pub fn drain_where(&mut self, pred: impl Fn(&PendingCall) -> bool) -> Vec<PendingCall> {
        let ids: Vec<u32> = self.calls.iter().filter(|(_, c)| pred(c)).map(|(id, _)| *id).collect();
        ids.into_iter().filter_map(|id| self.calls.remove(&id)).collect()
    }

    pub fn len(&self) -> usize {
        self.calls.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(caller: SessionId) -> PendingCall {
        PendingCall {
            caller,
            caller_id: 1,
            instance: 1,
            deadline: Instant::now(),
            broadcast: false,
            counted: None,
        }
    }

    #[test]
    fn ids_are_unique_and_never_zero() {
        let mut pending = Pending { next_id: u32::MAX - 1, ..Default::default() };
        let a = pending.insert(call(1));
        let b = pending.insert(call(1));
        assert_eq!((a, b), (u32::MAX, 1));
    }

    #[test]
    fn drain_where_takes_only_matches() {
        let mut pending = Pending::default();
        pending.insert(call(1));
        pending.insert(call(2));
        pending.insert(call(1));
        assert_eq!(pending.drain_where(|c| c.caller == 1).len(), 2);
        assert_eq!(pending.len(), 1);
    }
}

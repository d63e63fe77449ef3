//! Room for connections that have not finished their handshake.
//!
//! Until a connection has said `Hello` and been authenticated it is nobody,
//! so it must not take the places of those who are somebody: pending
//! handshakes have their own budget, a total and a share per peer (its uid
//! on a Unix socket, known from the kernel at accept; its address on TCP).
//! The daemon's own apps never pass here (they are hosted sessions, see
//! `crate::host`). The connection limit proper
//! is taken only once the handshake is done. A flood of idle connections
//! from one uid or address then locks out only that uid or address.
//!
//! Owns the counting only; the accept loop refuses what does not fit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Whom a pending connection is counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerKey {
    /// A local process of this uid.
    Uid(u32),
    /// A remote peer at this address.
    Addr(IpAddr),
}

impl std::fmt::Display for PeerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Uid(uid) => write!(f, "uid {uid}"),
            Self::Addr(addr) => write!(f, "{addr}"),
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    by_peer: HashMap<PeerKey, usize>,
    total: usize,
}

/// The budget, shared by every accept loop.
#[derive(Debug)]
pub struct HandshakeBudget {
    counts: Mutex<Counts>,
    per_peer: usize,
    total: usize,
}

/// A pending handshake's place; given back when dropped.
#[derive(Debug)]
pub struct HandshakeSlot {
    budget: Arc<HandshakeBudget>,
    key: PeerKey,
}

impl HandshakeBudget {
    pub fn new(per_peer: usize, total: usize) -> Arc<Self> {
        Arc::new(Self { counts: Mutex::default(), per_peer, total })
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        // Every update is one increment or decrement: a panic elsewhere
        // cannot leave the counts half-changed.
        self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes a place for a pending handshake of `key`, or says why not.
    pub fn try_enter(self: &Arc<Self>, key: PeerKey) -> Result<HandshakeSlot, String> {
        let mut counts = self.counts();
        let mine = counts.by_peer.get(&key).copied().unwrap_or(0);
        if mine >= self.per_peer {
            return Err(format!("{key} already has {mine} connections in their handshake (the limit)"));
        }
        if counts.total >= self.total {
            return Err(format!("{} connections are in their handshake (the limit)", counts.total));
        }
        *counts.by_peer.entry(key).or_default() += 1;
        counts.total += 1;
        Ok(HandshakeSlot { budget: self.clone(), key })
    }

    /// Pending handshakes now (for tests and diagnostics).
    pub fn pending(&self) -> usize {
        self.counts().total
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        let mut counts = self.budget.counts();
        counts.total = counts.total.saturating_sub(1);
        if let Some(mine) = counts.by_peer.get_mut(&self.key) {
            *mine -= 1;
            if *mine == 0 {
                counts.by_peer.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_peer_has_its_share_and_all_share_the_total() {
        let budget = HandshakeBudget::new(2, 3);
        let a1 = budget.try_enter(PeerKey::Uid(1)).unwrap();
        let _a2 = budget.try_enter(PeerKey::Uid(1)).unwrap();
        assert!(budget.try_enter(PeerKey::Uid(1)).unwrap_err().contains("uid 1 already has 2"));
        let _b1 = budget.try_enter(PeerKey::Uid(2)).unwrap();
        assert!(budget.try_enter(PeerKey::Uid(3)).unwrap_err().contains("3 connections"));
        assert_eq!(budget.pending(), 3);
        drop(a1);
        assert!(budget.try_enter(PeerKey::Uid(1)).is_ok());
    }

    #[test]
    fn a_slot_given_back_frees_its_peer() {
        let budget = HandshakeBudget::new(1, 10);
        let addr = PeerKey::Addr("127.0.0.1".parse().unwrap());
        drop(budget.try_enter(addr).unwrap());
        assert_eq!(budget.pending(), 0);
        assert!(budget.try_enter(addr).is_ok());
    }
}

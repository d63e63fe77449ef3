//! A fast per-thread random source for ids and jitter: trace and span ids
//! must be unique and retry waits spread out, neither needs to be secret.

use std::cell::Cell;

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

/// A seed from the OS, so sequences differ across processes and threads.
fn seed() -> u64 {
    let mut bytes = [0u8; 8];
    let filled = rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty()).unwrap_or(0);
    if filled == bytes.len() {
        u64::from_le_bytes(bytes) | 1
    } else {
        // No entropy to be had: still unique per thread and instant.
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        (now.as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(32)) | 1
    }
}

/// A random 64-bit number (xorshift64*).
pub(crate) fn random() -> u64 {
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

/// A random number in [0, 1).
pub(crate) fn unit() -> f64 {
    (random() >> 11) as f64 / (1u64 << 53) as f64
}

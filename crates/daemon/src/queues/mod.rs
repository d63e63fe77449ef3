//! Durable queues: store-and-forward that survives crashes.
//!
//! `record` is the on-disk format, `store` the segment log with group
//! commit, `queue` one queue's state machine (pure), and this module the
//! manager that ties them to sessions.

pub mod index;
pub mod queue;
pub mod record;
pub mod store;
pub mod writer;

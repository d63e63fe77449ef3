//! Direct channels: a caller's calls to one instance on their own socket,
//! past the daemon, once the daemon has granted it.
//!
//! The grant is a call like any other, so it is checked, routed and answered
//! by the usual machinery:
//!
//! 1. The caller calls `$sys.daemon.direct` with a [`DirectRequest`].
//! 2. The daemon checks that the caller may call *every* method the chosen
//!    instance serves, that the service is running, and that neither end
//!    needs the daemon on the path (rate limits, TLS); then it forwards the
//!    call to that instance as method [`GRANT_METHOD`] with a [`DirectGrant`]
//!    (a fresh ticket, the instance's pid and uid) and the caller's verified
//!    [`Caller`](crate::Caller) as the request's caller.
//! 3. The instance listens (on an abstract Unix socket), remembers the
//!    ticket for that caller, and answers with the grant plus its `address`.
//! 4. The caller connects there and sends `Hello` with credential
//!    `ticket:HEX`. The instance accepts it only from the caller's own pid
//!    and uid (peer credentials) and only once; the caller accepts the
//!    socket only if its peer is the instance's pid and uid.
//! 5. On it, `Call` frames go in and `Reply`/`Error` frames come back, as
//!    with the daemon. Either end may end the channel with `Goodbye`.
//!
//! The daemon withdraws a grant with a `Revoke` frame to both ends when the
//! service is paused or fails, the policy changes what the caller may call,
//! or either end leaves.

use serde::{Deserialize, Serialize};

/// `$sys.daemon.direct`: [`DirectRequest`]; answered with a [`DirectGrant`].
pub const DAEMON_DIRECT: &str = "direct";
/// The method the daemon forwards a grant to the instance as.
pub const GRANT_METHOD: &str = "__direct";
/// Prefix of the credential a caller presents on a direct channel.
pub const TICKET_PREFIX: &str = "ticket:";

/// Argument of `$sys.daemon.direct`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectRequest {
    pub service: String,
    /// A chosen instance, or 0 for the daemon's choice.
    #[serde(default)]
    pub instance: u64,
}

/// A granted direct channel. The daemon fills every field but `address`,
/// which the instance adds in its answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectGrant {
    /// Names the grant in `Revoke` frames.
    pub grant: u64,
    /// One-time secret the caller presents (hex).
    pub ticket: String,
    pub service: String,
    pub instance: u64,
    /// The instance's process, as the daemon's peer credentials saw it:
    /// the caller connects only to a socket whose peer is this process.
    pub pid: u32,
    pub uid: u32,
    /// Where the instance listens: an abstract Unix socket name (no leading NUL).
    #[serde(default)]
    pub address: String,
    /// The largest blob the caller may send on the channel, and the
    /// instance in its replies (their principals' `max_blob`; the daemon
    /// is not on the path to check). 0: no blobs on this channel.
    #[serde(default)]
    pub caller_max_blob: u64,
    #[serde(default)]
    pub instance_max_blob: u64,
}

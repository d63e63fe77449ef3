//! Who sent a request or a message, as the daemon verified it: the
//! [`Caller`] every request and message carries, and its principal's name.

use bytes::Bytes;

use crate::SessionId;

/// Who sent a request or a message, as the daemon verified it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Caller {
    pub session: SessionId,
    /// OS user id from the socket's peer credentials (`u32::MAX` if unknown).
    pub uid: u32,
    /// OS process id from the socket's peer credentials (0 if unknown).
    pub pid: u32,
    /// The verified principal: `user:alice`, `service:billing#2`,
    /// `cert:edge-1`, `token:deploy`.
    pub principal: PrincipalName,
}

/// The longest principal name the wire carries, in bytes (one length byte).
/// The daemon refuses a connection whose principal would be longer rather
/// than cut it.
pub const MAX_PRINCIPAL_NAME: usize = 255;

/// A principal's name as the daemon verified it (UTF-8; shared, not copied).
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct PrincipalName(Bytes);

impl PrincipalName {
    pub fn new(name: &str) -> Self {
        Self(Bytes::copy_from_slice(name.as_bytes()))
    }

    /// From bytes already checked to be UTF-8.
    pub(crate) fn from_utf8(bytes: Bytes) -> Option<Self> {
        std::str::from_utf8(&bytes).is_ok().then_some(Self(bytes))
    }

    pub fn as_str(&self) -> &str {
        // Only constructed from `&str` or checked UTF-8.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Display for PrincipalName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

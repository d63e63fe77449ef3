//! The errors a client can meet, one enum per operation, each a variant a
//! caller can match.

use std::time::Duration;

use switchboard_proto::{ErrorCode, NameError};
use switchboard_transport::{Endpoint, EndpointError};

/// Why [`crate::Bus::connect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    #[error("no switchboard daemon at {endpoint}: {source} (is `switchboard up` running?)")]
    Unreachable { endpoint: Endpoint, source: std::io::Error },
    #[error("handshake with {endpoint} failed: {why}")]
    Handshake { endpoint: Endpoint, why: String },
    #[error("the daemon at {endpoint} refused the connection ({}): {message}", code.name())]
    Refused { endpoint: Endpoint, code: ErrorCode, message: String },
    /// The socket is served by a process of another user: no credential
    /// (instance secret, token) is sent to it.
    #[error(
        "not sending credentials to {endpoint}: it is served by uid {uid}, not by you, root or \
         SWITCHBOARD_DAEMON_UID (set that to the daemon's uid if it really runs as another user)"
    )]
    UntrustedDaemon { endpoint: Endpoint, uid: u32 },
}

/// Why a call (or any request answered by the daemon) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("no such service: {0}")]
    NoSuchService(String),
    #[error("no such method: {0}")]
    NoSuchMethod(String),
    #[error("no such instance: {0}")]
    NoSuchInstance(String),
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error("instance gone: {0}")]
    InstanceGone(String),
    #[error("payload too large: {0}")]
    PayloadTooLarge(String),
    #[error("rejected by the callee: {0}")]
    Rejected(String),
    #[error("the daemon is shutting down")]
    ShuttingDown,
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    #[error("overloaded: {0}")]
    Overloaded(String),
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("arguments do not fit the contract: {0}")]
    BadArguments(String),
    #[error("queue full: {0}")]
    QueueFull(String),
    #[error("no such queue: {0}")]
    NoSuchQueue(String),
    #[error("stale delivery: {0}")]
    StaleDelivery(String),
    #[error("storage failed: {0}")]
    StorageFailed(String),
    #[error("service paused: {0}")]
    ServicePaused(String),
    #[error("service failed: {0}")]
    ServiceFailed(String),
    #[error("invalid transition: {0}")]
    InvalidTransition(String),
    #[error("no such region: {0}")]
    NoSuchRegion(String),
    #[error("invalid target: {0}")]
    InvalidTarget(#[from] NameError),
    #[error("the connection to the daemon was lost before the reply came")]
    ConnectionLost,
    /// Not sent: this process's circuit breaker for the service is open.
    #[error("circuit open: {0}")]
    CircuitOpen(String),
    #[error("the bus handle was closed")]
    Closed,
    #[error("could not encode the request: {0}")]
    Encode(String),
    #[error("could not decode the reply: {0}")]
    Decode(String),
    #[error("daemon error {}: {message}", code.name())]
    Other { code: ErrorCode, message: String },
}

impl CallError {
    /// Maps an `Error` frame to the variant a caller matches on.
    pub fn from_wire(code: ErrorCode, message: String, timeout: Duration) -> Self {
        match code {
            ErrorCode::NoSuchService => Self::NoSuchService(message),
            ErrorCode::NoSuchMethod => Self::NoSuchMethod(message),
            ErrorCode::NoSuchInstance => Self::NoSuchInstance(message),
            ErrorCode::Timeout => Self::Timeout(timeout),
            ErrorCode::InstanceGone => Self::InstanceGone(message),
            ErrorCode::PayloadTooLarge => Self::PayloadTooLarge(message),
            ErrorCode::Rejected => Self::Rejected(message),
            ErrorCode::ShuttingDown => Self::ShuttingDown,
            ErrorCode::PermissionDenied => Self::PermissionDenied(message),
            ErrorCode::Overloaded => Self::Overloaded(message),
            ErrorCode::BadRequest => Self::BadRequest(message),
            ErrorCode::BadArguments => Self::BadArguments(message),
            ErrorCode::QueueFull => Self::QueueFull(message),
            ErrorCode::NoSuchQueue => Self::NoSuchQueue(message),
            ErrorCode::StaleDelivery => Self::StaleDelivery(message),
            ErrorCode::StorageFailed => Self::StorageFailed(message),
            ErrorCode::ServicePaused => Self::ServicePaused(message),
            ErrorCode::ServiceFailed => Self::ServiceFailed(message),
            ErrorCode::InvalidTransition => Self::InvalidTransition(message),
            ErrorCode::NoSuchRegion => Self::NoSuchRegion(message),
            code => Self::Other { code, message },
        }
    }

    /// The daemon's error code this error stands for, if it came from one.
    pub fn code(&self) -> Option<ErrorCode> {
        Some(match self {
            Self::NoSuchService(_) => ErrorCode::NoSuchService,
            Self::NoSuchMethod(_) => ErrorCode::NoSuchMethod,
            Self::NoSuchInstance(_) => ErrorCode::NoSuchInstance,
            Self::Timeout(_) => ErrorCode::Timeout,
            Self::InstanceGone(_) => ErrorCode::InstanceGone,
            Self::PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
            Self::Rejected(_) => ErrorCode::Rejected,
            Self::ShuttingDown => ErrorCode::ShuttingDown,
            Self::PermissionDenied(_) => ErrorCode::PermissionDenied,
            Self::Overloaded(_) => ErrorCode::Overloaded,
            Self::BadRequest(_) => ErrorCode::BadRequest,
            Self::BadArguments(_) => ErrorCode::BadArguments,
            Self::QueueFull(_) => ErrorCode::QueueFull,
            Self::NoSuchQueue(_) => ErrorCode::NoSuchQueue,
            Self::StaleDelivery(_) => ErrorCode::StaleDelivery,
            Self::StorageFailed(_) => ErrorCode::StorageFailed,
            Self::ServicePaused(_) => ErrorCode::ServicePaused,
            Self::ServiceFailed(_) => ErrorCode::ServiceFailed,
            Self::InvalidTransition(_) => ErrorCode::InvalidTransition,
            Self::NoSuchRegion(_) => ErrorCode::NoSuchRegion,
            Self::Other { code, .. } => *code,
            Self::InvalidTarget(_)
            | Self::ConnectionLost
            | Self::CircuitOpen(_)
            | Self::Closed
            | Self::Encode(_)
            | Self::Decode(_) => return None,
        })
    }

    /// What the daemon (or the callee) said, without the kind in front of
    /// it (for passing the error on: a bridge, a gateway).
    pub fn message(&self) -> String {
        match self {
            Self::NoSuchService(m)
            | Self::NoSuchMethod(m)
            | Self::NoSuchInstance(m)
            | Self::InstanceGone(m)
            | Self::PayloadTooLarge(m)
            | Self::Rejected(m)
            | Self::PermissionDenied(m)
            | Self::Overloaded(m)
            | Self::BadRequest(m)
            | Self::BadArguments(m)
            | Self::QueueFull(m)
            | Self::NoSuchQueue(m)
            | Self::StaleDelivery(m)
            | Self::StorageFailed(m)
            | Self::ServicePaused(m)
            | Self::ServiceFailed(m)
            | Self::InvalidTransition(m)
            | Self::NoSuchRegion(m)
            | Self::Other { message: m, .. } => m.clone(),
            other => other.to_string(),
        }
    }

    /// The stable short name of the error kind (`"timeout"`, `"instance_gone"`…),
    /// as the CLI prints it in `--json` output: the daemon's code's name
    /// ([`ErrorCode::name`]), or what went wrong on this side.
    pub fn kind(&self) -> &'static str {
        match (self.code(), self) {
            (Some(code), _) => code.name(),
            (None, Self::InvalidTarget(_)) => "invalid_target",
            (None, Self::ConnectionLost) => "connection_lost",
            (None, Self::CircuitOpen(_)) => "circuit_open",
            (None, Self::Closed) => "closed",
            (None, Self::Encode(_)) => "encode",
            (None, _) => "decode",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_daemon_code_maps_to_a_variant_and_back_with_its_name() {
        for code in ErrorCode::ALL.iter().copied().filter(|c| {
            // Session-level codes end a connection; they never answer a call.
            !matches!(c, ErrorCode::UnsupportedVersion | ErrorCode::ProtocolViolation)
        }) {
            let err = CallError::from_wire(code, "why".into(), Duration::from_secs(1));
            assert_eq!(err.code(), Some(code), "{code:?}");
            assert_eq!(err.kind(), code.name());
        }
    }
}

/// Why registering a service failed.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error(transparent)]
    InvalidName(#[from] NameError),
    #[error("service {0} declares no methods")]
    NoMethods(String),
    #[error("cannot consume the queue of a queued method: {0}")]
    Queue(CallError),
    #[error("the daemon refused the registration: {0}")]
    Refused(CallError),
}

/// What a handler returns to refuse a request; the caller receives
/// [`CallError::Rejected`] with this message (or [`CallError::BadArguments`]
/// for [`Reject::bad_arguments`], or the error of [`Reject::with_code`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Reject {
    pub message: String,
    /// The error code the caller receives.
    pub code: ErrorCode,
}

impl Reject {
    pub fn new(message: impl Into<String>) -> Self {
        Self::with_code(ErrorCode::Rejected, message)
    }

    /// The arguments did not fit (a contract mismatch).
    pub fn bad_arguments(message: impl Into<String>) -> Self {
        Self::with_code(ErrorCode::BadArguments, message)
    }

    /// Refuses with a specific error code (a service that fronts others,
    /// like the daemon's own `$sys.services`, passes their errors on).
    pub fn with_code(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { message: message.into(), code }
    }
}

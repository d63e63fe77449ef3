//! The error codes that travel in `Error` and `Goodbye` frames.
//!
//! Codes are stable wire values; clients map them to their own typed errors.
//! An unknown code decodes as [`ErrorCode::Other`] so old clients keep working
//! when a newer daemon adds one.

/// Why a call, a control request or a whole session failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// No instance of that service is registered.
    NoSuchService,
    /// The service exists but no instance of it serves that method.
    NoSuchMethod,
    /// The deadline passed before a reply came back.
    Timeout,
    /// The instance handling the call disconnected or crashed mid-call.
    InstanceGone,
    /// A frame or payload exceeds the negotiated maximum size.
    PayloadTooLarge,
    /// The callee refused the call; the message says why.
    Rejected,
    /// The daemon is shutting down.
    ShuttingDown,
    /// The caller is not allowed to do this.
    PermissionDenied,
    /// The request was malformed (bad name, bad field, reserved name).
    BadRequest,
    /// A limit was reached (too many calls in flight, instance at capacity).
    Overloaded,
    /// The chosen instance id does not exist (or is not of that service).
    NoSuchInstance,
    /// The peer speaks another protocol version.
    UnsupportedVersion,
    /// The connection broke the protocol (garbage, bad frame order).
    ProtocolViolation,
    /// The arguments do not fit the callee's contract; the message names
    /// the method and the argument.
    BadArguments,
    /// The queue is at its limit and refuses new messages.
    QueueFull,
    /// No queue of that name (and first use may not create one).
    NoSuchQueue,
    /// The delivery tag is unknown or no longer valid (already acked,
    /// returned to the queue, or its consumer is gone).
    StaleDelivery,
    /// The queue store failed to write; nothing was confirmed.
    StorageFailed,
    /// The supervised service is paused; continue it first.
    ServicePaused,
    /// The supervised service failed and its restart policy gave up.
    ServiceFailed,
    /// The control is not valid for the service in its current state (or
    /// the service does not accept it).
    InvalidTransition,
    /// A code this version does not know.
    Other(u16),
}

impl ErrorCode {
    /// The wire value.
    pub fn to_u16(self) -> u16 {
        match self {
            Self::NoSuchService => 1,
            Self::NoSuchMethod => 2,
            Self::Timeout => 3,
            Self::InstanceGone => 4,
            Self::PayloadTooLarge => 5,
            Self::Rejected => 6,
            Self::ShuttingDown => 7,
            Self::PermissionDenied => 8,
            Self::BadRequest => 9,
            Self::Overloaded => 10,
            Self::NoSuchInstance => 11,
            Self::UnsupportedVersion => 12,
            Self::ProtocolViolation => 13,
            Self::BadArguments => 14,
            Self::QueueFull => 15,
            Self::NoSuchQueue => 16,
            Self::StaleDelivery => 17,
            Self::StorageFailed => 18,
            Self::ServicePaused => 19,
            Self::ServiceFailed => 20,
            Self::InvalidTransition => 21,
            Self::Other(code) => code,
        }
    }

    /// Parses a wire value; never fails.
    pub fn from_u16(code: u16) -> Self {
        match code {
            1 => Self::NoSuchService,
            2 => Self::NoSuchMethod,
            3 => Self::Timeout,
            4 => Self::InstanceGone,
            5 => Self::PayloadTooLarge,
            6 => Self::Rejected,
            7 => Self::ShuttingDown,
            8 => Self::PermissionDenied,
            9 => Self::BadRequest,
            10 => Self::Overloaded,
            11 => Self::NoSuchInstance,
            12 => Self::UnsupportedVersion,
            13 => Self::ProtocolViolation,
            14 => Self::BadArguments,
            15 => Self::QueueFull,
            16 => Self::NoSuchQueue,
            17 => Self::StaleDelivery,
            18 => Self::StorageFailed,
            19 => Self::ServicePaused,
            20 => Self::ServiceFailed,
            21 => Self::InvalidTransition,
            other => Self::Other(other),
        }
    }

    /// A short stable name, used in logs and the CLI's JSON output.
    pub fn name(self) -> &'static str {
        match self {
            Self::NoSuchService => "no_such_service",
            Self::NoSuchMethod => "no_such_method",
            Self::Timeout => "timeout",
            Self::InstanceGone => "instance_gone",
            Self::PayloadTooLarge => "payload_too_large",
            Self::Rejected => "rejected",
            Self::ShuttingDown => "shutting_down",
            Self::PermissionDenied => "permission_denied",
            Self::BadRequest => "bad_request",
            Self::Overloaded => "overloaded",
            Self::NoSuchInstance => "no_such_instance",
            Self::UnsupportedVersion => "unsupported_version",
            Self::ProtocolViolation => "protocol_violation",
            Self::BadArguments => "bad_arguments",
            Self::QueueFull => "queue_full",
            Self::NoSuchQueue => "no_such_queue",
            Self::StaleDelivery => "stale_delivery",
            Self::StorageFailed => "storage_failed",
            Self::ServicePaused => "service_paused",
            Self::ServiceFailed => "service_failed",
            Self::InvalidTransition => "invalid_transition",
            Self::Other(_) => "other",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips() {
        for code in 0..=24u16 {
            assert_eq!(ErrorCode::from_u16(code).to_u16(), code);
        }
    }
}

//! The error codes that travel in `Error` and `Goodbye` frames, defined
//! once in the table below: each code's wire value, its name (what the CLI
//! prints, what the gateway and other languages match on) and its meaning.
//! Everything else — the client's typed errors, HTTP statuses — is derived
//! from [`ErrorCode::ALL`] and these methods, never listed again.
//!
//! Codes are stable wire values; clients map them to their own typed errors.
//! An unknown code decodes as [`ErrorCode::Other`] so old clients keep working
//! when a newer daemon adds one.

macro_rules! error_codes {
    ($($(#[doc = $doc:literal])* $variant:ident = $code:literal, $name:literal;)*) => {
        /// Why a call, a control request or a whole session failed.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[doc = $doc])* $variant,)*
            /// A code this version does not know.
            Other(u16),
        }

        impl ErrorCode {
            /// Every known code, in wire order.
            pub const ALL: &'static [ErrorCode] = &[$(Self::$variant),*];

            /// The wire value.
            pub fn to_u16(self) -> u16 {
                match self {
                    $(Self::$variant => $code,)*
                    Self::Other(code) => code,
                }
            }

            /// The code for a wire value (unknown values are kept as `Other`).
            pub fn from_u16(code: u16) -> Self {
                match code {
                    $($code => Self::$variant,)*
                    other => Self::Other(other),
                }
            }

            /// The stable snake_case name (`no_such_service`).
            pub fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)*
                    Self::Other(_) => "other",
                }
            }

            /// The code a stable name stands for (`None` for a name no
            /// code has, `other` included: it has no one wire value).
            pub fn from_name(name: &str) -> Option<Self> {
                match name {
                    $($name => Some(Self::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

error_codes! {
    /// No instance of that service is registered.
    NoSuchService = 1, "no_such_service";
    /// The service exists but no instance of it serves that method.
    NoSuchMethod = 2, "no_such_method";
    /// The deadline passed before a reply came back.
    Timeout = 3, "timeout";
    /// The instance handling the call disconnected or crashed mid-call.
    InstanceGone = 4, "instance_gone";
    /// A frame or payload exceeds the negotiated maximum size.
    PayloadTooLarge = 5, "payload_too_large";
    /// The callee refused the call; the message says why.
    Rejected = 6, "rejected";
    /// The daemon is shutting down.
    ShuttingDown = 7, "shutting_down";
    /// The caller is not allowed to do this.
    PermissionDenied = 8, "permission_denied";
    /// The request was malformed (bad name, bad field, reserved name).
    BadRequest = 9, "bad_request";
    /// A limit was reached (too many calls in flight, instance at capacity).
    Overloaded = 10, "overloaded";
    /// The chosen instance id does not exist (or is not of that service).
    NoSuchInstance = 11, "no_such_instance";
    /// The peer speaks another protocol version.
    UnsupportedVersion = 12, "unsupported_version";
    /// The connection broke the protocol (garbage, bad frame order).
    ProtocolViolation = 13, "protocol_violation";
    /// The arguments do not fit the callee's contract; the message names
    /// the method and the argument.
    BadArguments = 14, "bad_arguments";
    /// The queue is at its limit and refuses new messages.
    QueueFull = 15, "queue_full";
    /// No queue of that name (and first use may not create one).
    NoSuchQueue = 16, "no_such_queue";
    /// The delivery tag is unknown or no longer valid (already acked,
    /// returned to the queue, or its consumer is gone).
    StaleDelivery = 17, "stale_delivery";
    /// The queue store failed to write; nothing was confirmed.
    StorageFailed = 18, "storage_failed";
    /// The supervised service is paused; continue it first.
    ServicePaused = 19, "service_paused";
    /// The supervised service failed and its restart policy gave up.
    ServiceFailed = 20, "service_failed";
    /// The control is not valid for the service in its current state (or
    /// the service does not accept it).
    InvalidTransition = 21, "invalid_transition";
    /// No shared region by that name, and this open may not create one.
    NoSuchRegion = 22, "no_such_region";
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

    #[test]
    fn the_table_has_distinct_values_and_names() {
        let mut values: Vec<u16> = ErrorCode::ALL.iter().map(|c| c.to_u16()).collect();
        let mut names: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.name()).collect();
        values.dedup();
        names.sort_unstable();
        names.dedup();
        assert_eq!((values.len(), names.len()), (ErrorCode::ALL.len(), ErrorCode::ALL.len()));
        assert!(ErrorCode::ALL.iter().all(|c| !matches!(c, ErrorCode::Other(_))));
    }
}

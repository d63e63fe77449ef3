//! The HTTP status of each protocol error, defined once from the error
//! table (the body it carries is `ops::Failure::body`).

use axum::http::StatusCode;
use switchboard_proto::ErrorCode;

/// The status an error of `code` is answered with.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::NoSuchService
        | ErrorCode::NoSuchMethod
        | ErrorCode::NoSuchInstance
        | ErrorCode::NoSuchQueue
        | ErrorCode::NoSuchRegion => StatusCode::NOT_FOUND,
        ErrorCode::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorCode::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorCode::Overloaded | ErrorCode::QueueFull => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::ShuttingDown | ErrorCode::ServicePaused | ErrorCode::ServiceFailed => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::BadRequest | ErrorCode::BadArguments | ErrorCode::ProtocolViolation => {
            StatusCode::BAD_REQUEST
        }
        ErrorCode::UnsupportedVersion => StatusCode::BAD_REQUEST,
        ErrorCode::InstanceGone => StatusCode::BAD_GATEWAY,
        ErrorCode::Rejected => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::StaleDelivery | ErrorCode::InvalidTransition => StatusCode::CONFLICT,
        ErrorCode::StorageFailed | ErrorCode::Other(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_status_that_is_an_error_and_the_documented_ones_hold() {
        for code in ErrorCode::ALL {
            let status = status_of(*code);
            assert!(status.is_client_error() || status.is_server_error(), "{code:?}: {status}");
        }
        let documented = [
            (ErrorCode::NoSuchService, 404),
            (ErrorCode::NoSuchMethod, 404),
            (ErrorCode::PermissionDenied, 403),
            (ErrorCode::Timeout, 504),
            (ErrorCode::Overloaded, 429),
            (ErrorCode::ServicePaused, 503),
            (ErrorCode::ShuttingDown, 503),
            (ErrorCode::PayloadTooLarge, 413),
            (ErrorCode::BadArguments, 400),
            (ErrorCode::BadRequest, 400),
        ];
        for (code, status) in documented {
            assert_eq!(status_of(code).as_u16(), status, "{code:?}");
        }
    }
}

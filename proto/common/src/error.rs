//! One error-code enum mapped to both gRPC codes and HTTP statuses (DESIGN.md "Errors").

use http::StatusCode;
use tonic::Code;

/// What kind of failure a caller sees; each module's own error type maps into this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidArgument,
    Unauthenticated,
    PermissionDenied,
    NotFound,
    Conflict,
    Unavailable,
    /// A limit on open calls is reached (429 / RESOURCE_EXHAUSTED).
    TooManyRequests,
    Internal,
}

impl ErrorCode {
    pub fn grpc(self) -> Code {
        match self {
            ErrorCode::InvalidArgument => Code::InvalidArgument,
            ErrorCode::Unauthenticated => Code::Unauthenticated,
            ErrorCode::PermissionDenied => Code::PermissionDenied,
            ErrorCode::NotFound => Code::NotFound,
            ErrorCode::Conflict => Code::FailedPrecondition,
            ErrorCode::Unavailable => Code::Unavailable,
            ErrorCode::TooManyRequests => Code::ResourceExhausted,
            ErrorCode::Internal => Code::Internal,
        }
    }

    pub fn http(self) -> StatusCode {
        match self {
            ErrorCode::InvalidArgument => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorCode::PermissionDenied => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The code a gateway reports for a status a backend answered with.
    pub fn from_grpc(code: Code) -> ErrorCode {
        match code {
            Code::InvalidArgument | Code::OutOfRange => ErrorCode::InvalidArgument,
            Code::Unauthenticated => ErrorCode::Unauthenticated,
            Code::PermissionDenied => ErrorCode::PermissionDenied,
            Code::NotFound => ErrorCode::NotFound,
            Code::AlreadyExists | Code::FailedPrecondition | Code::Aborted => ErrorCode::Conflict,
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => ErrorCode::Unavailable,
            Code::ResourceExhausted => ErrorCode::TooManyRequests,
            _ => ErrorCode::Internal,
        }
    }

    /// A status with a short, safe message for the caller.
    pub fn status(self, message: impl Into<String>) -> tonic::Status {
        tonic::Status::new(self.grpc(), message)
    }
}

/// Metadata entry with a refusal's retry hint, in whole seconds (as HTTP's
/// `Retry-After`): set on a refused login (too many failures, or too many logins at
/// once), and turned into the `Retry-After` header by the gateway.
pub const RETRY_AFTER: &str = "retry-after";

/// `status` carrying a retry hint of `seconds`.
pub fn with_retry_after(mut status: tonic::Status, seconds: u64) -> tonic::Status {
    if let Ok(value) = seconds.to_string().parse() {
        status.metadata_mut().insert(RETRY_AFTER, value);
    }
    status
}

/// The retry hint a status carries, if any.
pub fn retry_after(status: &tonic::Status) -> Option<u64> {
    status.metadata().get(RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()
}

/// The message of a write refused because the database's storage is full.
pub const STORAGE_FULL: &str = "storage full: writes are refused until space is freed";
/// The message of a write refused because the database's storage is read-only.
pub const STORAGE_READ_ONLY: &str = "storage read-only: writes are refused until it is writable again";

/// UNAVAILABLE (503) saying why, when a storage error means the disk is full or
/// read-only (SQLite's SQLITE_FULL and SQLITE_READONLY, PostgreSQL's `disk_full` and
/// read-only transactions): the service is fine and will take writes again once the
/// operator frees space, so it is neither the caller's fault nor an internal error.
pub fn storage_refusal(error: &dyn std::fmt::Display) -> Option<tonic::Status> {
    storage_problem(error).map(|message| ErrorCode::Unavailable.status(message))
}

/// [`STORAGE_FULL`] or [`STORAGE_READ_ONLY`] when a storage error means that.
pub fn storage_problem(error: &dyn std::fmt::Display) -> Option<&'static str> {
    let text = error.to_string();
    let has = |needle: &str| text.contains(needle);
    let message = if has("(code: 13)") || has("database or disk is full") || has("No space left on device") {
        STORAGE_FULL
    } else if has("(code: 8)")
        || has("readonly database")
        || has("read-only transaction")
        || has("Read-only file system")
    {
        STORAGE_READ_ONLY
    } else {
        return None;
    };
    Some(message)
}

/// Whether a status's message is one of [`storage_refusal`]'s.
pub fn is_storage_refusal(message: &str) -> bool {
    message == STORAGE_FULL || message == STORAGE_READ_ONLY
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_grpc() {
        for code in [
            ErrorCode::InvalidArgument,
            ErrorCode::Unauthenticated,
            ErrorCode::PermissionDenied,
            ErrorCode::NotFound,
            ErrorCode::Conflict,
            ErrorCode::Unavailable,
            ErrorCode::TooManyRequests,
            ErrorCode::Internal,
        ] {
            assert_eq!(ErrorCode::from_grpc(code.grpc()), code);
        }
        assert_eq!(ErrorCode::from_grpc(Code::AlreadyExists).http(), StatusCode::CONFLICT);
        assert_eq!(
            ErrorCode::from_grpc(Code::DeadlineExceeded).http(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[test]
    fn retry_hints_round_trip() {
        let status = with_retry_after(ErrorCode::Unavailable.status("busy"), 3);
        assert_eq!(retry_after(&status), Some(3));
        assert_eq!(retry_after(&ErrorCode::Unavailable.status("down")), None);
    }

    #[test]
    fn full_and_read_only_storage_is_unavailable_with_its_reason() {
        let full = "Query Error: error returned from database: (code: 13) database or disk is full";
        let status = super::storage_refusal(&full).expect("a refusal");
        assert_eq!(
            (status.code(), status.message()),
            (tonic::Code::Unavailable, super::STORAGE_FULL)
        );
        let read_only = "error returned from database: (code: 8) attempt to write a readonly database";
        let status = super::storage_refusal(&read_only).expect("a refusal");
        assert!(super::is_storage_refusal(status.message()));
        assert!(super::storage_refusal(&"UNIQUE constraint failed").is_none());
    }
}

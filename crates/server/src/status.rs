//! The one place where errors become gRPC status codes: the engine's
//! [`Error`], the catalog's [`CatalogError`], and the server's own
//! [`RequestError`] for limits and missing items.

use tonic::{Code, Status};

use crate::catalog::CatalogError;
use fathom_engine::error::Error;

/// Why the server itself turned a request down.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// More requests in flight than `--max-concurrency`: shed, don't queue.
    #[error("server overloaded: {limit} requests already in flight; retry with backoff")]
    Overloaded { limit: usize },

    /// The call's connection holds its share of the concurrency slots.
    #[error("server overloaded: this connection already has {limit} calls in flight (--max-calls-per-connection); spread calls over connections or retry with backoff")]
    ConnectionOverloaded { limit: usize },

    /// A request parameter over one of the server's caps.
    #[error("{what} = {value} exceeds the server's limit of {limit}")]
    OverLimit {
        what: &'static str,
        value: usize,
        limit: usize,
    },

    /// GetItems asked for ids the index does not hold.
    #[error("{count} id(s) not in index {index:?}, for example {example:?}")]
    UnknownItems {
        index: String,
        count: usize,
        example: String,
    },

    /// The caller's deadline (`grpc-timeout`) passed before the answer was
    /// ready; the search was stopped or not started.
    #[error("deadline exceeded")]
    DeadlineExceeded,

    /// The server is shutting down and refuses new work.
    #[error("server is shutting down")]
    ShuttingDown,

    /// A part of the contract this server does not serve yet.
    #[error("{0}")]
    Unimplemented(String),

    /// A search task died (a bug): reported, never a crash of the server.
    #[error("internal error: {0}")]
    Internal(String),

    /// Turned away by `--tokens`: no token, an unknown one, or the wrong role.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),

    #[error(transparent)]
    Engine(#[from] Error),

    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

impl From<CatalogError> for Status {
    fn from(e: CatalogError) -> Status {
        Status::new(catalog_code(&e), capped(e.to_string()))
    }
}

/// Longest status message sent, in bytes. Messages quote what clients sent
/// (an index name, an id), and `grpc-message` is a header: a 15 MB id must
/// not come back as a 15 MB header.
pub const MAX_STATUS_MESSAGE: usize = 1024;

/// `message`, cut to at most [`MAX_STATUS_MESSAGE`] bytes.
pub fn capped(mut message: String) -> String {
    if message.len() <= MAX_STATUS_MESSAGE {
        return message;
    }
    let total = message.len();
    let mut cut = MAX_STATUS_MESSAGE - 40;
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    message.truncate(cut);
    message.push_str(&format!("… ({} bytes cut)", total - cut));
    message
}

impl From<RequestError> for Status {
    fn from(e: RequestError) -> Status {
        let code = match &e {
            RequestError::Overloaded { .. } | RequestError::ConnectionOverloaded { .. } => {
                Code::ResourceExhausted
            }
            RequestError::OverLimit { .. } => Code::InvalidArgument,
            RequestError::UnknownItems { .. } => Code::NotFound,
            RequestError::DeadlineExceeded => Code::DeadlineExceeded,
            RequestError::ShuttingDown => Code::Unavailable,
            RequestError::Internal(_) => Code::Internal,
            RequestError::Unimplemented(_) => Code::Unimplemented,
            RequestError::Auth(crate::auth::AuthError::Forbidden { .. }) => Code::PermissionDenied,
            RequestError::Auth(_) => Code::Unauthenticated,
            RequestError::Engine(e) => engine_code(e),
            RequestError::Catalog(e) => catalog_code(e),
        };
        Status::new(code, capped(e.to_string()))
    }
}

fn engine_code(e: &Error) -> Code {
    match e {
        Error::InvalidArgument(_) | Error::Input { .. } | Error::Filter(_) => Code::InvalidArgument,
        Error::DeadlineExceeded => Code::DeadlineExceeded,
        // Only searches whose caller went away stop this way: nobody reads it.
        Error::Cancelled => Code::Cancelled,
        Error::UnknownItem(_) => Code::NotFound,
        // A snapshot that fails its checks: the data is damaged.
        Error::Corrupt { .. } => Code::DataLoss,
        // A well-formed file this build cannot read, or a missing file:
        // fixable on the server's side, not by retrying.
        Error::Incompatible { .. } => Code::FailedPrecondition,
        // A FIFO or a directory where a snapshot file should be: fixable on
        // the server's side.
        Error::NotRegularFile { .. } => Code::FailedPrecondition,
        Error::Io { cause, .. } if cause.kind() == std::io::ErrorKind::NotFound => {
            Code::FailedPrecondition
        }
        Error::Io { .. } => Code::Internal,
    }
}

fn catalog_code(e: &CatalogError) -> Code {
    match e {
        CatalogError::UnknownIndex(_) => Code::NotFound,
        CatalogError::DuplicateName(_) => Code::AlreadyExists,
        CatalogError::BadName { .. } => Code::InvalidArgument,
        CatalogError::BadAlias(_) => Code::InvalidArgument,
        // The aliases file could not be written: nothing was switched.
        CatalogError::Aliases { .. } => Code::Internal,
        CatalogError::Load { error, .. } => engine_code(error),
        CatalogError::Folder { .. } => Code::Internal,
        CatalogError::EmptyFolder(_) => Code::FailedPrecondition,
        CatalogError::NotAFile { .. } => Code::FailedPrecondition,
        // Another reload of the index holds it; retrying later may work.
        CatalogError::ReloadRunning { .. } => Code::Aborted,
        CatalogError::NotLayered(_) => Code::FailedPrecondition,
        // Durable but not yet applied: retrying (or a reload) applies it.
        CatalogError::DeletedNotApplied { .. } => Code::Unavailable,
    }
}

/// tonic reports a request larger than the decoding limit as OUT_OF_RANGE;
/// gRPC's core and Java implementations, and this server's documentation,
/// say RESOURCE_EXHAUSTED. Used by the response layer in `server::limits`.
pub(crate) const OVERSIZE_MESSAGE_PREFIX: &str = "Error, decoded message length too large";

/// How prost's decode errors begin; tonic reports them as INTERNAL, and the
/// response layer in `lib.rs` answers INVALID_ARGUMENT for them.
pub(crate) const DECODE_ERROR_PREFIX: &str = "failed to decode Protobuf message";

/// The canonical upper-case name of a code, as used in metrics labels and
/// in the gRPC spec.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn engine_errors_map_to_codes() {
        let corrupt = Error::Corrupt {
            path: PathBuf::from("x"),
            reason: "bad magic".into(),
        };
        assert_eq!(
            Status::from(RequestError::from(corrupt)).code(),
            Code::DataLoss
        );
        assert_eq!(
            Status::from(RequestError::from(Error::DeadlineExceeded)).code(),
            Code::DeadlineExceeded
        );
        assert_eq!(
            Status::from(RequestError::from(Error::InvalidArgument("k".into()))).code(),
            Code::InvalidArgument
        );
    }

    #[test]
    fn catalog_load_errors_keep_the_engine_code() {
        let e = CatalogError::Load {
            name: "tracks".into(),
            error: Error::Corrupt {
                path: PathBuf::from("x"),
                reason: "checksum".into(),
            },
        };
        let s = Status::from(e);
        assert_eq!(s.code(), Code::DataLoss);
        assert!(s.message().contains("tracks"));
        assert_eq!(
            Status::from(CatalogError::UnknownIndex("nope".into())).code(),
            Code::NotFound
        );
    }

    #[test]
    fn long_messages_are_cut() {
        let long = Status::from(CatalogError::UnknownIndex("é".repeat(500_000)));
        assert!(
            long.message().len() <= MAX_STATUS_MESSAGE,
            "{}",
            long.message().len()
        );
        assert!(long.message().ends_with("bytes cut)"));
        let short = Status::from(CatalogError::UnknownIndex("tracks".into()));
        assert_eq!(short.message(), "no index named \"tracks\"");
    }

    #[test]
    fn request_errors_map_to_codes() {
        assert_eq!(
            Status::from(RequestError::Overloaded { limit: 4 }).code(),
            Code::ResourceExhausted
        );
        let over = RequestError::OverLimit {
            what: "k",
            value: 5000,
            limit: 1000,
        };
        assert_eq!(Status::from(over).code(), Code::InvalidArgument);
    }
}

//! The library's typed errors. The binary adds context with `anyhow`; the
//! server maps these to gRPC status codes in one place (`server::status`).

use std::path::PathBuf;

/// Every failure the engine can report.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // The cause is part of the message (and deliberately not a `#[source]`),
    // so that `anyhow`'s `{:#}` and gRPC status messages print it once.
    #[error("I/O error on {path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },

    /// The file is not a valid snapshot: bad magic, truncated, a section out
    /// of bounds, a checksum mismatch, a broken graph invariant.
    #[error("corrupt snapshot {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },

    /// A file an index is made of is something else: a FIFO, a socket, a
    /// device or a directory (see [`crate::fsutil::open_regular`]).
    #[error("{path} is {kind}, not a regular file")]
    NotRegularFile {
        path: PathBuf,
        kind: crate::fsutil::FileKind,
    },

    /// A well-formed snapshot of a format version this build cannot read.
    #[error("incompatible snapshot format version {found} (this build reads {supported})")]
    Incompatible { found: u32, supported: String },

    /// Bad build input: a reader or validation error with its location.
    #[error("invalid input {path}: {reason}")]
    Input { path: PathBuf, reason: String },

    /// A bad query or parameter (wrong dimension, NaN, k = 0, ...).
    #[error("{0}")]
    InvalidArgument(String),

    /// An external id the index does not hold (a seed of a recommendation).
    #[error("no item {0:?} in this index")]
    UnknownItem(String),

    /// A filter expression that does not parse or fit the schema.
    #[error(transparent)]
    Filter(#[from] crate::filter::FilterError),

    /// A search that ran past its deadline and stopped early.
    #[error("deadline exceeded")]
    DeadlineExceeded,

    /// A search stopped because its caller no longer wants the answer.
    #[error("cancelled")]
    Cancelled,
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            cause: source,
        }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            path: path.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn input(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Input {
            path: path.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        Error::InvalidArgument(reason.into())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

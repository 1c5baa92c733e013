//! What stops a search early: a deadline, a flag set by another thread
//! (the caller went away), both, or nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::error::Error;

/// Stops a search early: checked once every few expanded nodes.
pub trait Cancel {
    fn cancelled(&self) -> bool;

    /// The error a stopped search returns.
    fn error(&self) -> Error {
        Error::DeadlineExceeded
    }
}

/// Never cancels; compiles to nothing.
pub struct NoCancel;

impl Cancel for NoCancel {
    #[inline(always)]
    fn cancelled(&self) -> bool {
        false
    }
}

/// Cancels once the wall clock passes a deadline.
pub struct Deadline(pub Instant);

impl Cancel for Deadline {
    fn cancelled(&self) -> bool {
        Instant::now() >= self.0
    }
}

/// Cancels once the flag is set (by another thread: the caller went away).
pub struct Flag<'a>(pub &'a AtomicBool);

impl Cancel for Flag<'_> {
    fn cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn error(&self) -> Error {
        Error::Cancelled
    }
}

/// Cancels on the flag or at the deadline, whichever comes first.
pub struct FlagOrDeadline<'a>(pub &'a AtomicBool, pub Instant);

impl Cancel for FlagOrDeadline<'_> {
    fn cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed) || Instant::now() >= self.1
    }

    fn error(&self) -> Error {
        if self.0.load(Ordering::Relaxed) {
            Error::Cancelled
        } else {
            Error::DeadlineExceeded
        }
    }
}

/// How often (in expanded nodes, a power of two) cancellation is checked.
pub(crate) const CANCEL_CHECK_MASK: u64 = 15;

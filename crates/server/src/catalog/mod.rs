//! The catalog: named indexes, each held behind an atomically swappable
//! pointer so a snapshot can be replaced while it is being searched.
//!
//! A request takes one [`Arc<Loaded>`] with [`Catalog::get`] and keeps it
//! from start to finish; a reload opens and checks the new file first, then
//! swaps the pointer. The old snapshot (and its memory map) is dropped when
//! its last reader lets go of it. A file that fails to open or to verify is
//! refused: the old snapshot keeps serving and the error is kept for
//! [`Catalog::status`].
//!
//! Nothing here knows about gRPC or async runtimes: the server calls these
//! methods from blocking threads and adds logging and metrics around them.
//!
//! - `load`: opening and checking a snapshot or a layered folder
//! - `names`: the name → slot map, names from the catalog folder, reloads
//! - `aliases`: names that stand for an index, kept in the catalog folder

mod aliases;
mod load;
mod names;

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use fathom_engine::error::Error;

pub use self::aliases::ALIASES_FILE;
pub use self::load::{LoadOptions, Loaded};
pub use self::names::{
    check_name, folder_name, scan_folder, snapshot_name, Catalog, IndexStatus, LoadFailure,
    Reloaded, SNAPSHOT_EXTENSION,
};

/// Errors of the catalog layer; the engine's own errors are carried inside.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("no index named {0:?}")]
    UnknownIndex(String),

    #[error("index name {0:?} is used twice")]
    DuplicateName(String),

    #[error("alias: {0}")]
    BadAlias(String),

    #[error("aliases file {}: {reason}", path.display())]
    Aliases { path: PathBuf, reason: String },

    #[error("invalid index name {name:?}: {reason}")]
    BadName { name: String, reason: String },

    /// Opening or verifying an index's snapshot failed. (The engine error is
    /// in the message, and not also a `source`, so that error chains do not
    /// print it twice.)
    #[error("index {name:?}: {error}")]
    Load { name: String, error: Error },

    #[error("cannot read catalog folder {path}: {error}")]
    Folder {
        path: PathBuf,
        error: std::io::Error,
    },

    #[error("catalog folder {0} holds no *.fathom snapshot and no layered index folder")]
    EmptyFolder(PathBuf),

    /// Opening a FIFO blocks until a writer comes, and a device or folder
    /// is no snapshot: refused before any open.
    #[error("index {name:?}: {} is not a regular file but {kind}", path.display())]
    NotAFile {
        name: String,
        path: PathBuf,
        kind: &'static str,
    },

    /// Another reload of the index is still opening or verifying its file
    /// (a slow or hung file system): refused rather than stacked behind it.
    #[error("index {name:?}: a reload started {secs} s ago is still running")]
    ReloadRunning { name: String, secs: u64 },

    /// Deletions need a layered folder (a single snapshot is immutable).
    #[error("index {0:?} is a single snapshot; deleting needs a layered index folder (fathom build --output DIR/)")]
    NotLayered(String),

    /// The tombstones are on disk, but the reload that applies them in
    /// memory failed: the ids may still be returned until one succeeds.
    #[error("index {name:?}: {deleted} deletions are durable, but applying them failed: {reason}")]
    DeletedNotApplied {
        name: String,
        deleted: usize,
        reason: String,
    },
}

impl CatalogError {
    /// The engine error underneath, if this is a load failure.
    pub fn engine_error(&self) -> Option<&Error> {
        match self {
            CatalogError::Load { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// A lock that a panic elsewhere cannot make unusable: nothing it guards is
/// left half-updated.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

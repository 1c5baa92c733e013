//! The one place that memory-maps files. Kept tiny so the `unsafe` it needs is
//! easy to review.

use std::fs::File;
use std::path::Path;

use memmap2::Mmap;

use crate::error::{Error, Result};

/// Map `path` read-only.
///
/// The contract this relies on, and which fathom's own writers keep: a
/// snapshot file is immutable once renamed into place. Writers never modify a
/// published file; they write a new temporary file and rename it over the old
/// path, which leaves existing mappings of the old inode intact. A third party
/// truncating or rewriting a mapped snapshot in place is outside this contract
/// (reads could then fault with SIGBUS), as for every mmap-based engine.
#[allow(unsafe_code)]
pub(crate) fn map_readonly(path: &Path) -> Result<Mmap> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: the mapping is read-only and private to this process; the file
    // is never mutated in place by fathom (see the contract above). All reads
    // of the mapping go through slices whose bounds were validated against the
    // mapping's length in `reader::Snapshot::open`.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    Ok(map)
}

//! Where a snapshot's bytes live: a read-only mapping of the file, or a copy
//! in anonymous memory. Kept small so that the mmap `unsafe` is easy to
//! review; the SIGBUS handler that guards mappings is in `fault.rs`.

use std::fs::File;
use std::io::Read;
use std::path::Path;

#[cfg(target_os = "linux")]
use memmap2::Advice;
use memmap2::{Mmap, MmapOptions};

use crate::error::{Error, Result};

/// How an open snapshot holds its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoadMode {
    /// Map the file (`MAP_SHARED`, read-only): O(1) open, pages shared with
    /// the page cache and faulted in on first touch. A file truncated or
    /// overwritten in place is caught by the SIGBUS handler: that snapshot
    /// then reports itself corrupt, and the process lives on.
    #[default]
    Mmap,
    /// Read the file into anonymous memory (transparent huge pages asked for
    /// with `MADV_HUGEPAGE`): open reads the whole file, and the copy is
    /// private, so nothing done to the file afterwards can reach it.
    Memory,
}

impl LoadMode {
    pub fn name(self) -> &'static str {
        match self {
            LoadMode::Mmap => "mmap",
            LoadMode::Memory => "memory",
        }
    }
}

impl std::fmt::Display for LoadMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for LoadMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "mmap" => Ok(LoadMode::Mmap),
            "memory" => Ok(LoadMode::Memory),
            _ => Err(format!("unknown load mode {s:?} (expected mmap or memory)")),
        }
    }
}

/// How to open a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OpenOptions {
    pub load: LoadMode,
    /// Mmap mode: read the whole file and map every page at open
    /// (`MAP_POPULATE`), so that the first queries do not wait on the disk
    /// or on page faults. Open is then O(file size). (Memory mode always
    /// reads everything.)
    pub preload: bool,
}

/// Anonymous copies at least this big are rounded up to a whole number of
/// 2 MiB huge pages, so the kernel can back all of them with huge pages.
const HUGE_PAGE: usize = 2 << 20;

/// The bytes of an open snapshot.
pub(crate) struct Mapping {
    // Declared before `map`, so it unregisters before the unmap.
    guard: Option<Guard>,
    map: Mmap,
    len: usize,
    mode: LoadMode,
}

impl Mapping {
    pub fn open(path: &Path, options: &OpenOptions) -> Result<Mapping> {
        // Never blocks on a FIFO in place of the snapshot.
        let mut file = crate::fsutil::open_regular_read(path)?;
        match options.load {
            LoadMode::Mmap => {
                let map = map_file(&file, options.preload).map_err(|e| Error::io(path, e))?;
                let guard = protect(&map);
                Ok(Mapping {
                    len: map.len(),
                    guard,
                    map,
                    mode: LoadMode::Mmap,
                })
            }
            LoadMode::Memory => {
                let len = file.metadata().map_err(|e| Error::io(path, e))?.len() as usize;
                let cap = if len >= HUGE_PAGE {
                    len.div_ceil(HUGE_PAGE) * HUGE_PAGE
                } else {
                    len.max(1)
                };
                let mut anon = MmapOptions::new()
                    .len(cap)
                    .map_anon()
                    .map_err(|e| Error::io(path, e))?;
                // Before the first write, so the pages are allocated huge.
                // Only a hint: fine to fail (no THP support, or "never").
                #[cfg(target_os = "linux")]
                let _ = anon.advise(Advice::HugePage);
                file.read_exact(&mut anon[..len]).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::UnexpectedEof {
                        Error::corrupt(path, "the file shrank while it was being read")
                    } else {
                        Error::io(path, e)
                    }
                })?;
                let map = anon.make_read_only().map_err(|e| Error::io(path, e))?;
                Ok(Mapping {
                    guard: None,
                    map,
                    len,
                    mode: LoadMode::Memory,
                })
            }
        }
    }

    #[inline]
    pub fn bytes(&self) -> &[u8] {
        &self.map[..self.len]
    }

    pub fn mode(&self) -> LoadMode {
        self.mode
    }

    /// Whether the file was cut under the mapping (a SIGBUS was caught), so
    /// that every byte now reads as zero.
    pub fn faulted(&self) -> bool {
        self.guard.as_ref().is_some_and(|g| g.faulted())
    }
}

/// Map `file` read-only.
///
/// The contract fathom's own writers keep: a snapshot file is immutable once
/// renamed into place. They write a new temporary file and rename it over
/// the old path, which leaves existing mappings of the old inode intact. A
/// third party truncating or rewriting a mapped snapshot in place breaks it:
/// reads past the new end raise SIGBUS (caught, see `fault.rs`), and reads
/// of rewritten pages see the new bytes (which every reader bounds-checks).
fn map_file(file: &File, populate: bool) -> std::io::Result<Mmap> {
    let map = map_with(file, &MmapOptions::new())?;
    #[cfg(target_os = "linux")]
    {
        // Before any page is touched: pages read from the file after this
        // come in 2 MiB folios and are mapped huge, sparing the traversal
        // most TLB misses. Pages the page cache already holds in smaller
        // folios (a file just written, or copied) stay as they are. Only a
        // hint: fine to fail.
        let _ = map.advise(Advice::HugePage);
        if populate && map.advise(Advice::PopulateRead).is_err() {
            // A kernel before 5.14: populate at map time instead.
            return map_with(file, MmapOptions::new().populate());
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = populate;
    Ok(map)
}

/// The one place a snapshot file is mapped.
#[allow(unsafe_code)]
fn map_with(file: &File, options: &MmapOptions) -> std::io::Result<Mmap> {
    // SAFETY: the mapping is read-only and private to this process. Every
    // read goes through slices whose bounds were checked against the
    // mapping's length at open (`reader::Snapshot::open`); values read from
    // it are never trusted as indexes without a bounds check. The file
    // changing underneath is the contract breach described at `map_file`,
    // which the SIGBUS guard turns into a corrupt-snapshot error.
    unsafe { options.map(file) }
}

#[cfg(target_os = "linux")]
use super::fault::Guard;

#[cfg(target_os = "linux")]
fn protect(map: &Mmap) -> Option<Guard> {
    super::fault::register(map.as_ptr(), map.len())
}

/// Without the Linux SIGBUS handler a mapping is unprotected: a file cut
/// under it still kills the process (use `LoadMode::Memory` there).
#[cfg(not(target_os = "linux"))]
enum Guard {}

#[cfg(not(target_os = "linux"))]
impl Guard {
    fn faulted(&self) -> bool {
        match *self {}
    }
}

#[cfg(not(target_os = "linux"))]
fn protect(_map: &Mmap) -> Option<Guard> {
    None
}

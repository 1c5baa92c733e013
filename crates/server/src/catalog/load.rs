//! Loading: opening a snapshot file or a layered folder, checking it, and
//! wrapping it as a [`Loaded`]; a reload of a folder reuses the layers it
//! already holds intact.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use super::{lock, CatalogError};
use fathom_engine::error::Error;
use fathom_engine::index::Index;
use fathom_engine::layers::{self, Layered};
use fathom_engine::searchable::Searchable;
use fathom_engine::shards;
use fathom_engine::snapshot::{verify, LoadMode, OpenOptions, Snapshot};

/// How snapshots are opened and checked before they are served.
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    /// Check every section checksum and graph invariant (reads the whole
    /// file) in addition to the O(1) checks of `open`. On by default: a
    /// reload must not swap in a damaged file.
    pub verify: bool,
    /// Mapped or copied into memory, and preloaded or not.
    pub open: OpenOptions,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            verify: true,
            open: OpenOptions::default(),
        }
    }
}

/// Identifies one version of a file, to tell a replaced file from an
/// unchanged one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FileStamp {
    len: u64,
    modified: Option<SystemTime>,
    #[cfg(unix)]
    inode: u64,
}

impl FileStamp {
    pub(super) fn of(path: &Path) -> std::io::Result<FileStamp> {
        let m = std::fs::metadata(path)?;
        Ok(FileStamp {
            len: m.len(),
            modified: m.modified().ok(),
            #[cfg(unix)]
            inode: std::os::unix::fs::MetadataExt::ino(&m),
        })
    }

    /// The same inode, with another length or modification time: written
    /// in place, not replaced by a rename.
    fn same_file_changed(&self, now: &FileStamp) -> bool {
        #[cfg(unix)]
        if self.inode != now.inode {
            return false;
        }
        self != now
    }
}

/// Identifies one version of what a slot serves: a snapshot file, or a
/// layered folder's manifest and tombstones (its layer files never change;
/// deltas and deletions change these two).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stamp {
    File(FileStamp),
    Folder {
        manifest: FileStamp,
        tombstones: Option<FileStamp>,
    },
}

impl Stamp {
    pub(super) fn of(path: &Path, folder: bool) -> std::io::Result<Stamp> {
        if !folder {
            return FileStamp::of(path).map(Stamp::File);
        }
        Ok(Stamp::Folder {
            manifest: FileStamp::of(&path.join(layers::MANIFEST))?,
            tombstones: FileStamp::of(&path.join(layers::TOMBSTONES)).ok(),
        })
    }
}

const MODIFIED_IN_PLACE: &str = "the file was modified in place while mapped; this snapshot is \
     withdrawn until a valid file is loaded (replace snapshots by writing elsewhere and renaming)";

/// One loaded snapshot or layered folder: what a request holds while it
/// runs.
pub struct Loaded {
    pub(super) searchable: Searchable,
    loaded_at: SystemTime,
    pub(super) stamp: Stamp,
    /// Each file served, in the order of `Searchable::parts`, with its stamp
    /// when it was opened: to notice one written in place.
    pub(super) files: Vec<(PathBuf, FileStamp)>,
    /// For one shard of a sharded folder: where it sits in the folder.
    pub shard: Option<ShardPosition>,
}

/// A served shard's place in its sharded folder.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardPosition {
    pub shard: u32,
    pub shards: u32,
    /// "hash" or "kmeans".
    pub partition: String,
    /// With kmeans: this shard's centroid.
    pub centroid: Vec<f32>,
}

impl Loaded {
    pub fn searchable(&self) -> &Searchable {
        &self.searchable
    }

    /// The snapshot that gives dimension, metric and schema (a folder's base).
    pub fn base(&self) -> &Index {
        self.searchable.base()
    }

    /// Withdraw each mapped file (`only`, or all) that was rewritten in
    /// place since it was opened: its mapping shows bytes nothing checked.
    /// Returns whether any was withdrawn now.
    pub(super) fn withdraw_rewritten(&self, only: Option<&Path>) -> bool {
        let mut any = false;
        for ((index, _), (file, stamp)) in self.searchable.parts().zip(&self.files) {
            if only.is_some_and(|p| p != file) {
                continue;
            }
            let snap = index.snapshot();
            if snap.load_mode() != LoadMode::Mmap || snap.check_intact().is_err() {
                continue;
            }
            if FileStamp::of(file).is_ok_and(|now| stamp.same_file_changed(&now)) {
                snap.mark_damaged(MODIFIED_IN_PLACE);
                any = true;
            }
        }
        any
    }

    pub fn loaded_at(&self) -> SystemTime {
        self.loaded_at
    }
}

/// Open `path` (a snapshot, or a layered folder) as index `name`, check
/// it, and wrap it for serving. A folder reopens only the layers that
/// `previous` does not already hold intact.
pub(super) fn load(
    name: &str,
    path: &Path,
    options: LoadOptions,
    previous: Option<&Loaded>,
) -> Result<Loaded, CatalogError> {
    let as_load_error = |error| CatalogError::Load {
        name: name.to_string(),
        error,
    };
    let meta = std::fs::metadata(path).map_err(|cause| {
        as_load_error(Error::Io {
            path: path.to_path_buf(),
            cause,
        })
    })?;
    if meta.is_dir() && layers::is_layered(path) {
        return load_folder(path, options, previous).map_err(as_load_error);
    }
    if meta.is_dir() && shards::is_sharded(path) {
        return Err(as_load_error(Error::InvalidArgument(format!(
            "{} is a sharded folder: a server serves one of its shards (--shard N or \
             --shard from-hostname)",
            path.display()
        ))));
    }
    if !meta.is_file() {
        return Err(CatalogError::NotAFile {
            name: name.to_string(),
            path: path.to_path_buf(),
            kind: file_kind(&meta.file_type()),
        });
    }
    load_file(path, options).map_err(as_load_error)
}

fn file_kind(t: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_block_device() || t.is_char_device() {
            return "a device";
        }
    }
    if t.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
}

fn stamp_of(path: &Path) -> Result<FileStamp, Error> {
    FileStamp::of(path).map_err(|cause| Error::Io {
        path: path.to_path_buf(),
        cause,
    })
}

/// Open one snapshot file and check it as `options` say.
fn open_checked(path: &Path, options: LoadOptions) -> Result<Index, Error> {
    let snapshot = Snapshot::open_with(path, &options.open)?;
    if options.verify {
        let report = verify(&snapshot);
        // A file cut while it was verified reads as zeros: say so.
        snapshot.check_intact()?;
        if !report.is_ok() {
            return Err(Error::Corrupt {
                path: path.to_path_buf(),
                reason: report.problems.join("; "),
            });
        }
    }
    let index = Index::from_snapshot(snapshot);
    // Measured and built here, while loading, rather than by the first
    // calls to come: early rejection reads a few thousand rows, and the id
    // table for seeds and exclusions hashes every id.
    index.early_reject();
    index.prepare_ids();
    Ok(index)
}

/// Open a regular file, check it, and wrap it for serving.
fn load_file(path: &Path, options: LoadOptions) -> Result<Loaded, Error> {
    let stamp = stamp_of(path)?;
    let index = open_checked(path, options)?;
    Ok(Loaded {
        searchable: Searchable::Snapshot(Box::new(index)),
        loaded_at: SystemTime::now(),
        stamp: Stamp::File(stamp),
        files: vec![(path.to_path_buf(), stamp)],
        shard: None,
    })
}

/// Open a layered folder, reusing the layers `previous` holds when they
/// are intact and their files unchanged (a delta or a delete then costs
/// only the new layer and the tombstones).
fn load_folder(
    dir: &Path,
    options: LoadOptions,
    previous: Option<&Loaded>,
) -> Result<Loaded, Error> {
    let stamp = Stamp::of(dir, true).map_err(|cause| Error::Io {
        path: dir.join(layers::MANIFEST),
        cause,
    })?;
    let reuse = previous.filter(|p| {
        p.searchable.check_intact().is_ok()
            && p.files
                .iter()
                .all(|(f, s)| FileStamp::of(f).is_ok_and(|now| now == *s))
    });
    let opened = Mutex::new(Vec::new());
    let layered =
        Layered::open_reusing_with(dir, reuse.and_then(|p| p.searchable.layered()), &|path| {
            let stamp = stamp_of(path)?;
            let index = open_checked(path, options)?;
            lock(&opened).push((path.to_path_buf(), stamp));
            Ok(index)
        })?;
    let opened = opened.into_inner().unwrap_or_else(|e| e.into_inner());
    let known = opened.iter().chain(reuse.map_or(&[][..], |p| &p.files));
    let files = layered
        .manifest
        .layers
        .iter()
        .map(|name| {
            let path = dir.join(name);
            let stamp = known.clone().find(|(f, _)| *f == path).map(|(_, s)| *s);
            // Every layer was either opened now or reused with its stamp.
            (path, stamp.expect("each layer is opened or reused"))
        })
        .collect();
    Ok(Loaded {
        searchable: Searchable::Layered(layered),
        loaded_at: SystemTime::now(),
        stamp,
        files,
        shard: shard_position(dir),
    })
}

/// Where `dir` sits when it is a shard of a sharded folder
/// (`PARENT/shard-NNNN` with `PARENT/shards.json` naming it).
fn shard_position(dir: &Path) -> Option<ShardPosition> {
    let name = dir.file_name()?.to_str()?;
    let parent = dir.parent()?;
    let m = shards::read_manifest(parent).ok()?;
    let i = m.items.iter().position(|e| e.dir == name)?;
    Some(ShardPosition {
        shard: i as u32,
        shards: m.shards,
        centroid: m.centroids.get(i).cloned().unwrap_or_default(),
        partition: m.partition,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;

    #[test]
    fn a_fifo_is_refused_without_being_opened() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("p.fathom");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        let catalog = Catalog::new(None, LoadOptions::default());
        // Opening it would block this test forever.
        let e = catalog.add("p", &fifo).err().unwrap();
        assert!(
            matches!(e, CatalogError::NotAFile { kind: "a FIFO", .. }),
            "{e}"
        );
    }
}

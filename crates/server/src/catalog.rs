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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use arc_swap::ArcSwap;

use fathom_engine::error::Error;
use fathom_engine::index::Index;
use fathom_engine::layers::{self, Deleted, Layered};
use fathom_engine::searchable::Searchable;
use fathom_engine::snapshot::{verify, LoadMode, OpenOptions, Snapshot};

/// The file extension of snapshots picked up from a catalog folder.
pub const SNAPSHOT_EXTENSION: &str = "fathom";

/// Errors of the catalog layer; the engine's own errors are carried inside.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("no index named {0:?}")]
    UnknownIndex(String),

    #[error("index name {0:?} is used twice")]
    DuplicateName(String),

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
struct FileStamp {
    len: u64,
    modified: Option<SystemTime>,
    #[cfg(unix)]
    inode: u64,
}

impl FileStamp {
    fn of(path: &Path) -> std::io::Result<FileStamp> {
        let m = std::fs::metadata(path)?;
        Ok(FileStamp {
            len: m.len(),
            modified: m.modified().ok(),
            #[cfg(unix)]
            inode: std::os::unix::fs::MetadataExt::ino(&m),
        })
    }
}

/// Identifies one version of what a slot serves: a snapshot file, or a
/// layered folder's manifest and tombstones (its layer files never change;
/// deltas and deletions change these two).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stamp {
    File(FileStamp),
    Folder {
        manifest: FileStamp,
        tombstones: Option<FileStamp>,
    },
}

impl Stamp {
    fn of(path: &Path, folder: bool) -> std::io::Result<Stamp> {
        if !folder {
            return FileStamp::of(path).map(Stamp::File);
        }
        Ok(Stamp::Folder {
            manifest: FileStamp::of(&path.join(layers::MANIFEST))?,
            tombstones: FileStamp::of(&path.join(layers::TOMBSTONES)).ok(),
        })
    }
}

impl FileStamp {
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

const MODIFIED_IN_PLACE: &str = "the file was modified in place while mapped; this snapshot is \
     withdrawn until a valid file is loaded (replace snapshots by writing elsewhere and renaming)";

/// One loaded snapshot or layered folder: what a request holds while it
/// runs.
pub struct Loaded {
    searchable: Searchable,
    loaded_at: SystemTime,
    stamp: Stamp,
    /// Each file served, in the order of `Searchable::parts`, with its stamp
    /// when it was opened: to notice one written in place.
    files: Vec<(PathBuf, FileStamp)>,
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
    fn withdraw_rewritten(&self, only: Option<&Path>) -> bool {
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

/// A failed load, kept until the next successful one.
#[derive(Debug, Clone)]
pub struct LoadFailure {
    pub message: String,
    pub at: SystemTime,
}

/// A point-in-time view of one index, for listings and metrics.
pub struct IndexStatus {
    pub name: String,
    pub path: PathBuf,
    pub loaded: Arc<Loaded>,
    pub last_error: Option<LoadFailure>,
    /// Successful reloads since startup (the first load is not counted).
    pub reloads: u64,
    pub reload_failures: u64,
    /// When the reload running now started, if one is.
    pub reloading_since: Option<SystemTime>,
}

#[derive(Default)]
struct SlotState {
    last_error: Option<LoadFailure>,
    reloads: u64,
    reload_failures: u64,
    reloading_since: Option<SystemTime>,
    /// The file changed again while a reload ran: look at it once more.
    again: bool,
}

struct Slot {
    name: String,
    path: PathBuf,
    current: ArcSwap<Loaded>,
    /// Held for the whole of a reload, so reloads of one index never
    /// overlap. Opening a file can block without end (a FIFO, a hung network
    /// file system), so nothing that serves calls ever waits for this lock.
    reloading: Mutex<()>,
    /// Counters and the last error; held only to read or update them.
    state: Mutex<SlotState>,
}

impl Slot {
    fn state(&self) -> MutexGuard<'_, SlotState> {
        // A panic while holding the lock cannot leave the counters invalid.
        lock(&self.state)
    }
}

/// The result of a reload that succeeded.
pub enum Reloaded {
    /// A new snapshot is serving.
    Swapped(Arc<Loaded>),
    /// The file had not changed since it was loaded (watcher-driven reloads
    /// only); nothing was done.
    Unchanged,
}

/// Named indexes, each swappable on its own. Cheap to read from many
/// threads: [`get`](Catalog::get) is two atomic loads and a map lookup.
pub struct Catalog {
    slots: ArcSwap<BTreeMap<String, Arc<Slot>>>,
    /// Serializes additions of new names (only the map update: files are
    /// opened outside it).
    adding: Mutex<()>,
    /// Names whose file is being opened to be added.
    opening: Mutex<std::collections::BTreeSet<String>>,
    folder: Option<PathBuf>,
    options: LoadOptions,
}

impl Catalog {
    /// An empty catalog. `folder`, when set, is the `--catalog` folder whose
    /// new files [`file_changed`](Catalog::file_changed) may add.
    pub fn new(folder: Option<PathBuf>, options: LoadOptions) -> Catalog {
        Catalog {
            slots: ArcSwap::from_pointee(BTreeMap::new()),
            adding: Mutex::new(()),
            opening: Mutex::new(Default::default()),
            folder: folder.map(|f| absolute(&f)),
            options,
        }
    }

    /// Load every `(name, path)` and, when given, every snapshot of `folder`,
    /// failing on the first error: a server should not start half-loaded.
    pub fn open(
        specs: &[(String, PathBuf)],
        folder: Option<&Path>,
        options: LoadOptions,
    ) -> Result<Catalog, CatalogError> {
        let catalog = Catalog::new(folder.map(Path::to_path_buf), options);
        let mut all = specs.to_vec();
        if let Some(dir) = folder {
            let found = scan_folder(dir)?;
            if found.is_empty() && specs.is_empty() {
                return Err(CatalogError::EmptyFolder(dir.to_path_buf()));
            }
            all.extend(found);
        }
        for (name, path) in all {
            catalog.add(&name, &path)?;
        }
        Ok(catalog)
    }

    /// Load `path` and serve it as `name`.
    pub fn add(&self, name: &str, path: &Path) -> Result<Arc<Loaded>, CatalogError> {
        check_name(name)?;
        let path = &absolute(path);
        if self.slots.load().contains_key(name) {
            return Err(CatalogError::DuplicateName(name.to_string()));
        }
        let opening = Opening::start(&self.opening, name)?;
        let loaded = Arc::new(load(name, path, self.options, None)?);
        drop(opening);
        let _adding = lock(&self.adding);
        if self.slots.load().contains_key(name) {
            return Err(CatalogError::DuplicateName(name.to_string()));
        }
        let slot = Arc::new(Slot {
            name: name.to_string(),
            path: path.to_path_buf(),
            current: ArcSwap::new(Arc::clone(&loaded)),
            reloading: Mutex::new(()),
            state: Mutex::new(SlotState::default()),
        });
        let mut map = BTreeMap::clone(&self.slots.load());
        map.insert(name.to_string(), slot);
        self.slots.store(Arc::new(map));
        Ok(loaded)
    }

    /// The snapshot currently serving `name`. Hold the `Arc` for the whole
    /// request: a concurrent reload will not unmap it.
    pub fn get(&self, name: &str) -> Option<Arc<Loaded>> {
        self.slots.load().get(name).map(|s| s.current.load_full())
    }

    /// As [`Self::get`], for a request: an error when there is no such
    /// index, or when its snapshot was withdrawn because its file was cut or
    /// modified in place (a [`CatalogError::Load`] carrying the engine's
    /// `Corrupt`), until a valid file is loaded.
    pub fn serving(&self, name: &str) -> Result<Arc<Loaded>, CatalogError> {
        let loaded = self
            .get(name)
            .ok_or_else(|| CatalogError::UnknownIndex(name.to_string()))?;
        match loaded.searchable.check_intact() {
            Ok(()) => Ok(loaded),
            Err(error) => Err(CatalogError::Load {
                name: name.to_string(),
                error,
            }),
        }
    }

    /// The watcher saw `path` being written to. A mapped snapshot whose own
    /// file (same inode) is being rewritten now shows bytes nothing has
    /// checked: withdraw it at once, rather than at the first read past a
    /// truncation, until the reload that follows the write succeeds. A copy
    /// in memory is unaffected and keeps serving. Returns the name of the
    /// index withdrawn now, if any.
    pub fn file_modified(&self, path: &Path) -> Option<String> {
        let path = &absolute(path);
        let slots = self.slots.load();
        let slot = slots
            .values()
            .find(|s| s.current.load().files.iter().any(|(f, _)| f == path))?;
        slot.current
            .load()
            .withdraw_rewritten(Some(path))
            .then(|| slot.name.clone())
    }

    pub fn names(&self) -> Vec<String> {
        self.slots.load().keys().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.slots.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.load().is_empty()
    }

    pub fn folder(&self) -> Option<&Path> {
        self.folder.as_deref()
    }

    /// The folders holding the served files, each layered folder, and the
    /// catalog folder: what a watcher should watch.
    pub fn watched_folders(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self
            .slots
            .load()
            .values()
            .flat_map(|s| {
                let folder = s.current.load().searchable.layered().is_some();
                [
                    s.path.parent().map(Path::to_path_buf),
                    folder.then(|| s.path.clone()),
                ]
            })
            .flatten()
            .chain(self.folder.clone())
            .collect();
        dirs.sort();
        dirs.dedup();
        dirs
    }

    /// Every index, sorted by name.
    pub fn status(&self) -> Vec<IndexStatus> {
        self.slots.load().values().map(|s| slot_status(s)).collect()
    }

    pub fn status_of(&self, name: &str) -> Option<IndexStatus> {
        self.slots.load().get(name).map(|s| slot_status(s))
    }

    fn slot(&self, name: &str) -> Result<Arc<Slot>, CatalogError> {
        self.slots
            .load()
            .get(name)
            .cloned()
            .ok_or_else(|| CatalogError::UnknownIndex(name.to_string()))
    }

    /// Reopen `name`'s file and swap it in. On failure the old snapshot keeps
    /// serving and the error is recorded.
    pub fn reload(&self, name: &str) -> Result<Arc<Loaded>, CatalogError> {
        let slot = self.slot(name)?;
        match self.reload_slot(&slot, false)? {
            Reloaded::Swapped(l) => Ok(l),
            Reloaded::Unchanged => Ok(slot.current.load_full()),
        }
    }

    /// Reload every index; one result per index, sorted by name.
    pub fn reload_all(&self) -> Vec<(String, Result<Arc<Loaded>, CatalogError>)> {
        self.names()
            .into_iter()
            .map(|n| {
                let r = self.reload(&n);
                (n, r)
            })
            .collect()
    }

    /// Delete `ids` from the layered index `name`: durably (the tombstones
    /// are fsynced) and, before this returns, in the set every later call
    /// gets. Waits up to `wait` for a reload of the index that is running.
    pub fn delete(
        &self,
        name: &str,
        ids: &[String],
        wait: std::time::Duration,
    ) -> Result<(Deleted, Arc<Loaded>), CatalogError> {
        let slot = self.slot(name)?;
        let Some(_reloading) = lock_within(&slot.reloading, wait) else {
            let since = slot.state().reloading_since.unwrap_or_else(SystemTime::now);
            return Err(CatalogError::ReloadRunning {
                name: name.to_string(),
                secs: since.elapsed().map_or(0, |d| d.as_secs()),
            });
        };
        let current = slot.current.load_full();
        let Some(layered) = current.searchable.layered() else {
            return Err(CatalogError::NotLayered(name.to_string()));
        };
        let done =
            layers::delete(&slot.path, ids, Some(layered)).map_err(|error| CatalogError::Load {
                name: name.to_string(),
                error,
            })?;
        if done.deleted.is_empty() {
            return Ok((done, current));
        }
        let mut outcome = self.reload_once(&slot, false);
        while std::mem::take(&mut slot.state().again) {
            if let Ok(Reloaded::Swapped(l)) = self.reload_once(&slot, true) {
                outcome = Ok(Reloaded::Swapped(l));
            }
        }
        match outcome {
            Ok(Reloaded::Swapped(loaded)) => Ok((done, loaded)),
            Ok(Reloaded::Unchanged) => Ok((done, slot.current.load_full())),
            Err(e) => Err(CatalogError::DeletedNotApplied {
                name: name.to_string(),
                deleted: done.deleted.len(),
                reason: match e {
                    CatalogError::Load { error, .. } => error.to_string(),
                    other => other.to_string(),
                },
            }),
        }
    }

    /// A file changed on disk (the folder watcher saw it). Reloads the index
    /// served from `path` if the file is a new one, or adds a new index when
    /// `path` is a new snapshot in the catalog folder. Returns `None` when
    /// `path` concerns no index (not a snapshot, a hidden temporary file, or
    /// gone).
    pub fn file_changed(&self, path: &Path) -> Option<(String, Result<Reloaded, CatalogError>)> {
        let path = &absolute(path);
        let existing = self
            .slots
            .load()
            .values()
            .find(|s| s.path == *path || in_layered_folder(s, path))
            .cloned();
        if let Some(slot) = existing {
            if !path.exists() {
                // Removed: keep serving the mapping we hold.
                return None;
            }
            return Some((slot.name.clone(), self.reload_slot(&slot, true)));
        }
        let folder = self.folder.as_deref()?;
        if path.parent() != Some(folder) || !(path.is_file() || layers::is_layered(path)) {
            return None;
        }
        let name = snapshot_name(path).or_else(|| folder_name(path))?;
        let result = self.add(&name, path).map(Reloaded::Swapped);
        Some((name, result))
    }

    /// Reload `slot` unless a reload of it is running: then refuse at once
    /// (`ReloadRunning`), and, for a watcher-driven reload, have the running
    /// one look at the file again when it is done, so that the newest file
    /// is not missed.
    fn reload_slot(&self, slot: &Slot, only_if_changed: bool) -> Result<Reloaded, CatalogError> {
        let _reloading = match slot.reloading.try_lock() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                let mut state = slot.state();
                state.again |= only_if_changed;
                let since = state.reloading_since.unwrap_or_else(SystemTime::now);
                return Err(CatalogError::ReloadRunning {
                    name: slot.name.clone(),
                    secs: since.elapsed().map_or(0, |d| d.as_secs()),
                });
            }
        };
        let mut outcome = self.reload_once(slot, only_if_changed);
        while std::mem::take(&mut slot.state().again) {
            match self.reload_once(slot, true) {
                Ok(Reloaded::Unchanged) => {}
                later => outcome = later,
            }
        }
        outcome
    }

    /// One reload; the caller holds the slot's `reloading` lock.
    fn reload_once(&self, slot: &Slot, only_if_changed: bool) -> Result<Reloaded, CatalogError> {
        let current = slot.current.load_full();
        if only_if_changed {
            let folder = current.searchable.layered().is_some();
            if let Ok(stamp) = Stamp::of(&slot.path, folder) {
                if stamp == current.stamp {
                    return Ok(Reloaded::Unchanged);
                }
            }
        }
        slot.state().reloading_since = Some(SystemTime::now());
        let result = load(&slot.name, &slot.path, self.options, Some(&current));
        // A mapped file that was rewritten in place and does not load: the
        // mapping shows those same unchecked bytes. (Checked before the
        // state lock: a stat can hang too.)
        if result.is_err() {
            current.withdraw_rewritten(None);
        }
        let mut state = slot.state();
        state.reloading_since = None;
        match result {
            Ok(loaded) => {
                let loaded = Arc::new(loaded);
                slot.current.store(Arc::clone(&loaded));
                state.reloads += 1;
                state.last_error = None;
                Ok(Reloaded::Swapped(loaded))
            }
            Err(error) => {
                state.reload_failures += 1;
                let message = match &error {
                    CatalogError::Load { error, .. } => error.to_string(),
                    e => e.to_string(),
                };
                state.last_error = Some(LoadFailure {
                    message,
                    at: SystemTime::now(),
                });
                Err(error)
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `m`, if it can be had within `wait`. (Polled: a reload holding it may
/// be stuck on a hung file system for good.)
fn lock_within(m: &Mutex<()>, wait: std::time::Duration) -> Option<MutexGuard<'_, ()>> {
    let until = std::time::Instant::now() + wait;
    loop {
        match m.try_lock() {
            Ok(g) => return Some(g),
            Err(std::sync::TryLockError::Poisoned(e)) => return Some(e.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) if std::time::Instant::now() < until => {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            Err(std::sync::TryLockError::WouldBlock) => return None,
        }
    }
}

/// A name being added: its file is being opened. A second add of the same
/// name meanwhile is refused rather than stacked behind a hung open.
struct Opening<'a> {
    names: &'a Mutex<std::collections::BTreeSet<String>>,
    name: String,
}

impl<'a> Opening<'a> {
    fn start(
        names: &'a Mutex<std::collections::BTreeSet<String>>,
        name: &str,
    ) -> Result<Opening<'a>, CatalogError> {
        if !lock(names).insert(name.to_string()) {
            return Err(CatalogError::ReloadRunning {
                name: name.to_string(),
                secs: 0,
            });
        }
        Ok(Opening {
            names,
            name: name.to_string(),
        })
    }
}

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        lock(self.names).remove(&self.name);
    }
}

/// `path` made absolute without resolving symlinks, so that a reload follows
/// a symlink that was re-pointed, and so that paths from the folder watcher
/// compare equal to the paths indexes were added with.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn slot_status(slot: &Slot) -> IndexStatus {
    let state = slot.state();
    IndexStatus {
        name: slot.name.clone(),
        path: slot.path.clone(),
        loaded: slot.current.load_full(),
        last_error: state.last_error.clone(),
        reloads: state.reloads,
        reload_failures: state.reload_failures,
        reloading_since: state.reloading_since,
    }
}

/// Open `path` (a snapshot, or a layered folder) as index `name`, check
/// it, and wrap it for serving. A folder reopens only the layers that
/// `previous` does not already hold intact.
fn load(
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
    // calls to come: early rejection reads a few thousand rows (milliseconds
    // on a cold file), and the id table for seeds and exclusions hashes
    // every id (36 ms at 1M items).
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
    })
}

/// Is `path` one of the files of `slot`'s layered folder that change what
/// it serves (the manifest, the tombstones, a layer)?
fn in_layered_folder(slot: &Slot, path: &Path) -> bool {
    if path.parent() != Some(&slot.path) || slot.current.load().searchable.layered().is_none() {
        return false;
    }
    // Hidden files are temporaries still being written (a new layer,
    // manifest or tombstone file before its rename).
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| !n.starts_with('.'))
}

/// The snapshots of a catalog folder, named by file stem, sorted by name.
/// Hidden files (such as the writer's temporary files) are skipped.
pub fn scan_folder(dir: &Path) -> Result<Vec<(String, PathBuf)>, CatalogError> {
    let folder_err = |error| CatalogError::Folder {
        path: dir.to_path_buf(),
        error,
    };
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(folder_err)? {
        let path = entry.map_err(folder_err)?.path();
        let name = if path.is_file() {
            snapshot_name(&path)
        } else {
            folder_name(&path)
        };
        if let Some(name) = name {
            found.push((name, path));
        }
    }
    found.sort();
    Ok(found)
}

/// The index name of a layered index folder: its name, if it is visible,
/// valid, and holds a manifest.
pub fn folder_name(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    if name.starts_with('.') || check_name(name).is_err() || !layers::is_layered(path) {
        return None;
    }
    Some(name.to_string())
}

/// The index name of a snapshot path: its stem, if the file is a visible
/// `*.fathom` with a valid name.
pub fn snapshot_name(path: &Path) -> Option<String> {
    if path.extension()? != SNAPSHOT_EXTENSION {
        return None;
    }
    let stem = path.file_stem()?.to_str()?;
    if stem.starts_with('.') || check_name(stem).is_err() {
        return None;
    }
    Some(stem.to_string())
}

/// Index names are what clients type: letters, digits, `-`, `_` and `.`,
/// starting with a letter or digit, at most 128 bytes.
pub fn check_name(name: &str) -> Result<(), CatalogError> {
    let bad = |reason: &str| {
        Err(CatalogError::BadName {
            name: name.to_string(),
            reason: reason.to_string(),
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > 128 {
        return bad("longer than 128 bytes");
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return bad("must start with a letter or digit");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return bad("only letters, digits, '-', '_' and '.' are allowed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fathom_engine::builder::{build, BuildOptions, Dataset};

    fn snapshot(path: &Path) {
        let (n, dim) = (50, 8);
        let ds = Dataset {
            dim,
            vectors: fathom_engine::synth::clustered(n, dim, 2, 7),
            ids: (0..n).map(|i| format!("x:{i}")).collect(),
            attributes: None,
        };
        let built = build(ds, Path::new("test"), &BuildOptions::default(), &|_, _| {}).unwrap();
        built.write(path, "test").unwrap();
    }

    /// A reload stuck opening its file (here: one that holds the slot's
    /// reload lock and does not let go) leaves readers and other reloads
    /// alone, and a second reload of the same index is refused at once.
    #[test]
    fn a_stuck_reload_blocks_no_reader() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.fathom");
        snapshot(&path);
        let catalog = Catalog::open(&[("a".into(), path)], None, LoadOptions::default()).unwrap();
        let slot = Arc::clone(catalog.slots.load().get("a").unwrap());
        let stuck = slot.reloading.lock().unwrap();
        slot.state().reloading_since = Some(SystemTime::now());

        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                let status = catalog.status();
                let again = catalog.reload("a");
                tx.send((status, again)).unwrap();
            });
            let (status, again) = rx
                .recv_timeout(std::time::Duration::from_secs(5))
                .expect("status and reload answer while a reload is stuck");
            assert!(status[0].reloading_since.is_some());
            assert!(matches!(again, Err(CatalogError::ReloadRunning { .. })));
            drop(stuck);
        });
        assert!(catalog.get("a").is_some());
        assert!(catalog.reload("a").is_ok());
    }

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

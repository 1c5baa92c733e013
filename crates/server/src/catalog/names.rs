//! Naming: the map from index names to slots, names added from the catalog
//! folder, and each slot's reload bookkeeping (one reload at a time, its
//! counters and last error).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use arc_swap::ArcSwap;

use super::aliases::Aliases;
use super::load::{load, LoadOptions, Loaded, Stamp};
use super::{lock, CatalogError};
use fathom_engine::layers::{self, Deleted};

/// The file extension of snapshots picked up from a catalog folder.
pub const SNAPSHOT_EXTENSION: &str = "fathom";

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
    /// The aliases that stand for it.
    pub aliases: Vec<String>,
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
    opening: Mutex<BTreeSet<String>>,
    folder: Option<PathBuf>,
    options: LoadOptions,
    aliases: Aliases,
}

impl Catalog {
    /// An empty catalog. `folder`, when set, is the `--catalog` folder whose
    /// new files [`file_changed`](Catalog::file_changed) may add.
    pub fn new(folder: Option<PathBuf>, options: LoadOptions) -> Catalog {
        Catalog {
            slots: ArcSwap::from_pointee(BTreeMap::new()),
            adding: Mutex::new(()),
            opening: Mutex::new(Default::default()),
            aliases: Aliases::new(folder.as_deref()),
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
        if self.aliases.all().contains_key(name) {
            return Err(CatalogError::DuplicateName(name.to_string()));
        }
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
        let name = self.aliases.resolve(name);
        self.slots.load().get(&*name).map(|s| s.current.load_full())
    }

    /// The index `name` stands for now: itself unless it is an alias.
    pub fn resolve(&self, name: &str) -> String {
        self.aliases.resolve(name).into_owned()
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
        let aliases = self.aliases.all();
        self.slots
            .load()
            .values()
            .map(|s| slot_status(s, &aliases))
            .collect()
    }

    pub fn status_of(&self, name: &str) -> Option<IndexStatus> {
        let name = self.aliases.resolve(name);
        let aliases = self.aliases.all();
        self.slots
            .load()
            .get(&*name)
            .map(|s| slot_status(s, &aliases))
    }

    /// Serve `aliases` (alias, index) from start-up, and those kept in the
    /// catalog folder, which win over these for the same alias (they are
    /// the latest switch). An alias of an index not served is left out.
    pub fn start_aliases(&self, given: &[(String, String)]) -> Result<(), CatalogError> {
        let mut map: BTreeMap<String, String> = given.iter().cloned().collect();
        map.extend(self.aliases.read_kept()?);
        let slots = self.slots.load();
        let mut dormant = BTreeMap::new();
        map.retain(|alias, index| {
            let ok = check_name(alias).is_ok()
                && !slots.contains_key(alias)
                && slots.contains_key(index.as_str());
            if !ok {
                tracing::warn!(
                    alias,
                    index,
                    "alias not served: its index is not served, or the alias is an index's name"
                );
                dormant.insert(alias.clone(), index.clone());
            }
            ok
        });
        for (alias, _) in given {
            if !map.contains_key(alias) {
                return Err(CatalogError::BadAlias(format!(
                    "--alias {alias}: no index of that name to point at, or {alias:?} names an index"
                )));
            }
        }
        self.aliases.replace(map, dormant);
        Ok(())
    }

    /// Point `alias` at the index `index` (`None` removes the alias).
    /// Returns what it pointed at before, and whether the change is kept
    /// across restarts (with a catalog folder).
    pub fn set_alias(
        &self,
        alias: &str,
        index: Option<&str>,
    ) -> Result<(Option<String>, bool), CatalogError> {
        check_name(alias)?;
        let slots = self.slots.load();
        if slots.contains_key(alias) {
            return Err(CatalogError::BadAlias(format!(
                "{alias:?} is the name of an index, not an alias"
            )));
        }
        if let Some(index) = index {
            if !slots.contains_key(index) {
                return Err(CatalogError::UnknownIndex(index.to_string()));
            }
        }
        self.aliases.set(alias, index)
    }

    fn slot(&self, name: &str) -> Result<Arc<Slot>, CatalogError> {
        let name = self.aliases.resolve(name);
        self.slots
            .load()
            .get(&*name)
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
    names: &'a Mutex<BTreeSet<String>>,
    name: String,
}

impl<'a> Opening<'a> {
    fn start(names: &'a Mutex<BTreeSet<String>>, name: &str) -> Result<Opening<'a>, CatalogError> {
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

fn slot_status(slot: &Slot, aliases: &BTreeMap<String, String>) -> IndexStatus {
    let state = slot.state();
    IndexStatus {
        aliases: aliases
            .iter()
            .filter(|(_, index)| **index == slot.name)
            .map(|(alias, _)| alias.clone())
            .collect(),
        name: slot.name.clone(),
        path: slot.path.clone(),
        loaded: slot.current.load_full(),
        last_error: state.last_error.clone(),
        reloads: state.reloads,
        reload_failures: state.reload_failures,
        reloading_since: state.reloading_since,
    }
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
}

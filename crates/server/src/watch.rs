//! The folder watcher: a snapshot renamed into (or finished writing in) a
//! watched folder is reloaded, or added when the catalog folder gains a new
//! `*.fathom` or layered index folder. A layered folder is watched itself:
//! a new manifest (a delta, a compaction) or new tombstones reload it. Events are debounced briefly, so a burst of them for one file
//! gives one reload. A served file written in place is withdrawn at its
//! first write (when it is mapped), and reloaded when the writer closes it.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};

use crate::reload;
use crate::service::Shared;
use crate::stopped;

/// Quiet time after the last event before acting on a burst.
const DEBOUNCE: Duration = Duration::from_millis(50);
/// Longest a burst may delay a reload.
const MAX_DELAY: Duration = Duration::from_millis(500);

/// Is a file being written in place (or truncated)? A served file must
/// not be: its mapping shows every write.
fn written(kind: &EventKind) -> bool {
    matches!(kind, EventKind::Modify(ModifyKind::Data(_)))
}

/// Does this event mean a file may now hold a complete new snapshot?
fn relevant(kind: &EventKind) -> bool {
    match kind {
        // A rename into place: how snapshots are meant to be replaced.
        EventKind::Modify(ModifyKind::Name(_)) => true,
        // A file written in place was closed: it is complete now.
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        // inotify reports renames and close-after-write above; elsewhere a
        // rename may show up only as a creation.
        EventKind::Create(_) => !cfg!(target_os = "linux"),
        _ => false,
    }
}

/// The watcher and the folders it watches; kept alive by the server.
pub(crate) struct Watching {
    watcher: RecommendedWatcher,
    folders: BTreeSet<PathBuf>,
}

impl Watching {
    /// Watch every folder the catalog now serves from (a layered folder
    /// added since start brings its own).
    fn sync(&mut self, shared: &Shared) {
        for dir in shared.catalog.watched_folders() {
            if self.folders.contains(&dir) {
                continue;
            }
            match self.watcher.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    tracing::info!(folder = %dir.display(), "watching for new snapshots");
                    self.folders.insert(dir);
                }
                Err(e) => tracing::warn!(folder = %dir.display(), error = %e, "cannot watch"),
            }
        }
    }
}

/// Start watching the catalog's folders. The returned watcher must be kept
/// alive; the task ends when `shutdown` turns true.
pub(crate) fn start(
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) -> notify::Result<Arc<Mutex<Watching>>> {
    let (tx, mut rx) = mpsc::unbounded_channel::<PathBuf>();
    let on_write = Arc::clone(&shared);
    let mut watcher =
        notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            // Acted on at once, not debounced: until the writer closes the
            // file, searches would read whatever it has written so far.
            Ok(event) if written(&event.kind) => {
                for path in &event.paths {
                    reload::file_modified(&on_write, path);
                }
            }
            Ok(event) if relevant(&event.kind) => {
                for path in event.paths {
                    // The receiver is gone only after shutdown.
                    let _ = tx.send(path);
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "folder watcher error"),
        })?;
    let folders: BTreeSet<PathBuf> = shared.catalog.watched_folders().into_iter().collect();
    for dir in &folders {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
        tracing::info!(folder = %dir.display(), "watching for new snapshots");
    }
    let watching = Arc::new(Mutex::new(Watching { watcher, folders }));
    let kept = Arc::clone(&watching);
    tokio::spawn(async move {
        loop {
            let first = tokio::select! {
                p = rx.recv() => match p { Some(p) => p, None => return },
                _ = stopped(&mut shutdown) => return,
            };
            let mut paths = BTreeSet::from([first]);
            let until = tokio::time::Instant::now() + MAX_DELAY;
            loop {
                let wait = tokio::time::Instant::now() + DEBOUNCE;
                match tokio::time::timeout_at(wait.min(until), rx.recv()).await {
                    Ok(Some(p)) => {
                        paths.insert(p);
                    }
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            // Not awaited: a reload stuck on a hung file must not keep the
            // watcher from the next change. The catalog runs one reload per
            // index at a time, and a change seen meanwhile is looked at
            // again when it ends.
            let (shared, watching) = (Arc::clone(&shared), Arc::clone(&watching));
            let reloads = reload::off_runtime(move || {
                for p in &paths {
                    reload::file_changed(&shared, p);
                }
                watching
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .sync(&shared);
            });
            tokio::spawn(async move {
                if let Err(e) = reloads.await {
                    tracing::error!(error = %e, "reload after a file change failed");
                }
            });
        }
    });
    Ok(kept)
}

//! Reloads from every trigger (the `Reload` RPC, SIGHUP, the folder
//! watcher) go through here, so each gets one log line and its metrics.
//! These functions block (they open and verify files): call them through
//! [`off_runtime`].

use std::path::Path;
use std::sync::Arc;

use crate::catalog::{CatalogError, Loaded, Reloaded};
use crate::service::Shared;
use crate::status::RequestError;

/// Run `f` on a thread of its own and await its result. Opening a file can
/// block without end (a FIFO, a hung network file system); on a thread of
/// tokio's blocking pool that would also hold up the runtime's shutdown,
/// while a thread of its own is left behind when the process exits.
pub(crate) async fn off_runtime<T, F>(f: F) -> Result<T, RequestError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("fathom-reload".into())
        .spawn(move || {
            // The receiver is gone when the caller stopped waiting.
            let _ = tx.send(f());
        })
        .map_err(|e| RequestError::Internal(format!("cannot start a reload thread: {e}")))?;
    rx.await
        .map_err(|_| RequestError::Internal("the reload thread panicked".into()))
}

/// Reload one index, or every index when `name` is `None`.
pub(crate) fn reload(
    shared: &Shared,
    name: Option<&str>,
    trigger: &str,
) -> Vec<(String, Result<Arc<Loaded>, CatalogError>)> {
    let outcomes = match name {
        Some(n) => vec![(n.to_string(), shared.catalog.reload(n))],
        None => shared.catalog.reload_all(),
    };
    for (name, outcome) in &outcomes {
        record(shared, name, trigger, outcome.as_ref().map(Arc::as_ref));
    }
    outcomes
}

/// The folder watcher saw `path` change: reload or add the index it backs.
pub(crate) fn file_changed(shared: &Shared, path: &Path) {
    let known = shared.catalog.names();
    match shared.catalog.file_changed(path) {
        None => tracing::debug!(path = %path.display(), "change concerns no index"),
        Some((name, Ok(Reloaded::Unchanged))) => {
            tracing::debug!(index = %name, path = %path.display(), "file unchanged; not reloaded");
        }
        Some((name, Ok(Reloaded::Swapped(loaded)))) if !known.contains(&name) => {
            log_loaded(&name, "watch", &loaded, "new index added");
            shared.metrics.index_loaded(&name, &loaded);
        }
        Some((name, Ok(Reloaded::Swapped(loaded)))) => record(shared, &name, "watch", Ok(&loaded)),
        Some((name, Err(e @ CatalogError::ReloadRunning { .. }))) => {
            tracing::info!(index = %name, path = %path.display(), reason = %e, "the running reload will look at the file again when it ends");
        }
        Some((name, Err(e))) => record(shared, &name, "watch", Err(&e)),
    }
}

/// The watcher saw a write to `path`: withdraw the mapped snapshot it backs
/// (see `Catalog::file_modified`). Cheap, and called on the watcher's thread.
pub(crate) fn file_modified(shared: &Shared, path: &Path) {
    if let Some(name) = shared.catalog.file_modified(path) {
        tracing::warn!(
            index = %name,
            path = %path.display(),
            "snapshot file is being modified in place; the index answers DATA_LOSS until a \
             valid file is loaded (replace snapshots by writing elsewhere and renaming)"
        );
    }
}

fn record(shared: &Shared, name: &str, trigger: &str, outcome: Result<&Loaded, &CatalogError>) {
    match outcome {
        Ok(loaded) => {
            log_loaded(name, trigger, loaded, "reloaded");
            shared.metrics.reloaded(name, loaded);
        }
        // Not a refused snapshot: a reload call that found another running.
        Err(e @ CatalogError::ReloadRunning { .. }) => {
            tracing::warn!(index = %name, trigger, error = %e, "reload not started");
        }
        Err(e) => {
            tracing::warn!(index = %name, trigger, error = %e, "reload refused; the previous snapshot keeps serving");
            shared.metrics.reload_failed(name);
        }
    }
}

/// One line per loaded snapshot: what it is and where it came from.
pub(crate) fn log_loaded(name: &str, trigger: &str, loaded: &Loaded, what: &str) {
    let served = loaded.searchable();
    let snap = served.base().snapshot();
    let m = snap.manifest();
    tracing::info!(
        index = %name,
        trigger,
        count = served.live(),
        layers = served.parts().count(),
        dim = snap.dim(),
        metric = %snap.metric(),
        storage = %snap.storage(),
        format = snap.format_version(),
        built_at = m.build.built_at,
        bytes = served.file_bytes(),
        load = %snap.load_mode(),
        path = %snap.path().display(),
        "{what}"
    );
}

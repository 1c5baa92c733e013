//! `fathom.Layered`: a layered folder (a base, deltas and deletions) that
//! takes additions and deletions from Python, searched as an `Index`. Each
//! change is durable when its call returns, and the open set is refreshed
//! then (reusing the layers that did not change).

use std::path::{Path, PathBuf};

use fathom_engine::index::Index as EngineIndex;
use fathom_engine::layers::searchable::Searchable;
use fathom_engine::layers::{self, publish};
use fathom_engine::snapshot::OpenOptions;
use pyo3::prelude::*;

use crate::dataset::dataset;
use crate::errors::{engine, invalid};
use crate::index::{count, open_options, Index, Opened};
use crate::{arrays, batch};

/// A layered index folder, open for search (every ``Index`` call) and for
/// change: ``add`` builds a delta, ``delete`` records deletions, and
/// ``compact`` folds everything into a new base.
#[pyclass(module = "fathom", extends = Index, frozen)]
pub struct Layered {
    dir: PathBuf,
}

impl Layered {
    pub fn open(
        py: Python<'_>,
        dir: &Path,
        options: OpenOptions,
    ) -> PyResult<PyClassInitializer<Layered>> {
        if !layers::is_layered(dir) {
            return Err(invalid(format!(
                "{} is not a layered index folder (make one with fathom.build(\"{}/\", ...))",
                dir.display(),
                dir.display()
            )));
        }
        let index = Index::open(py, dir, options)?;
        Ok(PyClassInitializer::from(index).add_subclass(Layered {
            dir: dir.to_path_buf(),
        }))
    }
}

/// Reopen `index`'s folder after a change, reusing its open layers.
fn refresh(py: Python<'_>, index: &Index, dir: &Path) -> PyResult<()> {
    let current = index.current();
    let options = index.options;
    let layered = py
        .detach(|| {
            layers::Layered::open_reusing_with(dir, current.target.layered(), &|p| {
                EngineIndex::open_with(p, &options)
            })
        })
        .map_err(engine)?;
    index.replace(Opened {
        target: Searchable::Layered(layered),
        name: current.name.clone(),
    });
    Ok(())
}

#[pymethods]
impl Layered {
    /// Open the layered folder at ``path`` (see ``fathom.Index`` for
    /// ``load``).
    #[new]
    #[pyo3(signature = (path, load = "mmap"))]
    fn new(py: Python<'_>, path: PathBuf, load: &str) -> PyResult<PyClassInitializer<Layered>> {
        Layered::open(py, &path, open_options(load)?)
    }

    /// Add ``vectors`` with their ``ids`` (and ``attributes``) as a delta
    /// layer, built like the base (its metric, storage and graph
    /// settings). An id the folder already holds is replaced. Small deltas
    /// are merged into one. Returns the new layer's file name.
    #[pyo3(signature = (vectors, ids, attributes = None, threads = None))]
    fn add(
        slf: PyRef<'_, Self>,
        py: Python<'_>,
        vectors: &Bound<'_, PyAny>,
        ids: &Bound<'_, PyAny>,
        attributes: Option<&Bound<'_, PyAny>>,
        threads: Option<i64>,
    ) -> PyResult<String> {
        let ds = dataset(vectors, Some(ids), attributes)?;
        let threads = threads.map(|t| count("threads", t)).transpose()?;
        let threads = batch::threads_for(threads, usize::MAX).map_err(engine)?;
        let dir = slf.dir.clone();
        let added = py
            .detach(|| publish::build_delta(&dir, ds, threads))
            .map_err(engine)?;
        refresh(py, slf.as_super(), &dir)?;
        Ok(added.name)
    }

    /// Delete ``ids``: durable when this returns, and gone from searches
    /// at once. Ids the folder does not hold are ignored. Returns how many
    /// were deleted.
    fn delete(slf: PyRef<'_, Self>, py: Python<'_>, ids: &Bound<'_, PyAny>) -> PyResult<usize> {
        let ids = arrays::ids(ids, "ids")?;
        let dir = slf.dir.clone();
        let current = slf.as_super().current();
        let deleted = py
            .detach(|| layers::delete(&dir, &ids, current.target.layered()))
            .map_err(engine)?;
        refresh(py, slf.as_super(), &dir)?;
        Ok(deleted.deleted.len())
    }

    /// Fold every live item into one new base, rebuilt like the old one,
    /// and drop the old layers and deletions.
    #[pyo3(signature = (threads = None))]
    fn compact(slf: PyRef<'_, Self>, py: Python<'_>, threads: Option<i64>) -> PyResult<()> {
        let threads = threads.map(|t| count("threads", t)).transpose()?;
        let threads = batch::threads_for(threads, usize::MAX).map_err(engine)?;
        let dir = slf.dir.clone();
        py.detach(|| layers::compact_build(&dir, threads))
            .map_err(engine)?;
        refresh(py, slf.as_super(), &dir)
    }

    /// The layer files, base first.
    #[getter]
    fn layers(slf: PyRef<'_, Self>) -> Vec<String> {
        let current = slf.as_super().current();
        current
            .target
            .layered()
            .map(|l| l.manifest.layers.clone())
            .unwrap_or_default()
    }
}

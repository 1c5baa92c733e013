//! `fathom.build`: a snapshot (or a new layered folder) from numpy.

use std::path::{Path, PathBuf};

use fathom_engine::builder::{build as build_index, BuildOptions};
use fathom_engine::layers::publish;
use fathom_engine::snapshot::{check_output_dir, OpenOptions};
use fathom_engine::{Metric, Storage};
use pyo3::prelude::*;

use crate::errors::{engine, invalid};
use crate::index::{count, Index};
use crate::layered::Layered;
use crate::table;
use fathom_engine::formats::Columns;

/// Build an index of ``vectors`` (an ``(n, dim)`` array, float32 or
/// anything numpy converts) and write it to ``path``; returns it open.
///
/// ``ids`` are ``str`` (or ``int``) ids, one per row; ``None`` names the
/// rows ``"0"`` to ``"n-1"``. ``attributes`` is one dict per row (or
/// ``None``), with the types of the ``.jsonl`` attributes: str keywords,
/// bools, ints, floats and lists of str.
///
/// ``vectors`` may instead be a table (a ``pyarrow.Table``, or anything
/// with ``__arrow_c_stream__``) or the path of an input file (``.parquet``
/// or a folder of them, ``.fvecs``, ``.npy``, ``.jsonl``), which carries
/// its own ids and attributes: ``vector_column`` names the column of
/// vectors (default: the one column of lists of floats), ``id_column`` the
/// ids' (default ``"id"``), and ``attribute_columns`` those kept as
/// attributes (default: every other column). ``metric`` is ``"cosine"``,
/// ``"dot"`` or ``"l2"``; ``storage`` is ``"f32"``, ``"bf16"`` or
/// ``"i8"`` (traversal vectors; exact ones are kept for re-ranking).
/// ``m`` and ``ef_construction`` are the HNSW degree and construction beam;
/// ``threads`` builds on that many threads (``None``: every core).
/// ``value_graphs`` names keyword, keywords or bool fields whose values
/// held by 2,000 items up to half the index get graphs of their own, which
/// filters requiring such a value walk.
///
/// A ``path`` ending in ``/`` (or naming a folder) makes a new layered
/// folder and returns a ``fathom.Layered``; otherwise a snapshot file is
/// written (atomically: a temporary file renamed into place) and a
/// ``fathom.Index`` returned.
#[pyfunction]
#[pyo3(signature = (path, vectors, ids = None, metric = "cosine", storage = "f32", m = 16,
                    ef_construction = 200, attributes = None, threads = None, seed = 42,
                    vector_column = None, id_column = None, attribute_columns = None,
                    value_graphs = None))]
#[allow(clippy::too_many_arguments)]
pub fn build(
    py: Python<'_>,
    path: PathBuf,
    vectors: &Bound<'_, PyAny>,
    ids: Option<&Bound<'_, PyAny>>,
    metric: &str,
    storage: &str,
    m: i64,
    ef_construction: i64,
    attributes: Option<&Bound<'_, PyAny>>,
    threads: Option<i64>,
    seed: u64,
    vector_column: Option<String>,
    id_column: Option<String>,
    attribute_columns: Option<Vec<String>>,
    value_graphs: Option<Vec<String>>,
) -> PyResult<Py<PyAny>> {
    let defaults = BuildOptions::default();
    let options = BuildOptions {
        metric: metric.parse::<Metric>().map_err(invalid)?,
        storage: storage.parse::<Storage>().map_err(invalid)?,
        m: count("m", m)?,
        ef_construction: count("ef_construction", ef_construction)?,
        threads: match threads {
            Some(t) if t < 1 => {
                return Err(invalid(format!(
                    "threads must be at least 1 (or None for every core), got {t}"
                )))
            }
            Some(t) => t as usize,
            None => defaults.threads,
        },
        seed,
        value_graphs: value_graphs.unwrap_or_default(),
        ..defaults
    };
    let columns = Columns {
        vector: vector_column,
        id: id_column,
        attributes: attribute_columns,
    };
    let ds = table::input(vectors, ids, attributes, &columns)?;
    let folder = path.is_dir() || path.as_os_str().to_string_lossy().ends_with('/');
    if folder {
        py.detach(|| publish::build_new_folder(&path, ds, &options))
            .map_err(engine)?;
        let layered = Layered::open(py, &path, OpenOptions::default())?;
        return Ok(Py::new(py, layered)?.into_any());
    }
    py.detach(|| write_snapshot(&path, ds, &options))
        .map_err(engine)?;
    Ok(Py::new(py, Index::open(py, &path, OpenOptions::default())?)?.into_any())
}

fn write_snapshot(
    path: &Path,
    ds: fathom_engine::builder::Dataset,
    options: &BuildOptions,
) -> fathom_engine::Result<()> {
    check_output_dir(path)?;
    let built = build_index(ds, Path::new("vectors"), options, &|_, _| {})?;
    built.write(path, "numpy")?;
    Ok(())
}

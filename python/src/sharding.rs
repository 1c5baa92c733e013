//! Sharded folders from Python, for builds that run shard by shard
//! elsewhere (`python -m fathom.ray`): the key placement, k-means
//! centroids, `shards.json`, and a sharded folder's deltas.

use std::path::PathBuf;

use fathom_engine::builder::BuildOptions;
use fathom_engine::formats::Columns;
use fathom_engine::shards::{self, Centroids, KmeansOptions, Partition};
use fathom_engine::Metric;
use numpy::{IntoPyArray, PyArray1, PyArray2};
use pyo3::prelude::*;

use crate::arrays::Rows;
use crate::errors::{engine, invalid};
use crate::table;

/// The shard of each id among ``shards``: ``xxh3_64(id's UTF-8 bytes,
/// seed 0) mod shards``, as ``fathom build --shards`` places items.
#[pyfunction]
pub fn shard_of<'py>(
    py: Python<'py>,
    ids: &Bound<'py, PyAny>,
    shards: u32,
) -> PyResult<Bound<'py, PyArray1<u32>>> {
    if shards == 0 {
        return Err(invalid("shards must be at least 1"));
    }
    let ids = crate::arrays::ids(ids, "ids")?;
    let out: Vec<u32> = ids.iter().map(|id| shards::shard_of(id, shards)).collect();
    Ok(out.into_pyarray(py))
}

/// ``clusters`` k-means centroids of ``vectors`` (trained on a sample of
/// them), as ``fathom build --partition kmeans`` trains them: an
/// ``(clusters, dim)`` float32 array in the metric's space.
#[pyfunction]
#[pyo3(signature = (vectors, clusters, metric = "cosine", seed = 42))]
pub fn train_kmeans<'py>(
    py: Python<'py>,
    vectors: &Bound<'py, PyAny>,
    clusters: usize,
    metric: &str,
    seed: u64,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let metric: Metric = metric.parse().map_err(invalid)?;
    let rows = Rows::extract(vectors, "vectors")?;
    finite(&rows, "vectors")?;
    if clusters == 0 || clusters > rows.n {
        return Err(invalid(format!(
            "clusters must be within 1 and the {} vectors, got {clusters}",
            rows.n
        )));
    }
    let values = rows.values();
    let dim = rows.dim;
    let options = KmeansOptions {
        seed,
        ..KmeansOptions::new(clusters)
    };
    let c = py.detach(|| shards::kmeans::train(&values, dim, metric, &options));
    let out = numpy::ndarray::Array2::from_shape_vec((c.len(), dim), c.rows)
        .map_err(|e| invalid(e.to_string()))?;
    Ok(out.into_pyarray(py))
}

/// Vectors and centroids checked against each other (finite, the same
/// dimension, at least one centroid), the centroids under `metric`.
fn kmeans_inputs<'py>(
    vectors: &Bound<'py, PyAny>,
    centroids: &Bound<'py, PyAny>,
    metric: &str,
) -> PyResult<(Rows<'py>, Centroids)> {
    let metric: Metric = metric.parse().map_err(invalid)?;
    let rows = Rows::extract(vectors, "vectors")?;
    let c = Rows::extract(centroids, "centroids")?;
    finite(&rows, "vectors")?;
    finite(&c, "centroids")?;
    if c.dim != rows.dim || c.n == 0 {
        return Err(invalid(format!(
            "centroids must be (N, {}), got ({}, {})",
            rows.dim, c.n, c.dim
        )));
    }
    let centroids = Centroids {
        dim: c.dim,
        metric,
        rows: c.values().into_owned(),
    };
    Ok((rows, centroids))
}

/// The shard of each of ``vectors`` among ``centroids`` (an ``(N, dim)``
/// array from ``train_kmeans``): its nearest centroid with room, no shard
/// taking more than ``(1 + balance) × n / N`` of these vectors, as
/// ``fathom build --partition kmeans`` places items.
#[pyfunction]
#[pyo3(signature = (vectors, centroids, metric = "cosine", balance = 0.1))]
pub fn assign_kmeans<'py>(
    py: Python<'py>,
    vectors: &Bound<'py, PyAny>,
    centroids: &Bound<'py, PyAny>,
    metric: &str,
    balance: f32,
) -> PyResult<Bound<'py, PyArray1<u32>>> {
    let (rows, centroids) = kmeans_inputs(vectors, centroids, metric)?;
    if !(0.0..=10.0).contains(&balance) {
        return Err(invalid(format!(
            "balance must be within 0 and 10, got {balance}"
        )));
    }
    let values = rows.values();
    let out = py.detach(|| shards::kmeans::assign_balanced(&values, &centroids, balance));
    Ok(out.into_pyarray(py))
}

/// Each vector's second shard under SPANN's closure (``fathom build
/// --closure``), or -1: the nearest other centroid within ``(1 + closure)``
/// times the distance to its own shard's (``shards``, as
/// ``assign_kmeans`` gave them).
#[pyfunction]
#[pyo3(signature = (vectors, centroids, shards, metric = "cosine", closure = 0.0))]
pub fn kmeans_copies<'py>(
    py: Python<'py>,
    vectors: &Bound<'py, PyAny>,
    centroids: &Bound<'py, PyAny>,
    shards: Vec<u32>,
    metric: &str,
    closure: f32,
) -> PyResult<Bound<'py, PyArray1<i64>>> {
    let (rows, centroids) = kmeans_inputs(vectors, centroids, metric)?;
    if shards.len() != rows.n {
        return Err(invalid(format!(
            "shards must be one per vector: {} for {}",
            shards.len(),
            rows.n
        )));
    }
    if !(closure.is_finite() && (0.0..=10.0).contains(&closure)) {
        return Err(invalid(format!(
            "closure must be within 0 and 10, got {closure}"
        )));
    }
    if let Some(bad) = shards.iter().find(|&&s| s as usize >= centroids.len()) {
        return Err(invalid(format!(
            "shard {bad} of {} centroids",
            centroids.len()
        )));
    }
    let values = rows.values();
    let out = py.detach(|| shards::kmeans::second_choices(&values, &centroids, &shards, closure));
    let out: Vec<i64> = out.into_iter().map(|c| c.map_or(-1, i64::from)).collect();
    Ok(out.into_pyarray(py))
}

/// Write ``DIR/shards.json`` for the ``shards`` layered folders already
/// built in ``DIR`` (``shard-0000`` …): counts and checksums, the metric
/// and storage they were built with, and the centroids (an ``(shards,
/// dim)`` array) when items were placed by them, with the ``closure``
/// their copies were placed by.
#[pyfunction]
#[pyo3(signature = (dir, shards, centroids = None, closure = 0.0))]
pub fn finish_sharded(
    py: Python<'_>,
    dir: PathBuf,
    shards: u32,
    centroids: Option<&Bound<'_, PyAny>>,
    closure: f32,
) -> PyResult<()> {
    if shards == 0 || shards > shards::MAX_SHARDS {
        return Err(invalid(format!(
            "shards must be within 1 and {}, got {shards}",
            shards::MAX_SHARDS
        )));
    }
    let first = dir.join(shards::shard_dir_name(0));
    let opened = py
        .detach(|| fathom_engine::searchable::Searchable::open(&first, &Default::default()))
        .map_err(engine)?;
    let base = opened.base().snapshot();
    let dim = base.dim();
    let options = BuildOptions {
        metric: base.metric(),
        storage: base.storage(),
        ..BuildOptions::default()
    };
    let partition = match centroids {
        None => Partition::Hash,
        Some(c) => {
            let rows = Rows::extract(c, "centroids")?;
            finite(&rows, "centroids")?;
            if rows.n != shards as usize || rows.dim != dim {
                return Err(invalid(format!(
                    "centroids must be ({shards}, {dim}), got ({}, {})",
                    rows.n, rows.dim
                )));
            }
            Partition::Kmeans(Centroids {
                dim,
                metric: options.metric,
                rows: rows.values().into_owned(),
            })
        }
    };
    if closure != 0.0 && centroids.is_none() {
        return Err(invalid("a closure needs centroids"));
    }
    py.detach(|| shards::finish_sharded(&dir, shards, &partition, closure, &options, dim as u32))
        .map_err(engine)?;
    Ok(())
}

/// Add items to the sharded folder ``dir``, each as a delta of its shard
/// (by key, or by nearest centroid, moving ids given new vectors).
/// ``vectors`` is as for ``fathom.build``: an array with ``ids`` and
/// ``attributes``, or a table or input file with its columns named.
/// Returns the shards that took a delta.
#[pyfunction]
#[pyo3(signature = (dir, vectors, ids = None, attributes = None, threads = None,
                    vector_column = None, id_column = None, attribute_columns = None))]
#[allow(clippy::too_many_arguments)]
pub fn add_sharded_delta(
    py: Python<'_>,
    dir: PathBuf,
    vectors: &Bound<'_, PyAny>,
    ids: Option<&Bound<'_, PyAny>>,
    attributes: Option<&Bound<'_, PyAny>>,
    threads: Option<usize>,
    vector_column: Option<String>,
    id_column: Option<String>,
    attribute_columns: Option<Vec<String>>,
) -> PyResult<Vec<u32>> {
    let columns = Columns {
        vector: vector_column,
        id: id_column,
        attributes: attribute_columns,
    };
    let ds = table::input(vectors, ids, attributes, &columns)?;
    let threads = threads.unwrap_or(BuildOptions::default().threads).max(1);
    let added = py
        .detach(|| shards::add_delta(&dir, ds, threads))
        .map_err(engine)?;
    Ok(added.into_iter().map(|(shard, _)| shard).collect())
}

/// Refuse empty rows and NaN or infinite values, which k-means cannot
/// place (and `shards.json` cannot keep).
fn finite(rows: &Rows<'_>, what: &str) -> PyResult<()> {
    if rows.dim == 0 {
        return Err(invalid(format!("{what} must have at least one dimension")));
    }
    if rows.values().iter().any(|x| !x.is_finite()) {
        return Err(invalid(format!("{what} hold NaN or infinite values")));
    }
    Ok(())
}

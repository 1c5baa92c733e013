//! `fathom._fathom`, the compiled part of the `fathom` Python package: the
//! engine in process (`Index`, `Layered`, `build`, federated `search`) and
//! the server's client (`Client`). The package's `__init__.py` re-exports
//! these; its stubs are in `fathom/_fathom.pyi`.

mod arrays;
mod batch;
mod build;
mod client;
mod dataset;
mod errors;
mod index;
mod layered;
mod query;
mod sharding;
mod table;

use numpy::prelude::*;
use pyo3::prelude::*;

use crate::index::{search_opened, Index, SearchArgs};

/// Search several indexes as one (a page of tracks and episodes): each
/// query's hits from all of them merged by distance, each index getting
/// at least ``min_per_index`` of the ``k`` when it has them. The indexes
/// must share dimension and metric; ``filter`` applies to each.
///
/// Returns ``(ids, distances, indexes)``, shaped as ``Index.search``
/// shapes its two, where ``indexes`` gives each hit's index as its
/// position in ``indexes`` (``-1`` where padded).
#[pyfunction]
#[pyo3(signature = (indexes, queries, k = 10, ef = None, filter = None, exclude_ids = None,
                    min_per_index = 0, threads = None))]
#[allow(clippy::too_many_arguments)]
fn search<'py>(
    py: Python<'py>,
    indexes: Vec<PyRef<'py, Index>>,
    queries: &Bound<'py, PyAny>,
    k: i64,
    ef: Option<i64>,
    filter: Option<&str>,
    exclude_ids: Option<&Bound<'py, PyAny>>,
    min_per_index: i64,
    threads: Option<i64>,
) -> PyResult<Bound<'py, PyAny>> {
    if indexes.is_empty() {
        return Err(errors::invalid("search at least one index"));
    }
    let mut args = SearchArgs::new(k, ef, filter, exclude_ids, threads)?;
    args.min_per_index = index::count("min_per_index", min_per_index)?;
    let opened: Vec<_> = indexes.iter().map(|i| i.current()).collect();
    let (hits, single) = search_opened(py, &opened, queries, &args)?;
    let parts = query::parts(&opened);
    let owners: Vec<i32> = hits
        .source
        .iter()
        .map(|s| match *s {
            arrays::EMPTY => -1,
            s => parts[s as usize].0 as i32,
        })
        .collect();
    let (ids, distances) = hits.into_python(py, single, |s, node| parts[s as usize].1.id(node))?;
    let owners = if single {
        let found = owners.iter().take_while(|o| **o >= 0).count();
        numpy::PyArray1::from_slice(py, &owners[..found]).into_any()
    } else {
        numpy::PyArray1::from_vec(py, owners)
            .reshape([distances.len()?, args.k])?
            .into_any()
    };
    Ok((ids, distances, owners).into_pyobject(py)?.into_any())
}

#[pymodule]
fn _fathom(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Index>()?;
    m.add_class::<layered::Layered>()?;
    m.add_class::<client::Client>()?;
    m.add_function(wrap_pyfunction!(build::build, m)?)?;
    m.add_function(wrap_pyfunction!(search, m)?)?;
    m.add_function(wrap_pyfunction!(sharding::shard_of, m)?)?;
    m.add_function(wrap_pyfunction!(sharding::train_kmeans, m)?)?;
    m.add_function(wrap_pyfunction!(sharding::assign_kmeans, m)?)?;
    m.add_function(wrap_pyfunction!(sharding::kmeans_copies, m)?)?;
    m.add_function(wrap_pyfunction!(sharding::finish_sharded, m)?)?;
    m.add_function(wrap_pyfunction!(sharding::add_sharded_delta, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}

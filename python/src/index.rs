//! `fathom.Index`: an open snapshot or layered folder, searched in process
//! from any number of Python threads. Every call into the engine releases
//! the GIL.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use fathom_engine::layers::searchable::Searchable;
use fathom_engine::recommend::Strategy;
use fathom_engine::retrieve::Call;
use fathom_engine::snapshot::{LoadMode, OpenOptions};
use fathom_engine::SearchParams;
use numpy::IntoPyArray;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

use crate::arrays::{self, Hits, Rows};
use crate::errors::{engine, engine_at, invalid};
use crate::{batch, query};

/// What an `Index` has open: a snapshot or a layered folder.
pub struct Opened {
    pub target: Searchable,
    /// The path, as given: names the index in messages.
    pub name: String,
}

/// An open fathom index: a snapshot file or a layered folder. Safe to share
/// between threads; searches run without the GIL.
#[pyclass(module = "fathom", subclass, frozen)]
pub struct Index {
    opened: RwLock<Arc<Opened>>,
    pub(crate) options: OpenOptions,
}

/// A non-negative count argument (k, ef, threads, ...), as `usize`.
pub fn count(name: &str, v: i64) -> PyResult<usize> {
    usize::try_from(v).map_err(|_| invalid(format!("{name} must not be negative, got {v}")))
}

/// `load=`: how a snapshot's bytes are held.
pub fn open_options(load: &str) -> PyResult<OpenOptions> {
    let load = match load {
        "mmap" => LoadMode::Mmap,
        "memory" => LoadMode::Memory,
        other => {
            return Err(invalid(format!(
                "unknown load {other:?} (expected \"mmap\" or \"memory\")"
            )))
        }
    };
    Ok(OpenOptions {
        load,
        preload: false,
    })
}

impl Index {
    pub fn open(py: Python<'_>, path: &Path, options: OpenOptions) -> PyResult<Index> {
        let target = py
            .detach(|| Searchable::open(path, &options))
            .map_err(engine)?;
        Ok(Index {
            opened: RwLock::new(Arc::new(Opened {
                target,
                name: path.display().to_string(),
            })),
            options,
        })
    }

    /// What is open now (a layered index's set changes as it is written).
    pub fn current(&self) -> Arc<Opened> {
        self.opened
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn replace(&self, opened: Opened) {
        *self.opened.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(opened);
    }
}

/// The arguments every search takes, checked.
pub struct SearchArgs<'a> {
    pub k: usize,
    pub ef: usize,
    pub filter: Option<&'a str>,
    pub exclude_ids: Vec<String>,
    pub threads: Option<usize>,
    pub min_per_index: usize,
    /// A folder of shards placed by kmeans: the shards searched first.
    pub probe: usize,
}

impl<'a> SearchArgs<'a> {
    pub fn new(
        k: i64,
        ef: Option<i64>,
        filter: Option<&'a str>,
        exclude_ids: Option<&Bound<'_, PyAny>>,
        threads: Option<i64>,
    ) -> PyResult<SearchArgs<'a>> {
        Ok(SearchArgs {
            k: count("k", k)?,
            ef: ef.map(|ef| count("ef", ef)).transpose()?.unwrap_or(0),
            filter: filter.filter(|f| !f.trim().is_empty()),
            exclude_ids: match exclude_ids {
                Some(ids) => arrays::ids(ids, "exclude_ids")?,
                None => Vec::new(),
            },
            threads: threads.map(|t| count("threads", t)).transpose()?,
            min_per_index: 0,
            probe: 0,
        })
    }
}

/// Search `queries` over `opened` (one index, or several federated): the
/// hits, whether the input was one query, and the parts hits are numbered
/// by (see [`query::parts`]).
pub fn search_opened<'py>(
    py: Python<'py>,
    opened: &[Arc<Opened>],
    queries: &Bound<'py, PyAny>,
    args: &SearchArgs<'_>,
) -> PyResult<(Hits, bool)> {
    let rows = Rows::extract(queries, "queries")?;
    let values = rows.values();
    let threads = batch::threads_for(args.threads, rows.n).map_err(engine)?;
    let request = query::Request {
        params: SearchParams::new(args.k, args.ef),
        filter: args.filter,
        exclude_ids: &args.exclude_ids,
        min_per_index: args.min_per_index,
        probe: args.probe,
    };
    let values: &[f32] = &values;
    let hits = py
        .detach(|| query::search(opened, values, (rows.n, rows.dim), &request, threads))
        .map_err(|(q, e)| engine_at(e, q))?;
    Ok((hits, rows.single))
}

/// Positive or negative examples: ids (`str`) and vectors (anything else).
pub(crate) struct Examples {
    pub ids: Vec<String>,
    pub vectors: Vec<Vec<f32>>,
}

impl Examples {
    pub(crate) fn extract(obj: Option<&Bound<'_, PyAny>>, what: &str) -> PyResult<Examples> {
        let mut out = Examples {
            ids: Vec::new(),
            vectors: Vec::new(),
        };
        let Some(obj) = obj else { return Ok(out) };
        if obj.is_instance_of::<PyString>() {
            return Err(invalid(format!(
                "{what} must be a sequence of ids and vectors, not one string"
            )));
        }
        let items = obj
            .try_iter()
            .map_err(|_| invalid(format!("{what} must be a sequence of ids and vectors")))?;
        for (i, item) in items.enumerate() {
            let item = item?;
            if let Ok(id) = item.cast::<PyString>() {
                out.ids.push(id.to_cow()?.into_owned());
                continue;
            }
            let rows = Rows::extract(&item, &format!("{what}[{i}]"))?;
            if !rows.single {
                return Err(invalid(format!("{what}[{i}] must be one vector (1-D)")));
            }
            out.vectors.push(rows.values().into_owned());
        }
        Ok(out)
    }
}

pub(crate) fn parse_strategy(name: &str) -> PyResult<Strategy> {
    name.replace('_', "-").parse::<Strategy>().map_err(|_| {
        invalid(format!(
            "unknown strategy {name:?} (expected \"average_vector\", \"best_score\" or \"sum_scores\")"
        ))
    })
}

/// A `dict` of a stored JSON object (an item's attributes).
pub fn json_object<'py>(py: Python<'py>, json: Option<&str>) -> PyResult<Bound<'py, PyAny>> {
    match json {
        Some(j) if !j.is_empty() => py.import("json")?.call_method1("loads", (j,)),
        _ => Ok(PyDict::new(py).into_any()),
    }
}

#[pymethods]
impl Index {
    /// Open a snapshot file or a layered folder. Opening maps the file and
    /// reads nothing else (O(1)); ``load="memory"`` copies it into memory
    /// instead, so that nothing done to the file later reaches the index.
    /// Raises ``fathom.SnapshotError`` when the file cannot be read.
    #[new]
    #[pyo3(signature = (path, load = "mmap"))]
    fn new(py: Python<'_>, path: PathBuf, load: &str) -> PyResult<Index> {
        Index::open(py, &path, open_options(load)?)
    }

    /// Items a search can return.
    fn __len__(&self) -> usize {
        self.current().target.live() as usize
    }

    /// The dimension of the vectors.
    #[getter]
    fn dim(&self) -> usize {
        self.current().target.base().snapshot().dim()
    }

    /// The distance: ``"cosine"``, ``"dot"`` or ``"l2"``.
    #[getter]
    fn metric(&self) -> &'static str {
        self.current().target.base().snapshot().metric().name()
    }

    /// How traversal vectors are stored: ``"f32"``, ``"bf16"`` or ``"i8"``.
    #[getter]
    fn storage(&self) -> &'static str {
        self.current().target.base().snapshot().storage().name()
    }

    /// The attribute fields filters can name, each with its kind
    /// (``"keyword"``, ``"bool"``, ``"int"``, ``"float"``, ...).
    #[getter]
    fn fields<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let opened = self.current();
        let dict = PyDict::new(py);
        if let Some(attributes) = opened.target.base().attributes() {
            for f in attributes.fields {
                dict.set_item(&f.name, f.kind().name())?;
            }
        }
        Ok(dict)
    }

    /// The path the index was opened from.
    #[getter]
    fn path(&self) -> String {
        self.current().name.clone()
    }

    fn __repr__(&self) -> String {
        let o = self.current();
        let s = o.target.base().snapshot();
        format!(
            "fathom.Index({:?}: {} items × {}, {}, {})",
            o.name,
            o.target.live(),
            s.dim(),
            s.metric().name(),
            s.storage().name()
        )
    }

    /// The ``k`` nearest items of each query.
    ///
    /// ``queries`` is one vector (1-D) or one per row (2-D), float32 or
    /// anything numpy converts. For 2-D input the answer is ``(ids,
    /// distances)``: an ``(n, k)`` object array of ``str`` ids padded with
    /// ``None``, and an ``(n, k)`` float32 array padded with ``inf``, where
    /// fewer than ``k`` items qualify. For 1-D input it is a list of up to
    /// ``k`` ids and a 1-D array.
    ///
    /// ``ef`` is the beam width (``None``: the index's default; raised to
    /// ``k``). ``filter`` is an expression over the attributes, such as
    /// ``'markets = "SE" AND explicit = false'``: every hit matches it, and
    /// ``min(k, matching)`` come back. ``exclude_ids`` are never returned
    /// (ids the index lacks are ignored), and ``k`` hits still come back
    /// when that many others qualify. ``threads`` runs a batch on a pool:
    /// ``None`` is every core, ``1`` the calling thread. ``probe``, for a
    /// folder of shards placed by kmeans, searches the ``probe`` shards
    /// nearest each query (more while a filter leaves fewer than ``k``
    /// hits there); ``0`` searches every shard.
    #[pyo3(signature = (queries, k = 10, ef = None, filter = None, exclude_ids = None, threads = None, probe = 0))]
    #[allow(clippy::too_many_arguments)]
    fn search<'py>(
        &self,
        py: Python<'py>,
        queries: &Bound<'py, PyAny>,
        k: i64,
        ef: Option<i64>,
        filter: Option<&str>,
        exclude_ids: Option<&Bound<'py, PyAny>>,
        threads: Option<i64>,
        probe: usize,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        let mut args = SearchArgs::new(k, ef, filter, exclude_ids, threads)?;
        args.probe = probe;
        let opened = [self.current()];
        let (hits, single) = search_opened(py, &opened, queries, &args)?;
        let parts = query::parts(&opened);
        hits.into_python(py, single, |s, node| parts[s as usize].1.id(node))
    }

    /// The stored vectors (an ``(n, dim)`` float32 array, normalized under
    /// cosine) and attributes (a list of dicts) of ``ids``, in order.
    /// Raises ``fathom.UnknownItemError`` naming an id the index lacks.
    fn get<'py>(
        &self,
        py: Python<'py>,
        ids: &Bound<'py, PyAny>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyList>)> {
        let ids = arrays::ids(ids, "ids")?;
        let opened = self.current();
        let dim = opened.target.base().snapshot().dim();
        let mut vectors = Vec::with_capacity(ids.len() * dim);
        let attributes = PyList::empty(py);
        for id in &ids {
            let (index, node) = opened
                .target
                .find(id)
                .ok_or_else(|| engine(fathom_engine::Error::UnknownItem(id.clone())))?;
            vectors.extend_from_slice(index.snapshot().vectors_f32().row(node));
            attributes.append(json_object(py, index.node_attributes_json(node))?)?;
        }
        let array = numpy::ndarray::Array2::from_shape_vec((ids.len(), dim), vectors)
            .map_err(|e| invalid(e.to_string()))?;
        Ok((array.into_pyarray(py).into_any(), attributes))
    }

    /// Items like the ``positive`` examples and unlike the ``negative``
    /// ones, as Qdrant's recommend: each example is a stored id (``str``)
    /// or a vector (a taste vector from a user model). Examples given by id
    /// are never returned; an unknown one raises
    /// ``fathom.UnknownItemError``.
    ///
    /// ``strategy`` is ``"average_vector"`` (search near the positives'
    /// mean, away from the negatives'), ``"best_score"`` or
    /// ``"sum_scores"``. ``diversity`` in [0, 1] turns on maximal marginal
    /// relevance over ``candidates`` hits (``None``: 4 k); ``group_by``
    /// with ``group_size`` keeps at most that many hits per value of a
    /// keyword field. Returns a list of up to ``k`` ids and their
    /// distances.
    #[pyo3(signature = (positive = None, negative = None, strategy = "average_vector",
                        exclude_ids = None, filter = None, diversity = None, candidates = None,
                        group_by = None, group_size = None, k = 10, ef = None))]
    #[allow(clippy::too_many_arguments)]
    fn recommend<'py>(
        &self,
        py: Python<'py>,
        positive: Option<&Bound<'py, PyAny>>,
        negative: Option<&Bound<'py, PyAny>>,
        strategy: &str,
        exclude_ids: Option<&Bound<'py, PyAny>>,
        filter: Option<&str>,
        diversity: Option<f32>,
        candidates: Option<i64>,
        group_by: Option<&str>,
        group_size: Option<i64>,
        k: i64,
        ef: Option<i64>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        let args = SearchArgs::new(k, ef, filter, exclude_ids, None)?;
        let positive = Examples::extract(positive, "positive")?;
        let negative = Examples::extract(negative, "negative")?;
        let strategy = parse_strategy(strategy)?;
        let candidates = candidates.map(|c| count("candidates", c)).transpose()?;
        let group_size = group_size.map(|g| count("group_size", g)).transpose()?;
        if group_by.is_some() != group_size.is_some() {
            return Err(invalid("group_by and group_size go together"));
        }
        let current = self.current();
        let call = Call {
            vector: &[],
            positive_ids: &positive.ids,
            negative_ids: &negative.ids,
            positive_vectors: positive.vectors.iter().map(Vec::as_slice).collect(),
            negative_vectors: negative.vectors.iter().map(Vec::as_slice).collect(),
            strategy,
            exclude_ids: &args.exclude_ids,
            exclude_keys: &[],
            params: SearchParams::new(args.k, args.ef),
            diversity: diversity.unwrap_or(0.0),
            candidates: candidates.unwrap_or(0),
            group_by: group_by.unwrap_or(""),
            group_size: group_size.unwrap_or(0),
            min_per_index: 0,
            distinct_ids: current.target.holds_copies(),
        };
        let opened = [current];
        let filter = args.filter;
        let hits = py
            .detach(|| query::retrieve_one(&opened, &call, filter))
            .map_err(engine)?;
        let parts = query::parts(&opened);
        hits.into_python(py, true, |s, node| parts[s as usize].1.id(node))
    }
}

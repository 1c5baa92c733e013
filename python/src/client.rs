//! `fathom.Client`: the Rust client of `fathom serve` (fathom-server's,
//! the one the CLI uses), with the shapes of `fathom.Index`. Calls block
//! the calling Python thread only: the GIL is released while they wait.

use std::path::PathBuf;
use std::time::Duration;

use fathom_engine::recommend::Strategy;
use fathom_server::client::{keys, Client as RustClient, ClientError, Security};
use fathom_server::proto as pb;
use numpy::IntoPyArray;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

use crate::arrays::{self, answer, Rows};
use crate::errors::{client as client_error, invalid};
use crate::index::{count, json_object, parse_strategy, Examples};

/// A connection to a ``fathom serve`` server. Safe to share between
/// threads; calls on one client share one HTTP/2 connection.
#[pyclass(module = "fathom", frozen)]
pub struct Client {
    runtime: tokio::runtime::Runtime,
    inner: RustClient,
}

/// `index=`: one name, or several for a federated call.
enum Names {
    One(String),
    Several(Vec<String>),
}

impl Names {
    fn extract(obj: &Bound<'_, PyAny>) -> PyResult<Names> {
        if let Ok(s) = obj.cast::<PyString>() {
            return Ok(Names::One(s.to_cow()?.into_owned()));
        }
        Ok(Names::Several(arrays::ids(obj, "index")?))
    }

    fn into_fields(self) -> (String, Vec<String>) {
        match self {
            Names::One(n) => (n, Vec::new()),
            Names::Several(v) => (String::new(), v),
        }
    }
}

fn wire_strategy(s: Strategy) -> i32 {
    match s {
        Strategy::AverageVector => pb::Strategy::AverageVector as i32,
        Strategy::BestScore => pb::Strategy::BestScore as i32,
        Strategy::SumScores => pb::Strategy::SumScores as i32,
    }
}

fn wire_count(name: &str, v: Option<i64>) -> PyResult<u32> {
    let v = v.map(|v| count(name, v)).transpose()?.unwrap_or(0);
    u32::try_from(v).map_err(|_| invalid(format!("{name} = {v} is too large")))
}

impl Client {
    /// Run a call to its end with the GIL released.
    fn call<T: Send>(
        &self,
        py: Python<'_>,
        f: impl std::future::Future<Output = Result<T, ClientError>> + Send,
    ) -> PyResult<T> {
        py.detach(|| self.runtime.block_on(f)).map_err(client_error)
    }
}

/// Hits of several lists, as [`answer`] shapes them; with `federated`, a
/// third value names each hit's index (a list, or an object array).
fn hits_answer<'py>(
    py: Python<'py>,
    lists: &[Vec<pb::Hit>],
    k: usize,
    single: bool,
    federated: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let slot = |f: &dyn Fn(&pb::Hit) -> &str| -> Vec<Option<String>> {
        lists
            .iter()
            .flat_map(|l| (0..k).map(move |i| l.get(i).map(|h| f(h).to_owned())))
            .collect()
    };
    let ids = slot(&|h| h.id.as_str());
    let distances: Vec<f32> = lists
        .iter()
        .flat_map(|l| (0..k).map(move |i| l.get(i).map_or(f32::INFINITY, |h| h.distance)))
        .collect();
    let (ids, distances) = answer(py, k, single, ids.iter().map(|s| s.as_deref()), distances)?;
    if !federated {
        return Ok((ids, distances).into_pyobject(py)?.into_any());
    }
    let names = slot(&|h| h.index.as_str());
    let (names, _) = answer(
        py,
        k,
        single,
        names.iter().map(|s| s.as_deref()),
        vec![0.0; lists.len() * k],
    )?;
    Ok((ids, distances, names).into_pyobject(py)?.into_any())
}

#[pymethods]
impl Client {
    /// Connect to ``target`` (``host:port``, ``http://host:port`` or
    /// ``https://host:port``). ``tls_ca`` (a PEM file) makes the connection
    /// TLS, checked against that CA; ``tls_cert`` and ``tls_key`` give a
    /// client certificate. ``token`` is sent as a bearer token with every
    /// call. ``timeout`` (seconds) is every call's deadline.
    #[new]
    #[pyo3(signature = (target, token = None, tls_ca = None, tls_cert = None, tls_key = None,
                        timeout = None, connect_timeout = 5.0))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        target: &str,
        token: Option<String>,
        tls_ca: Option<PathBuf>,
        tls_cert: Option<PathBuf>,
        tls_key: Option<PathBuf>,
        timeout: Option<f64>,
        connect_timeout: f64,
    ) -> PyResult<Client> {
        let seconds = |name: &str, s: f64| {
            Duration::try_from_secs_f64(s)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| invalid(format!("{name} must be a positive number of seconds")))
        };
        let connect_timeout = seconds("connect_timeout", connect_timeout)?;
        let timeout = timeout.map(|t| seconds("timeout", t)).transpose()?;
        if tls_cert.is_some() != tls_key.is_some() {
            return Err(invalid("tls_cert and tls_key go together"));
        }
        let security = Security::from_files(
            tls_ca.as_deref(),
            tls_cert.as_deref(),
            tls_key.as_deref(),
            token,
        )
        .map_err(client_error)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("fathom-client")
            .enable_all()
            .build()
            .map_err(|e| invalid(format!("cannot start the client's runtime: {e}")))?;
        let inner = py
            .detach(|| {
                runtime.block_on(RustClient::connect_with(target, connect_timeout, &security))
            })
            .map_err(client_error)?;
        let inner = match timeout {
            Some(t) => inner.with_timeout(t),
            None => inner,
        };
        Ok(Client { runtime, inner })
    }

    /// As ``Index.search``, on the server's index ``index``. With a list of
    /// names the call is federated, and a third value names each hit's
    /// index.
    #[pyo3(signature = (index, queries, k = 10, ef = None, filter = None, exclude_ids = None,
                        min_per_index = None, experiment_key = None))]
    #[allow(clippy::too_many_arguments)]
    fn search<'py>(
        &self,
        py: Python<'py>,
        index: &Bound<'py, PyAny>,
        queries: &Bound<'py, PyAny>,
        k: i64,
        ef: Option<i64>,
        filter: Option<String>,
        exclude_ids: Option<&Bound<'py, PyAny>>,
        min_per_index: Option<i64>,
        experiment_key: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let experiment_key = experiment_key.unwrap_or_default();
        let names = Names::extract(index)?;
        let federated = matches!(names, Names::Several(_));
        let (index, indexes) = names.into_fields();
        let k32 = wire_count("k", Some(k))?;
        let ef = wire_count("ef", ef)?;
        let min_per_index = wire_count("min_per_index", min_per_index)?;
        // Sent as keys: 8 bytes each, and the router hashes nothing again.
        let exclude_keys = match exclude_ids {
            Some(ids) => keys(&arrays::ids(ids, "exclude_ids")?),
            None => Vec::new(),
        };
        let filter = filter.unwrap_or_default();
        let rows = Rows::extract(queries, "queries")?;
        let values = rows.values();
        let lists = if rows.single {
            let req = pb::SearchRequest {
                index,
                indexes,
                vector: values.into_owned(),
                k: k32,
                ef,
                filter,
                exclude_keys,
                min_per_index,
                experiment_key,
                ..pb::SearchRequest::default()
            };
            let inner = &self.inner;
            vec![self.call(py, inner.search_with(req))?]
        } else {
            let req = pb::BatchSearchRequest {
                index,
                indexes,
                queries: values
                    .chunks(rows.dim.max(1))
                    .take(rows.n)
                    .map(|q| pb::Query {
                        vector: q.to_vec(),
                        ..pb::Query::default()
                    })
                    .collect(),
                k: k32,
                ef,
                filter,
                exclude_keys,
                min_per_index,
                experiment_key,
                ..pb::BatchSearchRequest::default()
            };
            let mut raw = self.inner.raw();
            let answer = self.call(
                py,
                async move { Ok(raw.batch_search(req).await?.into_inner()) },
            )?;
            answer.results.into_iter().map(|r| r.hits).collect()
        };
        hits_answer(py, &lists, k32 as usize, rows.single, federated)
    }

    /// As ``Index.recommend``, on the server's index ``index``.
    #[pyo3(signature = (index, positive = None, negative = None, strategy = "average_vector",
                        exclude_ids = None, filter = None, diversity = None, candidates = None,
                        group_by = None, group_size = None, k = 10, ef = None))]
    #[allow(clippy::too_many_arguments)]
    fn recommend<'py>(
        &self,
        py: Python<'py>,
        index: &str,
        positive: Option<&Bound<'py, PyAny>>,
        negative: Option<&Bound<'py, PyAny>>,
        strategy: &str,
        exclude_ids: Option<&Bound<'py, PyAny>>,
        filter: Option<String>,
        diversity: Option<f32>,
        candidates: Option<i64>,
        group_by: Option<String>,
        group_size: Option<i64>,
        k: i64,
        ef: Option<i64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let positive = Examples::extract(positive, "positive")?;
        let negative = Examples::extract(negative, "negative")?;
        let vectors = |v: Vec<Vec<f32>>| -> Vec<pb::Query> {
            v.into_iter()
                .map(|vector| pb::Query {
                    vector,
                    ..pb::Query::default()
                })
                .collect()
        };
        let k32 = wire_count("k", Some(k))?;
        let req = pb::SearchRequest {
            index: index.to_owned(),
            k: k32,
            ef: wire_count("ef", ef)?,
            filter: filter.unwrap_or_default(),
            positive_ids: positive.ids,
            negative_ids: negative.ids,
            positive_vectors: vectors(positive.vectors),
            negative_vectors: vectors(negative.vectors),
            strategy: wire_strategy(parse_strategy(strategy)?),
            exclude_keys: match exclude_ids {
                Some(ids) => keys(&arrays::ids(ids, "exclude_ids")?),
                None => Vec::new(),
            },
            diversity: diversity.unwrap_or(0.0),
            candidates: wire_count("candidates", candidates)?,
            group_by: group_by.unwrap_or_default(),
            group_size: wire_count("group_size", group_size)?,
            ..pb::SearchRequest::default()
        };
        let hits = self.call(py, self.inner.search_with(req))?;
        hits_answer(py, &[hits], k32 as usize, true, false)
    }

    /// As ``Index.get``, from the server's index ``index``.
    fn get<'py>(
        &self,
        py: Python<'py>,
        index: &str,
        ids: &Bound<'py, PyAny>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyList>)> {
        let ids = arrays::ids(ids, "ids")?;
        let items = self.call(py, self.inner.get_items(index, &ids))?;
        let dim = items.first().map_or(0, |i| i.vector.len());
        let mut vectors = Vec::with_capacity(items.len() * dim);
        let attributes = PyList::empty(py);
        for item in &items {
            if item.vector.len() != dim {
                return Err(invalid("the server sent vectors of different lengths"));
            }
            vectors.extend_from_slice(&item.vector);
            attributes.append(json_object(py, Some(&item.attributes_json))?)?;
        }
        let array = numpy::ndarray::Array2::from_shape_vec((items.len(), dim), vectors)
            .map_err(|e| invalid(e.to_string()))?;
        Ok((array.into_pyarray(py).into_any(), attributes))
    }

    /// Every index the server serves, as dicts (name, count, dim, metric,
    /// storage, path, ...), sorted by name.
    fn list_indexes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let infos = self.call(py, self.inner.list_indexes())?;
        let list = PyList::empty(py);
        for i in infos {
            let d = PyDict::new(py);
            d.set_item("name", i.name)?;
            d.set_item("count", i.count)?;
            d.set_item("dim", i.dim)?;
            d.set_item("metric", i.metric)?;
            d.set_item("storage", i.storage)?;
            d.set_item("path", i.path)?;
            d.set_item("default_ef", i.default_ef)?;
            d.set_item("file_bytes", i.file_bytes)?;
            d.set_item("built_at_unix_s", i.built_at_unix_s)?;
            d.set_item("last_reload_error", i.last_reload_error)?;
            d.set_item("aliases", i.aliases)?;
            let recall = PyList::empty(py);
            for e in i.recall {
                let r = PyDict::new(py);
                r.set_item("kind", e.kind)?;
                r.set_item("estimate", e.estimate)?;
                r.set_item("low", e.low)?;
                r.set_item("high", e.high)?;
                r.set_item("samples", e.samples)?;
                recall.append(r)?;
            }
            d.set_item("recall", recall)?;
            d.set_item("recall_samples_dropped", i.recall_samples_dropped)?;
            list.append(d)?;
        }
        Ok(list)
    }

    /// Delete ``ids`` from the server's layered index ``index``: durable
    /// and applied when this returns. Needs an admin token on a server
    /// with tokens. Returns how many were deleted (ids the index does not
    /// hold are ignored).
    fn delete(&self, py: Python<'_>, index: &str, ids: &Bound<'_, PyAny>) -> PyResult<u64> {
        let ids = arrays::ids(ids, "ids")?;
        Ok(self.call(py, self.inner.delete(index, &ids))?.deleted)
    }

    /// Point ``alias`` at the server's index ``index`` (``None`` removes
    /// the alias), at once for every call that follows. Needs an admin
    /// token on a server with tokens. Returns the index it stood for before
    /// (``None`` when it is new).
    #[pyo3(signature = (alias, index))]
    fn set_alias(
        &self,
        py: Python<'_>,
        alias: &str,
        index: Option<&str>,
    ) -> PyResult<Option<String>> {
        let r = self.call(py, self.inner.set_alias(alias, index))?;
        Ok((!r.previous.is_empty()).then_some(r.previous))
    }
}

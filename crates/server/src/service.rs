//! The `fathom.v1.Retrieval` service. Each handler validates, converts, calls
//! the engine and converts back; errors become status codes in
//! `server::status` only.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use tokio::sync::Semaphore;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use crate::catalog::{Catalog, IndexStatus, Loaded};
use crate::exec::{Executor, Work};
use crate::metrics::Metrics;
use crate::proto as pb;
use crate::reload;
use crate::status::{code_name, RequestError};
use fathom_engine::error::Error;
use fathom_engine::filter::FilterPlan;
use fathom_engine::index::{Index, IndexParts, SearchParams};
use fathom_engine::layers::Layered;
use fathom_engine::recommend::Strategy;
use fathom_engine::retrieve::{retrieve, Call, Source};
use fathom_engine::search::SearchStats;

/// Caps on what one request may ask for.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest k (INVALID_ARGUMENT above it).
    pub max_k: usize,
    /// Largest ef (INVALID_ARGUMENT above it).
    pub max_ef: usize,
    /// Most queries in one BatchSearch, and most ids in one GetItems
    /// (INVALID_ARGUMENT above it).
    pub max_batch: usize,
    /// Largest request message in bytes (RESOURCE_EXHAUSTED above it).
    pub max_message_bytes: usize,
    /// Most requests handled at once; more are shed with
    /// RESOURCE_EXHAUSTED instead of queueing without bound.
    pub max_concurrency: usize,
    /// Most `exclude_ids` in one Search (INVALID_ARGUMENT above it).
    pub max_exclusions: usize,
    /// Most examples (seed ids and taste vectors) in one query: each costs
    /// a search or a distance per candidate.
    pub max_examples: usize,
    /// Most bytes held by calls, over all calls: request bytes received and
    /// not yet answered, and answer bytes built and not yet sent. A call
    /// whose message would pass it is shed with RESOURCE_EXHAUSTED; an
    /// answer that would pass it is dropped and its stream reset.
    pub max_inflight_bytes: usize,
    /// Most calls of one connection holding a slot at once, so that one
    /// client cannot hold every slot (RESOURCE_EXHAUSTED above it).
    pub max_calls_per_connection: usize,
    /// How long a call's message may take to arrive after its headers.
    pub request_body_timeout: std::time::Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_k: 1_000,
            max_ef: 4_096,
            max_batch: 1_024,
            max_message_bytes: 16 << 20,
            max_concurrency: 256,
            max_exclusions: 100_000,
            max_examples: 256,
            max_inflight_bytes: 64 << 20,
            max_calls_per_connection: 64,
            request_body_timeout: std::time::Duration::from_secs(10),
        }
    }
}

/// State shared by the handlers, the reload paths and the server handle.
pub(crate) struct Shared {
    pub catalog: Arc<Catalog>,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    /// `serve --default-ef`: replaces the snapshots' own default for ef = 0.
    pub default_ef: Option<usize>,
    pub executor: Executor,
    pub permits: Arc<Semaphore>,
    pub shutting_down: AtomicBool,
}

/// A call let in: past shutdown's check, holding a slot taken in `gate`.
struct Admitted;

/// The gRPC service; cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct RetrievalService {
    pub(crate) shared: Arc<Shared>,
}

impl RetrievalService {
    /// The service over `catalog` with no listener, metrics endpoint,
    /// watcher or admission layer, its handlers called directly: the
    /// request fuzz target (`crates/fuzzing`) drives `Search` and
    /// `BatchSearch` this way, through the same validation and conversion
    /// a served call takes. Not an API: `start` is.
    #[doc(hidden)]
    pub fn unserved(
        catalog: Arc<Catalog>,
        limits: Limits,
        search_threads: crate::SearchThreads,
    ) -> Result<RetrievalService, crate::ServeError> {
        Ok(RetrievalService {
            shared: Arc::new(Shared {
                catalog,
                metrics: Arc::new(Metrics::new()),
                permits: Arc::new(Semaphore::new(limits.max_concurrency)),
                limits,
                default_ef: None,
                executor: Executor::new(search_threads).map_err(crate::ServeError::Pool)?,
                shutting_down: AtomicBool::new(false),
            }),
        })
    }
}

/// Answers are sent a little before the caller's deadline (this, or a tenth
/// of the timeout if less) so that the caller gets this server's
/// DEADLINE_EXCEEDED rather than giving up on its own first.
const DEADLINE_MARGIN: Duration = Duration::from_millis(5);

/// One RPC being handled: times it and counts it when it finishes, or as
/// CANCELLED when the caller goes away first (its future is dropped).
struct Rpc<'a> {
    shared: &'a Shared,
    method: &'static str,
    index: String,
    start: Instant,
    finished: bool,
}

impl<'a> Rpc<'a> {
    fn begin(shared: &'a Arc<Shared>, method: &'static str, index: &str) -> Rpc<'a> {
        // Label only names the catalog holds, so clients cannot grow the
        // label set with made-up names.
        let index = if shared.catalog.get(index).is_some() {
            index.to_string()
        } else {
            String::new()
        };
        Rpc {
            shared,
            method,
            index,
            start: Instant::now(),
            finished: false,
        }
    }

    fn finish<T>(mut self, result: Result<T, RequestError>) -> Result<Response<T>, Status> {
        let result = result.map(Response::new).map_err(Status::from);
        let code = match &result {
            Ok(_) => tonic::Code::Ok,
            Err(s) => s.code(),
        };
        self.record(code);
        result
    }

    fn record(&mut self, code: tonic::Code) {
        self.finished = true;
        self.shared.metrics.observe(
            self.method,
            &self.index,
            code_name(code),
            self.start.elapsed(),
        );
    }
}

impl Drop for Rpc<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.record(tonic::Code::Cancelled);
        }
    }
}

impl Shared {
    /// UNAVAILABLE once shutdown began. (The concurrency slot was taken
    /// before the message was decoded, in `gate`.)
    fn permit(&self) -> Result<Admitted, RequestError> {
        if self.shutting_down.load(Ordering::Acquire) {
            return Err(RequestError::ShuttingDown);
        }
        Ok(Admitted)
    }

    fn index(&self, name: &str) -> Result<Arc<Loaded>, RequestError> {
        Ok(self.catalog.serving(name)?)
    }

    fn params(
        &self,
        k: u32,
        ef: u32,
        deadline: Option<Instant>,
    ) -> Result<SearchParams, RequestError> {
        let (k, ef) = (k as usize, ef as usize);
        check_limit("k", k, self.limits.max_k)?;
        check_limit("ef", ef, self.limits.max_ef)?;
        Ok(SearchParams {
            k,
            ef: match (ef, self.default_ef) {
                (0, Some(d)) => d,
                _ => ef,
            },
            deadline,
            cancel: Some(Arc::new(AtomicBool::new(false))),
            ..SearchParams::new(k, 0)
        })
    }

    /// Run a search closure on the search threads, within the deadline. When
    /// the caller goes away, this future is dropped and the search stops at
    /// its next check of `params.cancel`, instead of running on unheard.
    async fn searched<T, F>(&self, caller: Caller, work: Work, f: F) -> Result<T, RequestError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, RequestError> + Send + 'static,
    {
        let _cancel_on_drop = caller.cancel.map(CancelOnDrop);
        within(caller.deadline, async { self.executor.run(work, f).await? }).await
    }

    pub(crate) fn index_info(&self, s: &IndexStatus) -> pb::IndexInfo {
        let served = s.loaded.searchable();
        let index = served.base();
        let snap = index.snapshot();
        let m = snap.manifest();
        let ms = |t: std::time::SystemTime| {
            t.duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
        };
        let layered = served.layered();
        pb::IndexInfo {
            name: s.name.clone(),
            count: served.live(),
            dim: snap.dim() as u32,
            metric: snap.metric().name().to_string(),
            storage: snap.storage().name().to_string(),
            format_version: snap.format_version(),
            built_at_unix_s: m.build.built_at,
            path: s.path.display().to_string(),
            loaded_at_unix_ms: ms(s.loaded.loaded_at()),
            last_reload_error: s
                .last_error
                .as_ref()
                .map(|e| e.message.clone())
                .unwrap_or_default(),
            default_ef: self.default_ef.unwrap_or_else(|| index.parts().default_ef) as u32,
            file_bytes: served.file_bytes(),
            built_by: format!("fathom {}", m.build.fathom_version),
            input: m.build.input.clone(),
            last_reload_error_at_unix_ms: s.last_error.as_ref().map_or(0, |e| ms(e.at)),
            fields: field_infos(index),
            layers: layered.map_or_else(Vec::new, layer_infos),
            deleted: layered.map_or(0, |l| l.dead_count()),
            oldest_delta_built_at_unix_s: layered
                .and_then(|l| l.oldest_delta_built_at())
                .unwrap_or(0),
            reloading_since_unix_ms: s.reloading_since.map_or(0, ms),
            withdrawn: served
                .check_intact()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default(),
        }
    }
}

/// What a search's caller still wants: the answer by its deadline, unless
/// it goes away first.
struct Caller {
    deadline: Option<Instant>,
    cancel: Option<Arc<AtomicBool>>,
}

impl Caller {
    fn of(params: &SearchParams) -> Caller {
        Caller {
            deadline: params.deadline,
            cancel: params.cancel.clone(),
        }
    }
}

/// Sets the flag when dropped: after the answer (harmless), or when the
/// handler's future is dropped because the caller reset the stream or
/// closed the connection.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The index a call is counted under in metrics: its index, or the first
/// of a federated call's.
fn metrics_index<'r>(index: &'r str, indexes: &'r [String]) -> &'r str {
    match indexes.first() {
        Some(first) if index.is_empty() => first,
        _ => index,
    }
}

/// Await `work`, or DEADLINE_EXCEEDED once `deadline` passes (at once if it
/// already has). Work handed to other threads stops by itself at the same
/// deadline: the engine checks it while searching.
async fn within<T>(
    deadline: Option<Instant>,
    work: impl std::future::Future<Output = Result<T, RequestError>>,
) -> Result<T, RequestError> {
    let Some(d) = deadline else {
        return work.await;
    };
    if Instant::now() >= d {
        return Err(RequestError::DeadlineExceeded);
    }
    tokio::time::timeout_at(d.into(), work)
        .await
        .unwrap_or(Err(RequestError::DeadlineExceeded))
}

/// The options of a call that Search and BatchSearch share.
struct Options<'r> {
    index: &'r str,
    indexes: &'r [String],
    strategy: i32,
    min_per_index: u32,
    diversity: f32,
    candidates: u32,
    group_by: &'r str,
    group_size: u32,
    with_attributes: bool,
}

/// The loaded indexes a call searches: `index`, or each of `indexes`.
/// The flag says whether the call is federated (hits then name their index).
type Targets = (Vec<(String, Arc<Loaded>)>, bool);

impl Shared {
    fn targets(&self, o: &Options<'_>) -> Result<Targets, RequestError> {
        match (o.index.is_empty(), o.indexes.is_empty()) {
            (false, false) => {
                Err(Error::InvalidArgument("set either index or indexes, not both".into()).into())
            }
            (false, true) => Ok((vec![(o.index.to_string(), self.index(o.index)?)], false)),
            (true, false) => {
                // Names past the catalog's size cannot all be distinct and
                // served: refuse them before looking any up.
                check_limit("indexes", o.indexes.len(), self.catalog.len().max(2))?;
                let mut out: Vec<(String, Arc<Loaded>)> = Vec::with_capacity(o.indexes.len());
                for name in o.indexes {
                    if out.iter().any(|(n, _)| n == name) {
                        return Err(Error::InvalidArgument(format!(
                            "index {name:?} is listed twice"
                        ))
                        .into());
                    }
                    out.push((name.clone(), self.index(name)?));
                }
                Ok((out, true))
            }
            (true, true) => Err(crate::catalog::CatalogError::UnknownIndex(String::new()).into()),
        }
    }

    /// Check what the engine does not: the server's own caps.
    fn check_options(&self, o: &Options<'_>, k: usize) -> Result<Strategy, RequestError> {
        if o.candidates > 0 {
            check_limit("candidates", o.candidates as usize, self.limits.max_ef)?;
        }
        check_limit("min_per_index", o.min_per_index as usize, k)?;
        strategy(o.strategy)
    }
}

fn strategy(v: i32) -> Result<Strategy, RequestError> {
    match pb::Strategy::try_from(v) {
        Ok(pb::Strategy::AverageVector) => Ok(Strategy::AverageVector),
        Ok(pb::Strategy::BestScore) => Ok(Strategy::BestScore),
        Ok(pb::Strategy::SumScores) => Ok(Strategy::SumScores),
        Err(_) => Err(Error::InvalidArgument(format!("unknown strategy {v}")).into()),
    }
}

fn layer_infos(l: &Layered) -> Vec<pb::LayerInfo> {
    l.layers()
        .iter()
        .zip(&l.manifest.layers)
        .enumerate()
        .map(|(i, (layer, file))| {
            let snap = layer.snapshot();
            pb::LayerInfo {
                file: file.clone(),
                count: snap.len() as u64,
                dead: l.dead(i).len(),
                built_at_unix_s: snap.manifest().build.built_at,
                file_bytes: snap.file_len(),
            }
        })
        .collect()
}

/// Filter plans bound to each target (each of its layers), one set per
/// distinct expression.
struct Plans<'i> {
    targets: &'i [(String, Arc<Loaded>)],
    federated: bool,
    by_expr: HashMap<String, Vec<Vec<FilterPlan<'i>>>>,
}

impl<'i> Plans<'i> {
    fn new(targets: &'i Targets) -> Self {
        Plans {
            targets: &targets.0,
            federated: targets.1,
            by_expr: HashMap::new(),
        }
    }

    /// Bind `expr` to every target once; errors name the index when the
    /// call is federated. Planning stops at the call's deadline or when its
    /// caller goes away, as its searches do.
    fn bind(&mut self, expr: &str, params: &SearchParams) -> Result<(), Error> {
        if expr.is_empty() || self.by_expr.contains_key(expr) {
            return Ok(());
        }
        let mut plans = Vec::with_capacity(self.targets.len());
        for (name, loaded) in self.targets {
            let planned = IndexParts::with_cancel(params, |cancel| {
                loaded.searchable().filter_within(expr, cancel)
            });
            plans.push(planned.map_err(|e| match e {
                Error::Filter(f) if self.federated => {
                    Error::InvalidArgument(format!("index {name:?}: {f}"))
                }
                e => e,
            })?);
        }
        self.by_expr.insert(expr.to_string(), plans);
        Ok(())
    }

    /// One source per layer of each target; a source's `owner` is its
    /// target's position.
    fn sources(&self, expr: &str) -> Vec<Source<'_, 'i>> {
        let plans = self.by_expr.get(expr);
        self.targets
            .iter()
            .enumerate()
            .flat_map(|(i, (name, loaded))| {
                loaded
                    .searchable()
                    .sources(name, plans.map(|p| p[i].as_slice()), i as u32)
            })
            .collect()
    }
}

/// The examples and exclusions of one query.
struct Examples<'r> {
    vector: &'r [f32],
    positive_ids: &'r [String],
    negative_ids: &'r [String],
    positive_vectors: &'r [pb::Query],
    negative_vectors: &'r [pb::Query],
    exclude_ids: &'r [String],
}

impl<'r> Examples<'r> {
    fn of_search(r: &'r pb::SearchRequest) -> Self {
        Examples {
            vector: &r.vector,
            positive_ids: &r.positive_ids,
            negative_ids: &r.negative_ids,
            positive_vectors: &r.positive_vectors,
            negative_vectors: &r.negative_vectors,
            exclude_ids: &r.exclude_ids,
        }
    }

    fn of_query(q: &'r pb::Query) -> Self {
        Examples {
            vector: &q.vector,
            positive_ids: &q.positive_ids,
            negative_ids: &q.negative_ids,
            positive_vectors: &q.positive_vectors,
            negative_vectors: &q.negative_vectors,
            exclude_ids: &q.exclude_ids,
        }
    }
}

impl Shared {
    fn check_examples(
        &self,
        e: &Examples<'_>,
        batch_exclusions: usize,
    ) -> Result<(), RequestError> {
        check_limit(
            "exclude_ids",
            e.exclude_ids.len() + batch_exclusions,
            self.limits.max_exclusions,
        )?;
        let examples = e.positive_ids.len()
            + e.negative_ids.len()
            + e.positive_vectors.len()
            + e.negative_vectors.len();
        check_limit("examples", examples, self.limits.max_examples)
    }
}

fn vectors(qs: &[pb::Query]) -> Vec<&[f32]> {
    qs.iter().map(|q| q.vector.as_slice()).collect()
}

/// Run one query of a call and turn its hits into the response.
fn run_call(
    plans: &Plans<'_>,
    filter: &str,
    o: &Options<'_>,
    strategy: Strategy,
    params: SearchParams,
    e: &Examples<'_>,
    exclude_ids: &[String],
) -> Result<(pb::SearchResponse, SearchStats), Error> {
    let sources = plans.sources(filter);
    let call = Call {
        vector: e.vector,
        positive_ids: e.positive_ids,
        negative_ids: e.negative_ids,
        positive_vectors: vectors(e.positive_vectors),
        negative_vectors: vectors(e.negative_vectors),
        strategy,
        exclude_ids,
        params,
        diversity: o.diversity,
        candidates: o.candidates as usize,
        group_by: o.group_by,
        group_size: o.group_size as usize,
        min_per_index: o.min_per_index as usize,
    };
    let found = retrieve(&sources, &call)?;
    let hits = found
        .hits
        .iter()
        .map(|h| {
            let source = &sources[h.source as usize];
            let index = source.index;
            let name = &plans.targets[source.owner as usize].0;
            pb::Hit {
                id: index.id(h.node).to_string(),
                distance: h.distance,
                index: if plans.federated {
                    name.clone()
                } else {
                    String::new()
                },
                attributes_json: if o.with_attributes {
                    index
                        .node_attributes_json(h.node)
                        .unwrap_or("{}")
                        .to_string()
                } else {
                    String::new()
                },
            }
        })
        .collect();
    Ok((pb::SearchResponse { hits }, found.stats))
}

/// Search `queries`: one response each, in order, and the work it took.
/// Errors name the query by its position. Each distinct filter is planned
/// once per index.
fn search_batch(
    targets: &Targets,
    req: &pb::BatchSearchRequest,
    strategy: Strategy,
    params: &SearchParams,
) -> Result<(Vec<pb::SearchResponse>, Vec<SearchStats>), RequestError> {
    let o = batch_options(req);
    let mut plans = Plans::new(targets);
    let mut results = Vec::with_capacity(req.queries.len());
    let mut work = Vec::with_capacity(req.queries.len());
    let mut exclude: Vec<String> = Vec::new();
    let at = |i: usize| {
        move |e: Error| match e {
            Error::InvalidArgument(m) => Error::InvalidArgument(format!("query {i}: {m}")),
            Error::Filter(f) => Error::InvalidArgument(format!("query {i}: {f}")),
            e => e,
        }
    };
    for (i, q) in req.queries.iter().enumerate() {
        let filter = if q.filter.is_empty() {
            req.filter.as_str()
        } else {
            q.filter.as_str()
        };
        plans.bind(filter, params).map_err(at(i))?;
        // Each search checks the deadline as it runs; this stops a batch
        // between queries too.
        if params.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(RequestError::DeadlineExceeded);
        }
        if params
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
        {
            return Err(Error::Cancelled.into());
        }
        let exclude_ids: &[String] = if q.exclude_ids.is_empty() {
            &req.exclude_ids
        } else {
            exclude.clear();
            exclude.extend(req.exclude_ids.iter().cloned());
            exclude.extend(q.exclude_ids.iter().cloned());
            &exclude
        };
        let e = Examples::of_query(q);
        let (resp, stats) = run_call(
            &plans,
            filter,
            &o,
            strategy,
            params.clone(),
            &e,
            exclude_ids,
        )
        .map_err(at(i))?;
        work.push(stats);
        results.push(resp);
    }
    Ok((results, work))
}

/// The shared options of a Search or BatchSearch request (the same
/// fields in both messages).
macro_rules! options_of {
    ($req:expr) => {
        Options {
            index: &$req.index,
            indexes: &$req.indexes,
            strategy: $req.strategy,
            min_per_index: $req.min_per_index,
            diversity: $req.diversity,
            candidates: $req.candidates,
            group_by: &$req.group_by,
            group_size: $req.group_size,
            with_attributes: $req.with_attributes,
        }
    };
}

fn batch_options(req: &pb::BatchSearchRequest) -> Options<'_> {
    options_of!(req)
}

fn search_options(req: &pb::SearchRequest) -> Options<'_> {
    options_of!(req)
}

fn check_limit(what: &'static str, value: usize, limit: usize) -> Result<(), RequestError> {
    if value > limit {
        return Err(RequestError::OverLimit { what, value, limit });
    }
    Ok(())
}

/// The caller's deadline, from the `grpc-timeout` header
/// (`<digits><unit>`, unit one of H M S m u n), less a small margin.
pub(crate) fn deadline_of(metadata: &MetadataMap, now: Instant) -> Option<Instant> {
    let v = metadata.get("grpc-timeout")?.to_str().ok()?;
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits.parse().ok()?;
    let timeout = match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    };
    let margin = DEADLINE_MARGIN.min(timeout / 10);
    Some(now + timeout.saturating_sub(margin))
}

/// When the call's headers arrived (now, if the layer did not stamp it).
fn arrival<T>(request: &Request<T>) -> Instant {
    request
        .extensions()
        .get::<crate::Arrival>()
        .map_or_else(Instant::now, |a| a.0)
}

/// The attribute schema for ListIndexes: each field with its most frequent
/// values or its range.
fn field_infos(index: &Index) -> Vec<pb::FieldInfo> {
    const TOP_VALUES: usize = 10;
    let Some(attrs) = index.attributes() else {
        return Vec::new();
    };
    attrs
        .summaries(TOP_VALUES)
        .into_iter()
        .map(|f| pb::FieldInfo {
            name: f.name,
            r#type: f.kind.name().to_string(),
            present: f.present,
            distinct: f.distinct as u64,
            top_values: f
                .top
                .into_iter()
                .map(|(value, count)| pb::ValueCount { value, count })
                .collect(),
            min: f.min.unwrap_or(0.0),
            max: f.max.unwrap_or(0.0),
        })
        .collect()
}

#[tonic::async_trait]
impl pb::retrieval_server::Retrieval for RetrievalService {
    async fn search(
        &self,
        request: Request<pb::SearchRequest>,
    ) -> Result<Response<pb::SearchResponse>, Status> {
        let deadline = deadline_of(request.metadata(), arrival(&request));
        let req = request.into_inner();
        let call = Rpc::begin(
            &self.shared,
            "Search",
            metrics_index(&req.index, &req.indexes),
        );
        let result = async {
            let _permit = self.shared.permit()?;
            let o = search_options(&req);
            let targets = self.shared.targets(&o)?;
            let params = self.shared.params(req.k, req.ef, deadline)?;
            let strategy = self.shared.check_options(&o, params.k)?;
            let e = Examples::of_search(&req);
            self.shared.check_examples(&e, 0)?;
            let name = targets.0[0].0.clone();
            self.shared
                .searched(Caller::of(&params), Work::Single, move || {
                    let o = search_options(&req);
                    let mut plans = Plans::new(&targets);
                    plans.bind(&req.filter, &params)?;
                    let e = Examples::of_search(&req);
                    let (resp, stats) = run_call(
                        &plans,
                        &req.filter,
                        &o,
                        strategy,
                        params,
                        &e,
                        &req.exclude_ids,
                    )?;
                    Ok((resp, stats, name))
                })
                .await
        }
        .await
        .map(|(resp, stats, name)| {
            self.shared.metrics.searched(&name, stats);
            resp
        });
        call.finish(result)
    }

    async fn batch_search(
        &self,
        request: Request<pb::BatchSearchRequest>,
    ) -> Result<Response<pb::BatchSearchResponse>, Status> {
        let deadline = deadline_of(request.metadata(), arrival(&request));
        let req = request.into_inner();
        let call = Rpc::begin(
            &self.shared,
            "BatchSearch",
            metrics_index(&req.index, &req.indexes),
        );
        let result = async {
            let _permit = self.shared.permit()?;
            let o = batch_options(&req);
            let targets = self.shared.targets(&o)?;
            check_limit(
                "batch size",
                req.queries.len(),
                self.shared.limits.max_batch,
            )?;
            let params = self.shared.params(req.k, req.ef, deadline)?;
            let strategy = self.shared.check_options(&o, params.k)?;
            for q in &req.queries {
                self.shared
                    .check_examples(&Examples::of_query(q), req.exclude_ids.len())?;
            }
            let name = targets.0[0].0.clone();
            self.shared
                .searched(Caller::of(&params), Work::Batch, move || {
                    let (results, work) = search_batch(&targets, &req, strategy, &params)?;
                    Ok((pb::BatchSearchResponse { results }, work, name))
                })
                .await
        }
        .await
        .map(|(resp, work, name)| {
            // Per query, as a Search would count it.
            for stats in work {
                self.shared.metrics.searched(&name, stats);
            }
            resp
        });
        call.finish(result)
    }

    async fn get_items(
        &self,
        request: Request<pb::GetItemsRequest>,
    ) -> Result<Response<pb::GetItemsResponse>, Status> {
        let role = request.extensions().get::<crate::auth::Role>().copied();
        let req = request.into_inner();
        let call = Rpc::begin(&self.shared, "GetItems", &req.index);
        let result = (|| {
            let _permit = self.shared.permit()?;
            crate::auth::check_items(role, req.ids.len())?;
            let loaded = self.shared.index(&req.index)?;
            check_limit("ids", req.ids.len(), self.shared.limits.max_batch)?;
            let served = loaded.searchable();
            let mut items = Vec::with_capacity(req.ids.len());
            let mut missing = Vec::new();
            for id in req.ids {
                match served.find(&id) {
                    Some((index, node)) => items.push(pb::Item {
                        attributes_json: index
                            .node_attributes_json(node)
                            .unwrap_or("{}")
                            .to_string(),
                        vector: index.snapshot().vectors_f32().row(node).to_vec(),
                        id,
                    }),
                    None => missing.push(id),
                }
            }
            served.check_intact()?;
            if let Some(first) = missing.first() {
                return Err(RequestError::UnknownItems {
                    index: req.index.clone(),
                    count: missing.len(),
                    example: first.clone(),
                });
            }
            Ok(pb::GetItemsResponse { items })
        })();
        call.finish(result)
    }

    async fn list_indexes(
        &self,
        _request: Request<pb::ListIndexesRequest>,
    ) -> Result<Response<pb::ListIndexesResponse>, Status> {
        let call = Rpc::begin(&self.shared, "ListIndexes", "");
        let indexes = self
            .shared
            .catalog
            .status()
            .iter()
            .map(|s| self.shared.index_info(s))
            .collect();
        call.finish(Ok(pb::ListIndexesResponse { indexes }))
    }

    async fn reload(
        &self,
        request: Request<pb::ReloadRequest>,
    ) -> Result<Response<pb::ReloadResponse>, Status> {
        let req = request.into_inner();
        let call = Rpc::begin(&self.shared, "Reload", &req.index);
        let shared = Arc::clone(&self.shared);
        let result = async move {
            if self.shared.shutting_down.load(Ordering::Acquire) {
                return Err(RequestError::ShuttingDown);
            }
            let name = (!req.index.is_empty()).then_some(req.index);
            if let Some(n) = &name {
                // Not `index()`: a withdrawn snapshot is what a reload mends.
                self.shared
                    .catalog
                    .get(n)
                    .ok_or_else(|| crate::catalog::CatalogError::UnknownIndex(n.to_string()))?;
            }
            // Opening and verifying a snapshot reads the file: keep it off
            // the async workers.
            let outcomes =
                reload::off_runtime(move || reload::reload(&shared, name.as_deref(), "rpc"))
                    .await?;
            let mut indexes = Vec::new();
            let mut first_error = None;
            for (name, outcome) in outcomes {
                match outcome {
                    Ok(_) => {
                        if let Some(s) = self.shared.catalog.status_of(&name) {
                            indexes.push(self.shared.index_info(&s));
                        }
                    }
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
            match first_error {
                Some(e) => Err(e.into()),
                None => Ok(pb::ReloadResponse { indexes }),
            }
        }
        .await;
        call.finish(result)
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let req = request.into_inner();
        let call = Rpc::begin(&self.shared, "Delete", &req.index);
        let shared = Arc::clone(&self.shared);
        let result = async move {
            let _permit = self.shared.permit()?;
            check_limit("ids", req.ids.len(), self.shared.limits.max_exclusions)?;
            self.shared
                .catalog
                .get(&req.index)
                .ok_or_else(|| crate::catalog::CatalogError::UnknownIndex(req.index.clone()))?;
            // Appending and fsyncing the tombstones, then reopening the
            // set, is file I/O: off the async workers.
            let (done, loaded) = reload::off_runtime(move || {
                let outcome = shared.catalog.delete(&req.index, &req.ids, DELETE_WAIT);
                if let Ok((done, loaded)) = &outcome {
                    tracing::info!(
                        index = %req.index,
                        deleted = done.deleted.len(),
                        unknown = done.unknown.len(),
                        live = loaded.searchable().live(),
                        "deleted"
                    );
                    shared.metrics.index_loaded(&req.index, loaded);
                }
                outcome
            })
            .await??;
            Ok(pb::DeleteResponse {
                deleted: done.deleted.len() as u64,
                unknown: done.unknown,
                live: loaded.searchable().live(),
            })
        }
        .await;
        call.finish(result)
    }
}

/// How long a Delete waits for a reload of its index that is running
/// before giving up with ABORTED.
const DELETE_WAIT: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(v: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert("grpc-timeout", v.parse().unwrap());
        m
    }

    #[test]
    fn grpc_timeout_parses() {
        let now = Instant::now();
        assert_eq!(
            deadline_of(&meta("100m"), now),
            Some(now + Duration::from_millis(95))
        );
        assert_eq!(
            deadline_of(&meta("5S"), now),
            Some(now + Duration::from_millis(4995))
        );
        assert_eq!(
            deadline_of(&meta("10u"), now),
            Some(now + Duration::from_micros(9))
        );
        assert_eq!(deadline_of(&meta("1x"), now), None);
        assert_eq!(deadline_of(&meta("123456789m"), now), None);
        assert_eq!(deadline_of(&MetadataMap::new(), now), None);
    }
}

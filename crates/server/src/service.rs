//! The `fathom.v1.Retrieval` service. Each handler validates, converts, calls
//! the engine and converts back; errors become status codes in
//! `server::status` only.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use crate::catalog::{Catalog, IndexStatus, Loaded};
use crate::exec::{Executor, Work};
use crate::metrics::Metrics;
use crate::proto as pb;
use crate::reload;
use crate::status::{code_name, RequestError};
use fathom_engine::admit::Admission;
use fathom_engine::error::Error;
use fathom_engine::filter::FilterPlan;
use fathom_engine::index::{Index, SearchParams};
use fathom_engine::search::{Neighbor, SearchStats};

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

/// The gRPC service; cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct RetrievalService {
    pub(crate) shared: Arc<Shared>,
}

/// Answers are sent a little before the caller's deadline (this, or a tenth
/// of the timeout if less) so that the caller gets this server's
/// DEADLINE_EXCEEDED rather than giving up on its own first.
const DEADLINE_MARGIN: Duration = Duration::from_millis(5);

/// One RPC being handled: times it and counts it when it finishes, or as
/// CANCELLED when the caller goes away first (its future is dropped).
struct Call<'a> {
    shared: &'a Shared,
    method: &'static str,
    index: String,
    start: Instant,
    finished: bool,
    _in_flight: crate::metrics::InFlight,
}

impl<'a> Call<'a> {
    fn begin(shared: &'a Arc<Shared>, method: &'static str, index: &str) -> Call<'a> {
        // Label only names the catalog holds, so clients cannot grow the
        // label set with made-up names.
        let index = if shared.catalog.get(index).is_some() {
            index.to_string()
        } else {
            String::new()
        };
        Call {
            shared,
            method,
            index,
            start: Instant::now(),
            finished: false,
            _in_flight: shared.metrics.in_flight(),
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

impl Drop for Call<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.record(tonic::Code::Cancelled);
        }
    }
}

impl Shared {
    /// A concurrency slot, or RESOURCE_EXHAUSTED when all are taken.
    fn permit(&self) -> Result<OwnedSemaphorePermit, RequestError> {
        if self.shutting_down.load(Ordering::Acquire) {
            return Err(RequestError::ShuttingDown);
        }
        Arc::clone(&self.permits)
            .try_acquire_owned()
            .map_err(|_| RequestError::Overloaded {
                limit: self.limits.max_concurrency,
            })
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
            plan: Default::default(),
        })
    }

    /// Run a search closure on the search threads, within the deadline.
    async fn searched<T, F>(
        &self,
        deadline: Option<Instant>,
        work: Work,
        f: F,
    ) -> Result<T, RequestError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, RequestError> + Send + 'static,
    {
        within(deadline, async { self.executor.run(work, f).await? }).await
    }

    pub(crate) fn index_info(&self, s: &IndexStatus) -> pb::IndexInfo {
        let index = s.loaded.index();
        let snap = index.snapshot();
        let m = snap.manifest();
        let ms = |t: std::time::SystemTime| {
            t.duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
        };
        pb::IndexInfo {
            name: s.name.clone(),
            count: snap.len() as u64,
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
            file_bytes: snap.file_len(),
            built_by: format!("fathom {}", m.build.fathom_version),
            input: m.build.input.clone(),
            last_reload_error_at_unix_ms: s.last_error.as_ref().map_or(0, |e| ms(e.at)),
            fields: field_infos(index),
        }
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

/// Search `queries`: one response each, in order, and the work each took.
/// Errors name the query by its position.
/// Each distinct filter is planned once.
fn search_batch(
    index: &Index,
    queries: &[pb::Query],
    params: &SearchParams,
    batch_filter: &str,
) -> Result<(Vec<pb::SearchResponse>, Vec<SearchStats>), RequestError> {
    let mut found: Vec<Neighbor> = Vec::with_capacity(params.k);
    let mut results = Vec::with_capacity(queries.len());
    let mut work = Vec::with_capacity(queries.len());
    let found = &mut found;
    let mut plans: HashMap<&str, FilterPlan<'_>> = HashMap::new();
    for (i, q) in queries.iter().enumerate() {
        let src = if q.filter.is_empty() {
            batch_filter
        } else {
            q.filter.as_str()
        };
        if !src.is_empty() && !plans.contains_key(src) {
            let plan = index.filter(src).map_err(|e| match e {
                Error::Filter(f) => Error::InvalidArgument(format!("query {}: {f}", i)),
                e => e,
            })?;
            plans.insert(src, plan);
        }
        let plan = plans.get(src);
        // Each search checks the deadline as it runs; this stops a batch
        // between queries too.
        if params.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(RequestError::DeadlineExceeded);
        }
        let stats = index
            .search_filtered_into(&q.vector, params, plan, found)
            .map_err(|e| match e {
                Error::InvalidArgument(m) => Error::InvalidArgument(format!("query {}: {m}", i)),
                e => e,
            })?;
        work.push(stats);
        results.push(pb::SearchResponse {
            hits: hits(index, found),
        });
    }
    Ok((results, work))
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

/// The query vector of a Search, and the seed items it must not return:
/// the raw vector, or the examples combined by the request's strategy.
fn query_of(
    index: &Index,
    req: &pb::SearchRequest,
) -> Result<(Vec<f32>, roaring::RoaringBitmap), RequestError> {
    let examples = !(req.positive_ids.is_empty()
        && req.negative_ids.is_empty()
        && req.positive_vectors.is_empty()
        && req.negative_vectors.is_empty());
    if !examples {
        return Ok((req.vector.clone(), roaring::RoaringBitmap::new()));
    }
    let mut pos: Vec<&[f32]> = req
        .positive_vectors
        .iter()
        .map(|q| q.vector.as_slice())
        .collect();
    if !req.vector.is_empty() {
        pos.push(&req.vector);
    }
    let neg: Vec<&[f32]> = req
        .negative_vectors
        .iter()
        .map(|q| q.vector.as_slice())
        .collect();
    Ok(index.examples_query(&req.positive_ids, &req.negative_ids, &pos, &neg)?)
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

fn hits(index: &Index, found: &[Neighbor]) -> Vec<pb::Hit> {
    found
        .iter()
        .map(|n| pb::Hit {
            id: index.id(n.id).to_string(),
            distance: n.distance,
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
        let call = Call::begin(&self.shared, "Search", &req.index);
        let name = req.index.clone();
        let result = async {
            let _permit = self.shared.permit()?;
            let loaded = self.shared.index(&req.index)?;
            let params = self.shared.params(req.k, req.ef, deadline)?;
            check_limit(
                "exclude_ids",
                req.exclude_ids.len(),
                self.shared.limits.max_exclusions,
            )?;
            if req.strategy != pb::Strategy::AverageVector as i32 {
                return Err(RequestError::Unimplemented(format!(
                    "strategy {} is not served yet; use AVERAGE_VECTOR",
                    pb::Strategy::try_from(req.strategy).map_or_else(
                        |_| req.strategy.to_string(),
                        |s| s.as_str_name().to_string()
                    )
                )));
            }
            self.shared
                .searched(deadline, Work::Single, move || {
                    let index = loaded.index();
                    let plan = match req.filter.as_str() {
                        "" => None,
                        f => Some(index.filter(f)?),
                    };
                    let (query, seeds) = query_of(index, &req)?;
                    let mut excluded = index.nodes_of(&req.exclude_ids, true)?;
                    excluded |= seeds;
                    let admission = Admission {
                        filter: plan.as_ref(),
                        excluded: Some(&excluded),
                        deleted: None,
                    };
                    let mut found = Vec::with_capacity(params.k.min(index.snapshot().len()));
                    let stats =
                        index.search_admitted_into(&query, &params, &admission, &mut found)?;
                    Ok((
                        pb::SearchResponse {
                            hits: hits(index, &found),
                        },
                        stats,
                    ))
                })
                .await
        }
        .await
        .map(|(resp, stats)| {
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
        let call = Call::begin(&self.shared, "BatchSearch", &req.index);
        let name = req.index.clone();
        let result = async {
            let _permit = self.shared.permit()?;
            let loaded = self.shared.index(&req.index)?;
            check_limit(
                "batch size",
                req.queries.len(),
                self.shared.limits.max_batch,
            )?;
            let params = self.shared.params(req.k, req.ef, deadline)?;
            let queries = req.queries;
            let filter = req.filter;
            self.shared
                .searched(deadline, Work::Batch, move || {
                    let (results, work) = search_batch(loaded.index(), &queries, &params, &filter)?;
                    Ok((pb::BatchSearchResponse { results }, work))
                })
                .await
        }
        .await
        .map(|(resp, work)| {
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
        let req = request.into_inner();
        let call = Call::begin(&self.shared, "GetItems", &req.index);
        let result = (|| {
            let _permit = self.shared.permit()?;
            let loaded = self.shared.index(&req.index)?;
            check_limit("ids", req.ids.len(), self.shared.limits.max_batch)?;
            let index = loaded.index();
            let mut items = Vec::with_capacity(req.ids.len());
            let mut missing = Vec::new();
            for id in req.ids {
                match index.vector_of(&id) {
                    Some(v) => items.push(pb::Item {
                        attributes_json: index.attributes_json(&id).unwrap_or("{}").to_string(),
                        id,
                        vector: v.to_vec(),
                    }),
                    None => missing.push(id),
                }
            }
            index.snapshot().check_intact()?;
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
        let call = Call::begin(&self.shared, "ListIndexes", "");
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
        let call = Call::begin(&self.shared, "Reload", &req.index);
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
            let outcomes = tokio::task::spawn_blocking(move || {
                reload::reload(&shared, name.as_deref(), "rpc")
            })
            .await
            .map_err(|e| RequestError::Internal(format!("reload task failed: {e}")))?;
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
}

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

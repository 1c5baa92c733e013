//! A searchable index: an open snapshot plus a scratch pool, and the query
//! front door (validation, query conversion, exact re-rank, exact fallback for
//! tiny indexes). The traversal itself is in `search`.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use crate::admit::{Admission, Admit, AdmitAll};
use crate::attributes::{Attributes, PostingCache};
use crate::distance::{bf16_to_f32, f32_to_bf16, normalize, Element, Kernel, Metric, Storage};
use crate::error::{Error, Result};
use crate::exact;
use crate::filter::FilterPlan;
use crate::graph::values::{ValueGraph, ValueGraphsView};
use crate::graph::GraphView;
use crate::ids::{bitmap_of, IdList, IdTable, ResolvedLists};
use crate::reject::EarlyReject;
use crate::search::{
    hnsw_search_admitted, hnsw_search_limited, hnsw_search_value, prefetch, Cancel, Deadline, Flag,
    FlagOrDeadline, Limit, Neighbor, NoCancel, Scratch, ScratchPool, SearchStats, Space,
};
use crate::snapshot::{OpenOptions, Snapshot};
use crate::vectors::{Quantizer, Rows, VectorSlice};

use super::planner::bounded_keep;
pub use super::planner::{filtered_ef, prefers_exact, Plan, POST_MIN_SHARE};

/// The beam width used when neither the caller nor the snapshot sets one.
pub const DEFAULT_EF: usize = 64;

/// Largest k a query may ask for: a k beyond this is a mistake, not a
/// retrieval request, and would make the result itself the cost.
pub const MAX_K: usize = 100_000;
/// Largest beam width accepted.
pub const MAX_EF: usize = 100_000;

/// Per-query knobs.
#[derive(Debug, Clone)]
pub struct SearchParams {
    pub k: usize,
    /// Beam width; 0 means the index default. Raised to `k` when below it.
    pub ef: usize,
    pub deadline: Option<Instant>,
    /// Set by whoever asked for the search once nobody wants the answer any
    /// more (a server's caller went away): the search stops with
    /// [`Error::Cancelled`], checked where the deadline is.
    pub cancel: Option<Arc<AtomicBool>>,
    /// How a filtered search runs; the planner decides unless told.
    pub plan: Plan,
    /// Let a traversal turn far candidates away after their leading
    /// dimensions where the index measured it to apply ([`crate::reject`]:
    /// 256 dimensions or more, cosine or l2); off, every candidate is scored
    /// in full.
    pub early_reject: bool,
}

impl SearchParams {
    pub fn new(k: usize, ef: usize) -> Self {
        SearchParams {
            k,
            ef,
            deadline: None,
            cancel: None,
            plan: Plan::Auto,
            early_reject: true,
        }
    }
}

impl SearchParams {
    /// Refuse a k of 0 or past [`MAX_K`], and an ef past [`MAX_EF`].
    pub fn check(&self) -> Result<()> {
        if self.k == 0 {
            return Err(Error::invalid("k must be at least 1"));
        }
        if self.k > MAX_K {
            return Err(Error::invalid(format!(
                "k = {} exceeds the maximum {MAX_K}",
                self.k
            )));
        }
        if self.ef > MAX_EF {
            return Err(Error::invalid(format!(
                "ef = {} exceeds the maximum {MAX_EF}",
                self.ef
            )));
        }
        Ok(())
    }
}

impl Default for SearchParams {
    /// Ten hits at the index's default beam.
    fn default() -> Self {
        SearchParams::new(10, 0)
    }
}

/// Hits already found for a call elsewhere (in an earlier layer of the same
/// index): a search that only adds to them needs nothing farther than the
/// k-th of them, so its beam stops expanding past it (see [`Limit`]).
#[derive(Debug, Clone, Copy)]
pub struct Bound<'a> {
    /// The exact distance of the k-th hit found.
    pub distance: f32,
    /// The exact (stored f32) rows of those k hits: bf16 and i8 traversal
    /// distances are on another scale, and their bound is the farthest
    /// of these rows in it.
    pub rows: &'a [&'a [f32]],
}

/// Borrowed pieces of an index, from a snapshot or from memory.
#[derive(Clone, Copy)]
pub struct IndexParts<'a> {
    pub metric: Metric,
    pub dim: usize,
    /// Present for i8 storage.
    pub quantizer: Option<&'a Quantizer>,
    pub default_ef: usize,
    pub graph: GraphView<'a>,
    pub vectors: VectorSlice<'a>,
    /// Exact vectors for re-ranking (the same rows as `vectors` under f32).
    pub exact: Rows<'a, f32>,
    /// Early rejection for traversals, where measured to apply.
    pub early_reject: Option<EarlyReject>,
    /// Graphs over the items of some attribute values, when built.
    pub value_graphs: Option<ValueGraphsView<'a>>,
}

impl IndexParts<'_> {
    pub fn len(&self) -> usize {
        self.graph.len()
    }

    pub fn is_empty(&self) -> bool {
        self.graph.is_empty()
    }

    /// The beam width a search of `params` uses: its ef, or the index
    /// default for 0, and never below k.
    pub fn beam(&self, params: &SearchParams) -> usize {
        match params.ef {
            0 => self.default_ef,
            ef => ef,
        }
        .max(params.k)
    }

    /// Check a query and convert it for traversal into `scratch`'s buffers.
    pub fn prepare_query(&self, query: &[f32], scratch: &mut Scratch) -> Result<()> {
        if query.len() != self.dim {
            return Err(Error::invalid(format!(
                "query has dimension {}, index has {}",
                query.len(),
                self.dim
            )));
        }
        if let Some(i) = query.iter().position(|x| !x.is_finite()) {
            return Err(Error::invalid(format!(
                "query component {i} is not finite ({})",
                query[i]
            )));
        }
        scratch.q_f32.clear();
        scratch.q_f32.extend_from_slice(query);
        if self.metric == Metric::Cosine && !normalize(&mut scratch.q_f32) {
            return Err(Error::invalid("a zero query vector has no cosine distance"));
        }
        match self.vectors.storage() {
            Storage::F32 => {}
            Storage::Bf16 => {
                scratch.q_bf16.clear();
                scratch
                    .q_bf16
                    .extend(scratch.q_f32.iter().map(|x| f32_to_bf16(*x)));
            }
            Storage::I8 => match self.quantizer {
                Some(q) => q.encode_query(&scratch.q_f32, &mut scratch.q_i8),
                None => return Err(Error::invalid("i8 index without quantizer")),
            },
        }
        Ok(())
    }

    /// Search for the `k` nearest neighbours of `query`, writing them to `out`
    /// nearest first. Allocates nothing once `scratch` and `out` are warm.
    pub fn search_into(
        &self,
        query: &[f32],
        params: &SearchParams,
        scratch: &mut Scratch,
        out: &mut Vec<Neighbor>,
    ) -> Result<SearchStats> {
        self.search_admitted_into(query, params, &Admission::default(), scratch, out)
    }

    /// As [`Self::search_into`], returning only items `admission` admits:
    /// exactly `min(k, admitted)` of them.
    pub fn search_admitted_into(
        &self,
        query: &[f32],
        params: &SearchParams,
        admission: &Admission<'_, '_>,
        scratch: &mut Scratch,
        out: &mut Vec<Neighbor>,
    ) -> Result<SearchStats> {
        self.search_bounded_into(query, params, admission, None, scratch, out)
    }

    /// As [`Self::search_admitted_into`], for hits that join those of
    /// `bound`: the beam may stop short of items farther than its k-th.
    /// Still `min(k, admitted)` hits; those past the bound are approximate.
    pub fn search_bounded_into(
        &self,
        query: &[f32],
        params: &SearchParams,
        admission: &Admission<'_, '_>,
        bound: Option<&Bound<'_>>,
        scratch: &mut Scratch,
        out: &mut Vec<Neighbor>,
    ) -> Result<SearchStats> {
        let s = Request {
            query,
            params,
            admission,
            bound,
        };
        match (params.deadline, params.cancel.as_deref()) {
            (None, None) => self.search_with(s, scratch, out, &NoCancel),
            (Some(d), None) => self.search_with(s, scratch, out, &Deadline(d)),
            (None, Some(f)) => self.search_with(s, scratch, out, &Flag(f)),
            (Some(d), Some(f)) => self.search_with(s, scratch, out, &FlagOrDeadline(f, d)),
        }
    }

    /// `bound` in traversal distance, for the query in `scratch`; the rows
    /// are converted in `scratch`'s buffer.
    fn traversal_bound(&self, bound: &Bound<'_>, scratch: &mut Scratch) -> f32 {
        match self.vectors.storage() {
            Storage::F32 => bound.distance,
            Storage::Bf16 => {
                let kernel = Kernel::<u16>::new(self.metric);
                let row = &mut scratch.row_bf16;
                let mut far = f32::NEG_INFINITY;
                for r in bound.rows {
                    row.clear();
                    row.extend(r.iter().map(|x| f32_to_bf16(*x)));
                    far = far.max(kernel.distance(&scratch.q_bf16, row));
                }
                far
            }
            Storage::I8 => {
                let Some(q) = self.quantizer else {
                    return f32::INFINITY;
                };
                let kernel = Kernel::<i8>::new(self.metric);
                let code = &mut scratch.row_i8;
                let mut far = f32::NEG_INFINITY;
                for r in bound.rows {
                    code.clear();
                    q.encode_row_i8(r, code);
                    far = far.max(kernel.distance(&scratch.q_i8, code));
                }
                far
            }
        }
    }

    /// Run `f` with what stops a search of `params` early (its deadline,
    /// its cancel flag), for work outside the traversal.
    pub fn with_cancel<R>(params: &SearchParams, f: impl FnOnce(&dyn Cancel) -> R) -> R {
        match (params.deadline, params.cancel.as_deref()) {
            (None, None) => f(&NoCancel),
            (Some(d), None) => f(&Deadline(d)),
            (None, Some(flag)) => f(&Flag(flag)),
            (Some(d), Some(flag)) => f(&FlagOrDeadline(flag, d)),
        }
    }

    fn search_with<C: Cancel>(
        &self,
        Request {
            query,
            params,
            admission,
            bound,
        }: Request<'_, '_, '_>,
        scratch: &mut Scratch,
        out: &mut Vec<Neighbor>,
        cancel: &C,
    ) -> Result<SearchStats> {
        params.check()?;
        self.prepare_query(query, scratch)?;
        out.clear();
        let n = self.len();
        let k = params.k;
        let ef = self.beam(params);
        let kernel = Kernel::<f32>::new(self.metric);
        let reject = self.early_reject.filter(|_| params.early_reject);
        let limit = match bound {
            Some(b) if b.rows.len() >= k => Limit {
                bound: self.traversal_bound(b, scratch),
                keep: bounded_keep(ef),
            },
            _ => Limit::NONE,
        };
        if admission.admits_all() {
            // A beam as wide as the index (or a k covering it) is an
            // exhaustive search: do it exactly, which also returns the whole
            // index sorted.
            if ef >= n || params.plan == Plan::Exact {
                let q = &scratch.q_f32;
                exact::knn_rows_into(self.exact, &kernel, q, k, 0..n as u32, out, cancel)?;
                return Ok(SearchStats {
                    distances: n as u64,
                    ..SearchStats::default()
                });
            }
            let stats = self.traverse(
                Traversal::plain(ef, limit, reject),
                scratch,
                cancel,
                &AdmitAll,
            )?;
            self.finish(scratch, k, out, &AdmitAll);
            return Ok(stats);
        }
        if admission.admits_none() {
            return Ok(SearchStats::default());
        }
        let mut stats = SearchStats::default();
        if admission.filter.is_none() && ef < n && params.plan != Plan::Exact {
            // Exclusions and deletions only: they remove a few items from
            // anywhere, so walk the graph as a plain search and drop them
            // from the beam. The answer stands when at least half the beam
            // survives: it is then the top of a beam about as wide as asked.
            // Otherwise the exclusions crowd the query's neighbourhood (a
            // listening history near the query) and the admitted traversal
            // below walks through them instead.
            stats = self.traverse(
                Traversal::plain(ef, limit, reject),
                scratch,
                cancel,
                &AdmitAll,
            )?;
            let kept = self.finish(scratch, k, out, admission);
            if kept >= k.max(ef / 2) {
                return Ok(stats);
            }
        }
        let admitted = admission.estimate(n);
        let share = admitted as f64 / n.max(1) as f64;
        let post = match params.plan {
            Plan::Post => true,
            Plan::Auto => admission.filter.is_some() && share >= POST_MIN_SHARE,
            _ => false,
        };
        if post {
            // Non-admitted nodes navigate; only admitted ones are kept. A
            // beam of ef / share holds about ef admitted nodes.
            let wide = ((ef as f64 / share.max(1e-3)).ceil() as usize).clamp(ef, MAX_EF.max(ef));
            if wide < n {
                let t = Traversal::plain(wide, limit, reject);
                stats = self.traverse(t, scratch, cancel, &AdmitAll)?;
                if self.finish(scratch, k, out, admission) >= k {
                    return Ok(stats);
                }
            }
        }
        // A filter requiring a value that has its own graph walks that
        // graph, where every node holds the value; one that keeps too few
        // of its members is scanned exactly.
        let within = match (params.plan, admission.filter, self.value_graphs) {
            (Plan::Auto, Some(f), Some(graphs)) => f
                .required_values()
                .iter()
                .filter_map(|v| graphs.get(*v))
                .min_by_key(ValueGraph::len),
            _ => None,
        };
        if let Some(values) = within.filter(|g| !prefers_exact(admitted, g.len(), ef)) {
            let share = admitted as f64 / values.len().max(1) as f64;
            let t = Traversal {
                within: Some(values),
                ..Traversal::plain(filtered_ef(ef, share).min(MAX_EF), Limit::NONE, reject)
            };
            stats += self.traverse(t, scratch, cancel, &admission.probe())?;
            if self.finish(scratch, k, out, admission) >= k {
                return Ok(stats);
            }
        }
        let exact_plan = match params.plan {
            Plan::Exact => true,
            Plan::Graph | Plan::Post => false,
            Plan::Auto => within.is_some() || ef >= n || prefers_exact(admitted, n, ef),
        };
        if !exact_plan {
            let ef = match params.plan {
                Plan::Auto => filtered_ef(ef, admitted as f64 / n.max(1) as f64).min(MAX_EF),
                _ => ef,
            };
            // Only a filter: exclusions alone crowd a neighbourhood without
            // making the rest of the index any nearer.
            let check = params.plan == Plan::Auto && admission.filter.is_some();
            scratch.thin_check = check.then_some((admitted, n as u64));
            let t = Traversal::plain(ef, Limit::NONE, reject);
            let traversed = self.traverse(t, scratch, cancel, &admission.probe());
            scratch.thin_check = None;
            stats += traversed?;
            // A filter present but thin around the query (a language other
            // than the query's own) is not connected there by the graph, so
            // the traversal stopped before layer 0 and the matches are
            // scanned below. (Where the filter's items are absent, their
            // own regions, which layer 1 finds, hold the nearest.)
            if !scratch.thin {
                self.finish(scratch, k, out, admission);
                if out.len() >= k {
                    return Ok(stats);
                }
            }
        }
        // The exact plan, or a traversal that found fewer than k (the
        // admitted nodes were not all reachable): scan the matches exactly,
        // so a call returns min(k, matching) hits.
        // Exclusions and deletions are skipped as the scan goes, not taken
        // out of a copy of the matches: the scan allocates nothing.
        let rest = Admission {
            filter: None,
            ..*admission
        };
        let admitted = |id: &u32| rest.admit(*id);
        stats.distances += match admission.filter {
            Some(f) => {
                let matches = f.matches_within(cancel)?.iter().filter(admitted);
                self.scan(matches, &scratch.q_f32, k, out, cancel)?
            }
            None => self.scan(
                (0..n as u32).filter(admitted),
                &scratch.q_f32,
                k,
                out,
                cancel,
            )?,
        };
        Ok(stats)
    }

    /// Complete a search exactly over `ids` (the admitted items), unless
    /// `out` already holds them all; returns how many rows were scored.
    fn scan<C: Cancel>(
        &self,
        ids: impl Iterator<Item = u32> + Clone,
        query: &[f32],
        k: usize,
        out: &mut Vec<Neighbor>,
        cancel: &C,
    ) -> Result<u64> {
        // Done when `out` holds k, or every admitted item (no more of them
        // than it found).
        if out.len() >= k || ids.clone().nth(out.len()).is_none() {
            return Ok(0);
        }
        let kernel = Kernel::<f32>::new(self.metric);
        let mut scored = 0u64;
        let ids = ids.inspect(|_| scored += 1);
        exact::knn_rows_into(self.exact, &kernel, query, k, ids, out, cancel)?;
        Ok(scored)
    }

    /// Move the admitted part of the beam into `out`: its first `k` under
    /// f32 storage, or all of it re-ranked exactly under bf16 and i8, then
    /// cut to `k`. Returns how many beam members were admitted.
    fn finish<A: Admit>(
        &self,
        scratch: &Scratch,
        k: usize,
        out: &mut Vec<Neighbor>,
        admit: &A,
    ) -> usize {
        out.clear();
        let admitted = |id: u32| A::ADMITS_ALL || admit.admit(id);
        if self.vectors.storage() == Storage::F32 {
            out.extend(scratch.results().filter(|c| admitted(c.id)));
            let kept = out.len();
            out.truncate(k);
            return kept;
        }
        let kernel = Kernel::<f32>::new(self.metric);
        let q = &scratch.q_f32;
        // The exact rows are cold (only re-ranking reads them): request
        // them all before computing any distance.
        let lines = (self.dim * 4).div_ceil(64);
        let beam = || scratch.pool.iter().filter(|c| admitted(c.id));
        for c in beam() {
            prefetch(self.exact.row_ptr(c.id).cast(), lines);
        }
        out.extend(beam().map(|c| Neighbor {
            id: c.id,
            distance: kernel.distance(q, self.exact.row(c.id)),
        }));
        let kept = out.len();
        out.sort_unstable_by(|a, b| a.distance.total_cmp(&b.distance).then(a.id.cmp(&b.id)));
        out.truncate(k);
        kept
    }

    fn traverse<C: Cancel, A: Admit>(
        &self,
        t: Traversal<'_>,
        scratch: &mut Scratch,
        cancel: &C,
        admit: &A,
    ) -> Result<SearchStats> {
        match self.vectors {
            VectorSlice::F32(rows) => {
                let q = std::mem::take(&mut scratch.q_f32);
                let r = run(self, rows, &q, t, scratch, cancel, admit);
                scratch.q_f32 = q;
                r
            }
            VectorSlice::Bf16(rows) => {
                let q = std::mem::take(&mut scratch.q_bf16);
                let r = run(self, rows, &q, t, scratch, cancel, admit);
                scratch.q_bf16 = q;
                r
            }
            VectorSlice::I8(rows) => {
                let q = std::mem::take(&mut scratch.q_i8);
                let r = run(self, rows, &q, t, scratch, cancel, admit);
                scratch.q_i8 = q;
                r
            }
        }
    }
}

/// One search as the front door received it.
#[derive(Clone, Copy)]
struct Request<'r, 'f, 'a> {
    query: &'r [f32],
    params: &'r SearchParams,
    admission: &'r Admission<'f, 'a>,
    bound: Option<&'r Bound<'r>>,
}

/// How one traversal runs: its beam, where it may stop, its early
/// rejection, and the value graph it walks instead of the main graph.
#[derive(Clone, Copy)]
struct Traversal<'v> {
    ef: usize,
    limit: Limit,
    reject: Option<EarlyReject>,
    within: Option<ValueGraph<'v>>,
}

impl Traversal<'_> {
    fn plain(ef: usize, limit: Limit, reject: Option<EarlyReject>) -> Self {
        Traversal {
            ef,
            limit,
            reject,
            within: None,
        }
    }
}

fn run<E: Element, C: Cancel, A: Admit>(
    parts: &IndexParts<'_>,
    rows: Rows<'_, E>,
    q: &[E],
    Traversal {
        ef,
        limit,
        reject,
        within,
    }: Traversal<'_>,
    scratch: &mut Scratch,
    cancel: &C,
    admit: &A,
) -> Result<SearchStats> {
    let (graph, metric) = (&parts.graph, parts.metric);
    // Traversal distances only need to rank like the true ones (i8 codes are
    // scaled per query); results are re-ranked exactly.
    let space = Space::new(rows, Kernel::new(metric), q).with_early_reject(reject);
    // The unfiltered path keeps its own loop: it pays nothing for admission.
    if A::ADMITS_ALL {
        hnsw_search_limited(graph, &space, ef, limit, scratch, cancel)
    } else if let Some(values) = within {
        hnsw_search_value(&values, &space, ef, scratch, cancel, admit, graph.m0)
    } else {
        // Bridge until a full neighbour list (m0) of admitted nodes: on
        // words-dev-384, fanouts of m0/4 and m0/2 cost about the same at 50%
        // selectivity for recall 0.95, and lose recall at 10% (docs/filters.md).
        hnsw_search_admitted(graph, &space, ef, scratch, cancel, admit, graph.m0)
    }
}

/// An open snapshot, ready to search from many threads at once.
pub struct Index {
    snapshot: Snapshot,
    pool: ScratchPool,
    postings: PostingCache,
    ids: std::sync::OnceLock<IdTable>,
    excluded: ResolvedLists,
    /// Measured on the first search, not at open: open stays O(1).
    early_reject: std::sync::OnceLock<Option<EarlyReject>>,
}

impl Index {
    pub fn open(path: impl AsRef<Path>) -> Result<Index> {
        Ok(Index::from_snapshot(Snapshot::open(path)?))
    }

    pub fn open_with(path: impl AsRef<Path>, options: &OpenOptions) -> Result<Index> {
        Ok(Index::from_snapshot(Snapshot::open_with(path, options)?))
    }

    pub fn from_snapshot(snapshot: Snapshot) -> Index {
        let pool = ScratchPool::new(snapshot.len());
        Index {
            snapshot,
            pool,
            postings: PostingCache::default(),
            ids: std::sync::OnceLock::new(),
            excluded: ResolvedLists::default(),
            early_reject: std::sync::OnceLock::new(),
        }
    }

    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// Idle scratch spaces pooled for the next searches (at most
    /// [`ScratchPool::keep_limit`]).
    pub fn pooled_scratch(&self) -> usize {
        self.pool.idle()
    }

    pub fn parts(&self) -> IndexParts<'_> {
        let s = &self.snapshot;
        let m = s.manifest();
        IndexParts {
            metric: s.metric(),
            dim: s.dim(),
            quantizer: s.quantizer(),
            default_ef: match m.default_ef {
                0 => DEFAULT_EF,
                ef => ef as usize,
            },
            graph: s.graph(),
            vectors: s.vectors(),
            exact: s.vectors_f32(),
            early_reject: self.early_reject(),
            value_graphs: s.value_graphs(),
        }
    }

    /// Early rejection as measured on this index's traversal vectors and
    /// links, if it applies ([`EarlyReject::measure`]); measured once.
    pub fn early_reject(&self) -> Option<EarlyReject> {
        let s = &self.snapshot;
        *self
            .early_reject
            .get_or_init(|| EarlyReject::measure(s.metric(), &s.vectors(), &s.graph()))
    }

    /// Search with a pooled scratch space, into a caller-owned buffer.
    pub fn search_into(
        &self,
        query: &[f32],
        params: &SearchParams,
        out: &mut Vec<Neighbor>,
    ) -> Result<SearchStats> {
        let mut scratch = self.pool.get();
        let r = self.parts().search_into(query, params, &mut scratch, out);
        self.checked(r, out)
    }

    /// As [`Self::search_into`], returning only items `filter` admits (see
    /// [`Self::filter`]): exactly `min(k, matching)` of them.
    pub fn search_filtered_into(
        &self,
        query: &[f32],
        params: &SearchParams,
        filter: Option<&FilterPlan<'_>>,
        out: &mut Vec<Neighbor>,
    ) -> Result<SearchStats> {
        self.search_admitted_into(query, params, &Admission::filter(filter), out)
    }

    /// As [`Self::search_into`], returning only items `admission` admits
    /// (a filter, exclusions, deletions): exactly `min(k, admitted)` of them.
    pub fn search_admitted_into(
        &self,
        query: &[f32],
        params: &SearchParams,
        admission: &Admission<'_, '_>,
        out: &mut Vec<Neighbor>,
    ) -> Result<SearchStats> {
        self.search_bounded_into(query, params, admission, None, out)
    }

    /// As [`Self::search_admitted_into`], adding to hits found elsewhere
    /// (see [`Bound`]).
    pub fn search_bounded_into(
        &self,
        query: &[f32],
        params: &SearchParams,
        admission: &Admission<'_, '_>,
        bound: Option<&Bound<'_>>,
        out: &mut Vec<Neighbor>,
    ) -> Result<SearchStats> {
        let mut scratch = self.pool.get();
        let r =
            self.parts()
                .search_bounded_into(query, params, admission, bound, &mut scratch, out);
        self.checked(r, out)
    }

    /// What a search may return: nothing from a snapshot whose file was cut
    /// or modified under it, and no non-finite distance. Vectors are checked
    /// to be finite by `verify`, and queries at the door, so a NaN here
    /// means bytes that `verify` never passed (a file served unverified, or
    /// changed since), or a query so large that its distances overflow:
    /// the call reports corruption or an invalid argument instead of
    /// ranking on it (see `check_found`). Only the `k` results are checked,
    /// not every candidate.
    fn checked(&self, r: Result<SearchStats>, out: &mut Vec<Neighbor>) -> Result<SearchStats> {
        let verdict = self
            .snapshot
            .check_intact()
            .and(r)
            .and_then(|stats| self.check_found(out).map(|()| stats));
        if verdict.is_err() {
            out.clear();
        }
        verdict
    }

    /// The checks of a search's results (see `checked`), for results this
    /// index's rows were scored into some other way.
    ///
    /// A non-finite distance to a stored row that is finite and of ordinary
    /// size is the query's doing: finite queries with components around
    /// 1e19 and beyond overflow f32 under l2 and dot. With a row `x` whose
    /// squared norm is below `f32::MAX / 4`, `|q - x|² <= 2|q|² + 2|x|²` and
    /// `|q·x| <= |q| |x|` overflow only when the query is itself that large:
    /// the caller's invalid argument (found by the `search_request` fuzz
    /// target), not damage to report as corruption.
    pub(crate) fn check_found(&self, found: &[Neighbor]) -> Result<()> {
        self.snapshot.check_intact()?;
        let Some(h) = found.iter().find(|h| !h.distance.is_finite()) else {
            return Ok(());
        };
        if self.row_is_ordinary(h.id) {
            return Err(Error::invalid(format!(
                "the distance from the query to item {:?} is {} under {}: the query's \
                 components are too large for f32 (scale the query down)",
                self.id(h.id),
                h.distance,
                self.snapshot.metric().name()
            )));
        }
        Err(Error::Corrupt {
            path: self.snapshot.path().to_path_buf(),
            reason: format!(
                "a search met a non-finite distance ({} to node {}): the stored \
                 vectors are damaged (run `fathom verify`)",
                h.distance, h.id
            ),
        })
    }

    /// Whether node `node`'s stored vectors (traversal and exact) are finite
    /// and of a size no ordinary query overflows against.
    fn row_is_ordinary(&self, node: u32) -> bool {
        let exact = self.snapshot.vectors_f32().row(node);
        let traversal_finite = match self.snapshot.vectors() {
            VectorSlice::Bf16(r) => r.row(node).iter().all(|x| bf16_to_f32(*x).is_finite()),
            VectorSlice::F32(r) => r.row(node).iter().all(|x| x.is_finite()),
            VectorSlice::I8(_) => true,
        };
        traversal_finite
            && !exact.is_empty()
            && exact.iter().all(|x| x.is_finite())
            && crate::distance::norm2_f64(exact) < crate::distance::MAX_ROW_NORM2
    }

    /// The fields that have value graphs here (`build --value-graphs`):
    /// layers built from this index (deltas, merges, compactions) build
    /// them for the same fields.
    pub fn value_graph_fields(&self) -> Vec<String> {
        let (Some(graphs), Some(attrs)) = (self.snapshot.value_graphs(), self.attributes()) else {
            return Vec::new();
        };
        let mut names: Vec<String> = graphs
            .values()
            .filter_map(|v| attrs.field_of_value(v).map(|f| f.name.clone()))
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// The typed attribute store, when the snapshot has one.
    pub fn attributes(&self) -> Option<Attributes<'_>> {
        self.snapshot.attribute_store(&self.postings)
    }

    /// Parse, bind and plan a filter expression against this index's
    /// attributes; reuse the plan for every query it applies to.
    pub fn filter(&self, expr: &str) -> Result<FilterPlan<'_>> {
        Ok(FilterPlan::new(expr, self.attributes())?)
    }

    /// As [`Self::filter`], for a call with a deadline or a cancel flag:
    /// planning stops with `cancel`'s error once it says so
    /// ([`FilterPlan::new_within`]).
    pub fn filter_within(&self, expr: &str, cancel: &dyn Cancel) -> Result<FilterPlan<'_>> {
        FilterPlan::new_within(expr, self.attributes(), cancel)
    }

    pub fn search(&self, query: &[f32], params: &SearchParams) -> Result<Vec<Neighbor>> {
        let mut out = Vec::with_capacity(params.k.min(self.snapshot.len()));
        self.search_into(query, params, &mut out)?;
        Ok(out)
    }

    /// The node of an external id: a hash lookup, the table built on first
    /// use.
    pub fn find(&self, id: &str) -> Option<u32> {
        self.id_table().find(&self.snapshot, id)
    }

    fn id_table(&self) -> &IdTable {
        self.ids.get_or_init(|| IdTable::new(&self.snapshot))
    }

    /// Build the id table now rather than at the first call that names an
    /// id (36 ms and 32 MB at 1M items): a server loading an index calls
    /// this, so the first call with seeds or exclusions after a reload does
    /// not pay it.
    pub fn prepare_ids(&self) {
        self.id_table();
    }

    /// Whether the id table is built.
    pub fn ids_prepared(&self) -> bool {
        self.ids.get().is_some()
    }

    /// The external id of a node.
    pub fn id(&self, node: u32) -> &str {
        self.snapshot.id(node).unwrap_or("")
    }

    /// The node numbers of external ids, as a bitmap. Unknown ids are an
    /// error naming the first, unless `skip_unknown` (exclusions may name
    /// items the index no longer holds).
    pub fn nodes_of<S: AsRef<str>>(
        &self,
        ids: &[S],
        skip_unknown: bool,
    ) -> Result<roaring::RoaringBitmap> {
        let mut nodes = Vec::with_capacity(ids.len());
        for id in ids {
            match self.find(id.as_ref()) {
                Some(n) => nodes.push(n),
                None if skip_unknown => {}
                None => return Err(Error::UnknownItem(id.as_ref().to_string())),
            }
        }
        Ok(bitmap_of(
            self.snapshot.len(),
            nodes.len(),
            nodes.into_iter(),
        ))
    }

    /// The nodes of an exclusion list, unknown ids skipped. A long list is
    /// kept once resolved, under its key, so the same list sent again
    /// costs no lookups.
    pub fn excluded_nodes(&self, list: &IdList<'_>) -> std::sync::Arc<roaring::RoaringBitmap> {
        let resolve = || self.resolve_ids(list);
        match list.key() {
            Some(key) => self.excluded.get_or_resolve(key, resolve),
            None => std::sync::Arc::new(resolve()),
        }
    }

    /// The nodes of a list's ids that this index holds, resolved now (not
    /// kept): what [`Self::excluded_nodes`] costs for a list not seen before.
    pub fn resolve_ids(&self, list: &IdList<'_>) -> roaring::RoaringBitmap {
        self.id_table().resolve(&self.snapshot, list)
    }

    /// The attributes of an external id, as one JSON object.
    pub fn attributes_json(&self, id: &str) -> Option<&str> {
        self.snapshot.attributes(self.find(id)?)
    }

    /// The attributes of node `node`, as one JSON object.
    pub fn node_attributes_json(&self, node: u32) -> Option<&str> {
        self.snapshot.attributes(node)
    }

    /// The stored (exact, normalized under cosine) vector of an external id.
    pub fn vector_of(&self, id: &str) -> Option<&[f32]> {
        let node = self.find(id)?;
        Some(self.snapshot.vectors_f32().row(node))
    }
}

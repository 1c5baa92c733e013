//! Measuring an index: recall@k against ground truth, per-query latency
//! percentiles, throughput and work per query, over a query set on N threads.
//! Used by `fathom eval`, benchmarks and tests. An index of several parts
//! (a layered folder's layers) is measured through [`retrieve`], as it is
//! searched, against exact truth over its live items.

use std::time::Instant;

use roaring::RoaringBitmap;
use serde::Serialize;

use crate::distance::{normalize, Kernel, Metric};
use crate::error::{Error, Result};
use crate::exact::knn_rows_into;
use crate::filter::FilterPlan;
use crate::index::{Index, SearchParams};
use crate::retrieve::{Call, Source};
use crate::search::{Neighbor, NoCancel, SearchStats};
use crate::shards::probe::{retrieve_probed, Probe};

/// One line of `fathom eval --json`.
#[derive(Debug, Clone, Serialize)]
pub struct EvalRow {
    pub engine: String,
    pub ef: usize,
    pub k: usize,
    pub recall: f64,
    pub qps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub mean_us: f64,
    pub mean_distances: f64,
    /// Of those, candidates turned away early ([`crate::reject`]).
    pub mean_rejected: f64,
    /// Nodes expanded per query.
    pub mean_expansions: f64,
    /// Of the expansions, the share that read turned-away neighbours' links
    /// (two hops), and those link lists per query.
    pub bridged_share: f64,
    pub mean_bridge_lists: f64,
    pub threads: usize,
    pub queries: usize,
    /// The filter expression, when the queries were filtered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Items matching the filter, and their share of the index.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matching: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selectivity: Option<f64>,
    /// The filtered plan asked for: auto, exact or graph.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// Whether traversals could turn candidates away early
    /// ([`SearchParams::early_reject`]; it applies to rows of 256
    /// dimensions or more).
    pub early_reject: bool,
}

/// recall@k of one result list against ground-truth rows (first k used).
pub fn recall_at_k(found: &[u32], truth: &[u32], k: usize) -> f64 {
    let truth = &truth[..k.min(truth.len())];
    if truth.is_empty() {
        return 1.0;
    }
    let hits = found.iter().take(k).filter(|id| truth.contains(id)).count();
    hits as f64 / truth.len() as f64
}

/// Mean recall@k over all queries.
pub fn mean_recall(results: &[Vec<u32>], truth: &[Vec<u32>], k: usize) -> f64 {
    let n = results.len().min(truth.len());
    if n == 0 {
        return 0.0;
    }
    (0..n)
        .map(|i| recall_at_k(&results[i], &truth[i], k))
        .sum::<f64>()
        / n as f64
}

/// `p`-th percentile (0..=100) of sorted values, nearest rank.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Run every query at one ef on `threads` threads and measure.
pub fn evaluate(
    index: &Index,
    queries: &[Vec<f32>],
    truth: &[Vec<u32>],
    k: usize,
    ef: usize,
    threads: usize,
) -> Result<(EvalRow, Vec<Vec<u32>>)> {
    evaluate_filtered(
        index,
        queries,
        truth,
        &SearchParams::new(k, ef),
        threads,
        None,
    )
}

/// [`evaluate`] with a filter (planned once, as a server plans a batch's) and
/// any search parameters (a forced plan, for measuring the planner's switch
/// point; early rejection off).
pub fn evaluate_filtered(
    index: &Index,
    queries: &[Vec<f32>],
    truth: &[Vec<u32>],
    params: &SearchParams,
    threads: usize,
    filter: Option<(&str, &FilterPlan<'_>)>,
) -> Result<(EvalRow, Vec<Vec<u32>>)> {
    let fplan = filter.map(|f| f.1);
    let timed = run_timed(
        queries,
        threads,
        || Vec::<Neighbor>::with_capacity(params.k),
        |out, q, ids| {
            let stats = index.search_filtered_into(q, params, fplan, out)?;
            ids.extend(out.iter().map(|n| n.id));
            Ok(stats)
        },
    )?;
    let matching = fplan.map(|p| (p.count(), p.selectivity()));
    let engine = format!("fathom-{}", index.snapshot().storage());
    Ok(timed.into_row(engine, truth, params, filter.map(|f| f.0), matching))
}

/// The nodes of several sources (the layers of a layered index) as one
/// numbering, for recall: node `n` of source `s` is `offsets[s] + n`.
#[derive(Debug, Clone)]
pub struct Numbering {
    offsets: Vec<u32>,
    /// For sources that may hold copies of one id (a sharded folder placed
    /// with a closure): each node's number is its id's first node's.
    canonical: Option<Vec<u32>>,
}

impl Numbering {
    /// Fails when the sources hold more nodes than one `u32` numbers.
    pub fn of(sources: &[Source<'_, '_>]) -> Result<Numbering> {
        let mut offsets = Vec::with_capacity(sources.len());
        let mut next = 0u64;
        for s in sources {
            offsets.push(u32::try_from(next).map_err(|_| too_many())?);
            next += s.index.snapshot().len() as u64;
        }
        u32::try_from(next).map_err(|_| too_many())?;
        Ok(Numbering {
            offsets,
            canonical: None,
        })
    }

    /// [`Self::of`], or [`Self::by_id`] when the sources may hold copies of
    /// one id (a sharded folder placed with a closure).
    pub fn for_parts(sources: &[Source<'_, '_>], copies: bool) -> Result<Numbering> {
        if copies {
            Self::by_id(sources)
        } else {
            Self::of(sources)
        }
    }

    /// [`Self::of`] for sources that may hold copies of one id: the copies
    /// share a number, so a hit counts once however many hold it.
    pub fn by_id(sources: &[Source<'_, '_>]) -> Result<Numbering> {
        let mut numbering = Self::of(sources)?;
        let mut first = std::collections::HashMap::new();
        let mut canonical = Vec::new();
        for s in sources {
            let index = s.index;
            for node in 0..index.snapshot().len() as u32 {
                let next = canonical.len() as u32;
                canonical.push(*first.entry(index.id(node)).or_insert(next));
            }
        }
        numbering.canonical = Some(canonical);
        Ok(numbering)
    }

    /// Whether copies of one id share a number ([`Self::by_id`]): searches
    /// measured against it keep one hit per id.
    pub fn holds_copies(&self) -> bool {
        self.canonical.is_some()
    }

    pub fn number(&self, source: u32, node: u32) -> u32 {
        let n = self.offsets[source as usize] + node;
        match &self.canonical {
            Some(c) => c[n as usize],
            None => n,
        }
    }
}

fn too_many() -> Error {
    Error::invalid("the indexes hold more than 2^32 nodes together: too many to measure at once")
}

/// Per source, the nodes a search of it may return: every node but its
/// deleted ones, and of those only the ones its filter matches.
pub fn admitted_nodes(sources: &[Source<'_, '_>]) -> Vec<RoaringBitmap> {
    sources
        .iter()
        .map(|s| {
            let mut live = match s.filter {
                Some(plan) => plan.matches().clone(),
                None => {
                    let mut all = RoaringBitmap::new();
                    all.insert_range(0..s.index.snapshot().len() as u32);
                    all
                }
            };
            if let Some(dead) = s.deleted {
                live -= dead;
            }
            live
        })
        .collect()
}

/// Exact truth over several sources by brute force: per query, the `k`
/// nearest of the `admitted` nodes of every source (as
/// [`admitted_nodes`] lists them), nearest first, numbered by `numbering`.
/// The sources must share a metric and dimension, as a call's do.
pub fn knn_among_sources(
    sources: &[Source<'_, '_>],
    admitted: &[RoaringBitmap],
    numbering: &Numbering,
    queries: &[Vec<f32>],
    k: usize,
    threads: usize,
) -> Vec<Vec<u32>> {
    let Some(first) = sources.first() else {
        return vec![Vec::new(); queries.len()];
    };
    let metric = first.index.snapshot().metric();
    let kernel = Kernel::<f32>::new(metric);
    let mut results = vec![Vec::new(); queries.len()];
    let threads = threads.clamp(1, queries.len().max(1));
    let chunk = queries.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        for (qs, rs) in queries.chunks(chunk).zip(results.chunks_mut(chunk)) {
            let kernel = &kernel;
            scope.spawn(move || {
                let mut found = Vec::with_capacity(k);
                let mut all: Vec<(f32, u32)> = Vec::new();
                for (q, r) in qs.iter().zip(rs.iter_mut()) {
                    let mut q = q.clone();
                    if metric == Metric::Cosine && !normalize(&mut q) {
                        continue;
                    }
                    all.clear();
                    for (s, (src, ids)) in sources.iter().zip(admitted).enumerate() {
                        let rows = src.index.snapshot().vectors_f32();
                        // NoCancel never stops the scan.
                        let _ =
                            knn_rows_into(rows, kernel, &q, k, ids.iter(), &mut found, &NoCancel);
                        all.extend(
                            found
                                .iter()
                                .map(|n| (n.distance, numbering.number(s as u32, n.id))),
                        );
                    }
                    all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                    // Copies of one id share a number: count it once.
                    for &(_, id) in &all {
                        if r.len() == k {
                            break;
                        }
                        if !r.contains(&id) {
                            r.push(id);
                        }
                    }
                }
            });
        }
    });
    results
}

/// An index of several parts, as [`evaluate_sources`] searches it.
pub struct Parts<'a, 's, 'i> {
    /// Every part, its filter plan bound.
    pub sources: &'a [Source<'s, 'i>],
    /// How hits are numbered to score against the truth (as
    /// [`knn_among_sources`] finds it).
    pub numbering: &'a Numbering,
    /// The shards a query searches first, in a folder placed by similarity.
    pub probe: Option<&'a Probe<'a>>,
}

/// [`evaluate_filtered`] for an index of several parts: every query runs
/// through [`retrieve_probed`] over `parts`, and its hits are scored
/// against `truth`. `filter` labels the row with its expression and its
/// `matching` items.
pub fn evaluate_sources(
    parts: &Parts<'_, '_, '_>,
    queries: &[Vec<f32>],
    truth: &[Vec<u32>],
    params: &SearchParams,
    threads: usize,
    filter: Option<(&str, u64)>,
) -> Result<(EvalRow, Vec<Vec<u32>>)> {
    let Parts {
        sources,
        numbering,
        probe,
    } = *parts;
    let first = sources
        .first()
        .ok_or_else(|| Error::invalid("nothing to measure: no index"))?;
    let timed = run_timed(
        queries,
        threads,
        || (),
        |_, q, ids| {
            let call = Call {
                vector: q,
                params: params.clone(),
                distinct_ids: numbering.holds_copies(),
                ..Call::default()
            };
            let found = retrieve_probed(sources, &call, probe)?;
            ids.extend(
                found
                    .hits
                    .iter()
                    .map(|h| numbering.number(h.source, h.node)),
            );
            Ok(found.stats)
        },
    )?;
    // Items a search can return, filtered or not.
    let live: u64 = sources
        .iter()
        .map(|s| s.index.snapshot().len() as u64 - s.deleted.map_or(0, RoaringBitmap::len))
        .sum();
    let matching = filter.map(|f| (f.1, f.1 as f64 / live.max(1) as f64));
    let engine = format!("fathom-{}", first.index.snapshot().storage());
    Ok(timed.into_row(engine, truth, params, filter.map(|f| f.0), matching))
}

/// One captured call to replay: its query vector, the sources it searches
/// (each part's filter plan bound to the call's filter), and what it
/// excluded.
pub struct Replayed<'a, 's, 'i> {
    pub vector: &'a [f32],
    pub sources: &'a [Source<'s, 'i>],
    pub exclude_ids: &'a [String],
    pub exclude_keys: &'a [u64],
}

impl Replayed<'_, '_, '_> {
    fn call(&self, params: &SearchParams, numbering: &Numbering) -> Call<'_> {
        Call {
            vector: self.vector,
            exclude_ids: self.exclude_ids,
            exclude_keys: self.exclude_keys,
            params: params.clone(),
            distinct_ids: numbering.holds_copies(),
            ..Call::default()
        }
    }
}

/// The exact answers of `calls`, as the exact plan finds them (every
/// admitted item of every part scored), numbered by `numbering`.
pub fn replay_truth(
    calls: &[Replayed<'_, '_, '_>],
    numbering: &Numbering,
    k: usize,
    threads: usize,
) -> Result<Vec<Vec<u32>>> {
    let exact = SearchParams {
        plan: crate::index::Plan::Exact,
        ..SearchParams::new(k, 0)
    };
    let timed = replay_pass(calls, numbering, &exact, threads)?;
    Ok(timed.ids)
}

/// Search each of `calls` at `params` and score the answers against
/// `truth` (as [`replay_truth`] finds it).
pub fn evaluate_replay(
    calls: &[Replayed<'_, '_, '_>],
    numbering: &Numbering,
    truth: &[Vec<u32>],
    params: &SearchParams,
    threads: usize,
) -> Result<(EvalRow, Vec<Vec<u32>>)> {
    let first = calls
        .first()
        .and_then(|c| c.sources.first())
        .ok_or_else(|| Error::invalid("nothing to measure: no calls"))?;
    let engine = format!("fathom-{}", first.index.snapshot().storage());
    let timed = replay_pass(calls, numbering, params, threads)?;
    Ok(timed.into_row(engine, truth, params, Some("captured requests"), None))
}

/// Search each of `calls` at `params`, timed, its hits numbered.
fn replay_pass(
    calls: &[Replayed<'_, '_, '_>],
    numbering: &Numbering,
    params: &SearchParams,
    threads: usize,
) -> Result<Timed> {
    run_timed(
        calls,
        threads,
        || (),
        |_, c, ids| {
            let found = crate::retrieve::retrieve(c.sources, &c.call(params, numbering))?;
            ids.extend(
                found
                    .hits
                    .iter()
                    .map(|h| numbering.number(h.source, h.node)),
            );
            Ok(found.stats)
        },
    )
}

/// What a timed pass over the queries found: each query's ids and latency,
/// the work done, the wall time and the threads it ran on.
struct Timed {
    ids: Vec<Vec<u32>>,
    lat: Vec<f64>,
    work: SearchStats,
    wall: f64,
    threads: usize,
}

/// Run `one` for each query on up to `threads` threads (each with its own
/// state from `init`), timing each query and the whole pass.
fn run_timed<S, Q: Sync>(
    queries: &[Q],
    threads: usize,
    init: impl Fn() -> S + Sync,
    one: impl Fn(&mut S, &Q, &mut Vec<u32>) -> Result<SearchStats> + Sync,
) -> Result<Timed> {
    let threads = threads.clamp(1, queries.len().max(1));
    let chunk = queries.len().div_ceil(threads).max(1);
    let mut ids: Vec<Vec<u32>> = vec![Vec::new(); queries.len()];
    let mut lat: Vec<f64> = vec![0.0; queries.len()];
    let mut work = SearchStats::default();
    let start = Instant::now();
    let (init, one) = (&init, &one);
    let outcome: Result<Vec<SearchStats>> = std::thread::scope(|s| {
        let handles: Vec<_> = queries
            .chunks(chunk)
            .zip(ids.chunks_mut(chunk).zip(lat.chunks_mut(chunk)))
            .map(|(qs, (ids, lat))| {
                s.spawn(move || -> Result<SearchStats> {
                    let mut state = init();
                    let mut work = SearchStats::default();
                    for ((q, r), l) in qs.iter().zip(ids.iter_mut()).zip(lat.iter_mut()) {
                        let t = Instant::now();
                        work += one(&mut state, q, r)?;
                        *l = t.elapsed().as_secs_f64() * 1e6;
                    }
                    Ok(work)
                })
            })
            .collect();
        handles
            .into_iter()
            // A panicking search thread is a bug: surface it, don't count it as 0.
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    for w in outcome? {
        work += w;
    }
    let wall = start.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    Ok(Timed {
        ids,
        lat,
        work,
        wall,
        threads,
    })
}

impl Timed {
    /// The pass as a row of the report, scored against `truth`; `matching`
    /// is the filter's matching items and their share.
    fn into_row(
        self,
        engine: String,
        truth: &[Vec<u32>],
        params: &SearchParams,
        filter: Option<&str>,
        matching: Option<(u64, f64)>,
    ) -> (EvalRow, Vec<Vec<u32>>) {
        let n = self.ids.len();
        let nq = n.max(1) as f64;
        let row = EvalRow {
            engine,
            ef: params.ef,
            k: params.k,
            recall: mean_recall(&self.ids, truth, params.k),
            qps: n as f64 / self.wall.max(1e-9),
            p50_us: percentile(&self.lat, 50.0),
            p99_us: percentile(&self.lat, 99.0),
            mean_us: self.lat.iter().sum::<f64>() / nq,
            mean_distances: self.work.distances as f64 / nq,
            mean_rejected: self.work.rejected as f64 / nq,
            mean_expansions: self.work.expansions as f64 / nq,
            bridged_share: self.work.bridged as f64 / (self.work.expansions.max(1)) as f64,
            mean_bridge_lists: self.work.bridge_lists as f64 / nq,
            threads: self.threads,
            queries: n,
            filter: filter.map(str::to_string),
            matching: matching.map(|m| m.0),
            selectivity: matching.map(|m| m.1),
            plan: filter.map(|_| format!("{:?}", params.plan).to_lowercase()),
            early_reject: params.early_reject,
        };
        (row, self.ids)
    }
}

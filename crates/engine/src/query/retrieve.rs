//! One retrieval call as a caller states it: a query vector or examples
//! with a strategy, exclusions, and per-group caps and diversity, over one
//! index or several (federated: a search page of tracks and episodes).
//! `fathom serve` and `fathom search` both run calls through [`retrieve`],
//! so the two cannot drift apart.
//!
//! Each index is searched with the same admit-check as a plain search (its
//! filter, the caller's exclusions and the seed items), then the per-index
//! lists go through the one top-k merge of [`crate::topk`]. A call
//! allocates (the per-source lists, the merge); the index searches it runs
//! do not, once warm.

use std::collections::HashMap;
use std::time::Instant;

use rayon::prelude::*;
use roaring::RoaringBitmap;

use crate::admit::Admission;
use crate::attributes::{Attributes, FieldKind, NO_VALUE};
use crate::distance::{Kernel, Metric};
use crate::error::{Error, Result};
use crate::exact::top_by;
use crate::filter::FilterPlan;
use crate::ids::IdList;
use crate::index::{prefers_exact, Bound, Index, SearchParams, MAX_K};
use crate::recommend::{average_vector, prepare_example, Scorer, Strategy};
use crate::search::{Neighbor, SearchStats};
use crate::topk::{merge, pick, Hit, Pick, UNCAPPED};

/// One index of a call, or one layer of a layered index, with its filter
/// already bound (callers plan a filter once and reuse it across a batch).
/// A plan is tied to the index it was bound to (`'i`), which outlives this
/// borrow of it (`'s`).
#[derive(Clone, Copy)]
pub struct Source<'s, 'i> {
    /// For error messages.
    pub name: &'s str,
    pub index: &'s Index,
    pub filter: Option<&'s FilterPlan<'i>>,
    /// Nodes never to return: deleted, or replaced in a later layer.
    pub deleted: Option<&'s RoaringBitmap>,
    /// The index (as the caller counts them) this source belongs to: the
    /// layers of one index share it, for `min_per_index`.
    pub owner: u32,
}

impl<'s, 'i> Source<'s, 'i> {
    /// A whole index, the `owner`-th of a call.
    pub fn index(
        name: &'s str,
        index: &'s Index,
        filter: Option<&'s FilterPlan<'i>>,
        owner: u32,
    ) -> Self {
        Source {
            name,
            index,
            filter,
            deleted: None,
            owner,
        }
    }
}

/// What a call asks for, beyond the sources.
#[derive(Debug, Clone, Default)]
pub struct Call<'a> {
    /// The query; with examples, one more positive example (may be empty).
    pub vector: &'a [f32],
    /// Examples by stored id: looked up in every source; the first holding
    /// an id gives its vector, and no source returns it.
    pub positive_ids: &'a [String],
    pub negative_ids: &'a [String],
    /// Examples as raw vectors (a user model's taste vectors).
    pub positive_vectors: Vec<&'a [f32]>,
    pub negative_vectors: Vec<&'a [f32]>,
    pub strategy: Strategy,
    /// Never return these ids; ids a source does not hold are ignored.
    pub exclude_ids: &'a [String],
    /// `k`, `ef`, the deadline and the filter plan, as for a plain search.
    pub params: SearchParams,
    /// Maximal marginal relevance with λ = 1 − diversity; 0 is off.
    pub diversity: f32,
    /// Candidates per source that MMR and group caps pick from (0: 4·k);
    /// group caps search wider when these hold fewer than k under the cap.
    pub candidates: usize,
    /// At most `group_size` hits per value of this keyword field ("" off).
    pub group_by: &'a str,
    pub group_size: usize,
    /// Each source gets at least this many hits when it has them.
    pub min_per_index: usize,
}

impl Call<'_> {
    fn has_examples(&self) -> bool {
        !(self.positive_ids.is_empty()
            && self.negative_ids.is_empty()
            && self.positive_vectors.is_empty()
            && self.negative_vectors.is_empty())
    }
}

/// The answer: hits (`Hit::source` indexes the call's sources) and the
/// work it took.
#[derive(Debug, Default)]
pub struct Retrieved {
    pub hits: Vec<Hit>,
    pub stats: SearchStats,
}

/// The examples of a call, resolved against its sources.
struct Examples {
    /// Stored form (normalized under cosine).
    positives: Vec<Vec<f32>>,
    negatives: Vec<Vec<f32>>,
    /// Per source, its nodes that are seeds (never returned).
    seeds: Vec<RoaringBitmap>,
}

/// Run `call` over `sources`.
pub fn retrieve(sources: &[Source<'_, '_>], call: &Call<'_>) -> Result<Retrieved> {
    // A source whose file was cut under its mapping reads as zeros: its ids
    // are not found, its vectors are zero. Whatever failed, that is why.
    run(sources, call).or_else(|e| {
        sources
            .iter()
            .try_for_each(|s| s.index.snapshot().check_intact())?;
        Err(e)
    })
}

fn run(sources: &[Source<'_, '_>], call: &Call<'_>) -> Result<Retrieved> {
    let (metric, dim) = check_sources(sources)?;
    let k = call.params.k;
    if k == 0 {
        return Err(Error::invalid("k must be at least 1"));
    }
    if k > MAX_K {
        return Err(Error::invalid(format!(
            "k = {k} exceeds the maximum {MAX_K}"
        )));
    }
    if !(0.0..=1.0).contains(&call.diversity) {
        return Err(Error::invalid(format!(
            "diversity = {} must lie in [0, 1]",
            call.diversity
        )));
    }
    let mmr = call.diversity > 0.0;
    let candidates = match call.candidates {
        0 => k.saturating_mul(4).min(MAX_K),
        c if c < k => {
            return Err(Error::invalid(format!(
                "candidates = {c} must be at least k = {k}"
            )))
        }
        c if c > MAX_K => {
            return Err(Error::invalid(format!(
                "candidates = {c} exceeds the maximum {MAX_K}"
            )))
        }
        c => c,
    };
    let owners: Vec<u32> = sources.iter().map(|s| s.owner).collect();
    let indexes = owners.iter().max().map_or(0, |&o| o as usize + 1);
    if call.min_per_index.saturating_mul(indexes) > k {
        return Err(Error::invalid(format!(
            "min_per_index = {} over {indexes} indexes asks for more than k = {k} hits",
            call.min_per_index,
        )));
    }
    let groups = group_columns(sources, call)?;
    let examples = resolve_examples(sources, call, metric, dim)?;
    // The one query of a plain or average-vector call.
    let query = match (&examples, call.strategy) {
        (None, _) => Some(call.vector.to_vec()),
        (Some(e), Strategy::AverageVector) => {
            let pos: Vec<&[f32]> = e.positives.iter().map(Vec::as_slice).collect();
            let neg: Vec<&[f32]> = e.negatives.iter().map(Vec::as_slice).collect();
            Some(average_vector(metric, dim, &pos, &neg)?)
        }
        (Some(_), _) => None,
    };
    let exclusions = IdList::new(call.exclude_ids);
    let mut excluded = Vec::with_capacity(sources.len());
    for (s, src) in sources.iter().enumerate() {
        let mut away = src.index.excluded_nodes(&exclusions);
        if let Some(seeds) = examples.as_ref().map(|e| &e.seeds[s]) {
            if !seeds.is_empty() {
                // Seeds are per call: added to a copy, never to a kept list.
                *std::sync::Arc::make_mut(&mut away) |= seeds;
            }
        }
        excluded.push(away);
    }

    // Diversity and group caps choose among `candidates` per source.
    let wide = mmr || !call.group_by.is_empty();
    let mut fetch = vec![if wide { candidates } else { k }; sources.len()];
    let mut lists: Vec<Option<(Vec<Hit>, bool)>> = vec![None; sources.len()];
    let mut stats = SearchStats::default();
    // A plain top-k by distance keeps nothing of an index farther than
    // its k-th hit: its first source (a layered index's base) is searched
    // first, and its later layers only look nearer than what that found.
    // Diversity and group caps pick among farther candidates too.
    let bounded = !wide && query.is_some();
    let first_of_owner: Vec<bool> = (0..sources.len())
        .map(|s| !owners[..s].contains(&owners[s]))
        .collect();
    loop {
        // Search (again) the sources whose lists are missing; in parallel
        // when there are several and a thread is free.
        let todo: Vec<usize> = (0..sources.len()).filter(|&s| lists[s].is_none()).collect();
        let search = |s: usize, bound: Option<&Bound<'_>>| {
            let admission = Admission {
                filter: sources[s].filter,
                excluded: Some(&excluded[s]),
                deleted: sources[s].deleted,
            };
            let params = SearchParams {
                k: fetch[s].min(MAX_K),
                ..call.params.clone()
            };
            search_source(
                sources[s].index,
                s as u32,
                &params,
                &admission,
                bound,
                query.as_deref(),
                examples.as_ref(),
                call.strategy,
                metric,
            )
        };
        let (first, later): (Vec<usize>, Vec<usize>) = if bounded {
            todo.iter().partition(|&&s| first_of_owner[s])
        } else {
            (todo, Vec::new())
        };
        for (s, hits, st) in search_all(&first, |s| search(s, None))? {
            stats += st;
            // A full list may have more behind it.
            let more = hits.len() >= fetch[s] && fetch[s] < sources[s].index.snapshot().len();
            lists[s] = Some((hits, more));
        }
        if !later.is_empty() {
            // Per owner's first source: its k-th distance and the rows of
            // its k hits, when it found k.
            let bounds: Vec<_> = (0..sources.len())
                .map(|f| {
                    let hits = &lists[f].as_ref()?.0;
                    if !first_of_owner[f] || hits.len() < k {
                        return None;
                    }
                    let rows = sources[f].index.snapshot().vectors_f32();
                    let near = &hits[..k];
                    Some((
                        near[k - 1].distance,
                        near.iter().map(|h| rows.row(h.node)).collect::<Vec<_>>(),
                    ))
                })
                .collect();
            let bound_of = |s: usize| {
                let f = owners.iter().position(|&o| o == owners[s])?;
                let (distance, rows) = bounds[f].as_ref()?;
                Some(Bound {
                    distance: *distance,
                    rows,
                })
            };
            for (s, hits, st) in search_all(&later, |s| search(s, bound_of(s).as_ref()))? {
                stats += st;
                let more = hits.len() >= fetch[s] && fetch[s] < sources[s].index.snapshot().len();
                lists[s] = Some((hits, more));
            }
        }
        let all: Vec<&[Hit]> = lists
            .iter()
            .map(|l| l.as_ref().map_or(&[][..], |l| &l.0[..]))
            .collect();
        let merged = merge(&all);
        // MMR compares candidates with each other: find their rows once.
        let rows: Vec<&[f32]> = if mmr {
            merged
                .iter()
                .map(|h| {
                    sources[h.source as usize]
                        .index
                        .snapshot()
                        .vectors_f32()
                        .row(h.node)
                })
                .collect()
        } else {
            Vec::new()
        };
        let group_numbers = groups.as_ref().map(|cols| number_groups(cols, &merged));
        let kernel = Kernel::<f32>::new(metric);
        let hits = pick(
            &merged,
            &Pick {
                k,
                sources: indexes,
                owners: &owners,
                min_per_source: call.min_per_index,
                group: group_numbers.as_deref().map(|g| (g, call.group_size)),
                mmr: mmr.then(|| {
                    let rows = &rows;
                    let dist = move |a: usize, b: usize| kernel.distance(rows[a], rows[b]);
                    (1.0 - call.diversity, dist)
                }),
            },
        );
        if mmr {
            stats.distances += (merged.len() * hits.len()) as u64;
        }
        // Group caps may turn away so many that fewer than k remain: widen
        // the sources that may hold more, and pick again.
        let short = hits.len() < k && groups.is_some();
        let widen: Vec<usize> = (0..sources.len())
            .filter(|&s| lists[s].as_ref().is_some_and(|l| l.1))
            .collect();
        if !short || widen.is_empty() {
            return Ok(Retrieved { hits, stats });
        }
        if call.params.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Error::DeadlineExceeded);
        }
        if call
            .params
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed))
        {
            return Err(Error::Cancelled);
        }
        for s in widen {
            fetch[s] = fetch[s].saturating_mul(2);
            lists[s] = None;
        }
    }
}

/// Run `search` on each of `todo`: in parallel when there are several and
/// a thread is free.
fn search_all(
    todo: &[usize],
    search: impl Fn(usize) -> Result<(Vec<Hit>, SearchStats)> + Sync,
) -> Result<Vec<(usize, Vec<Hit>, SearchStats)>> {
    let found: Vec<Result<(Vec<Hit>, SearchStats)>> = if todo.len() > 1 {
        todo.par_iter().map(|&s| search(s)).collect()
    } else {
        todo.iter().map(|&s| search(s)).collect()
    };
    todo.iter()
        .zip(found)
        .map(|(&s, r)| r.map(|(hits, st)| (s, hits, st)))
        .collect()
}

/// The sources must agree on what a vector means.
fn check_sources(sources: &[Source<'_, '_>]) -> Result<(Metric, usize)> {
    let first = sources
        .first()
        .ok_or_else(|| Error::invalid("a call needs at least one index"))?;
    let (metric, dim) = (
        first.index.snapshot().metric(),
        first.index.snapshot().dim(),
    );
    for s in &sources[1..] {
        let snap = s.index.snapshot();
        if (snap.metric(), snap.dim()) != (metric, dim) {
            return Err(Error::invalid(format!(
                "indexes {:?} ({metric}, dimension {dim}) and {:?} ({}, dimension {}) \
                 cannot be searched together",
                first.name,
                s.name,
                snap.metric(),
                snap.dim()
            )));
        }
    }
    Ok((metric, dim))
}

/// Per source, the group column of `call.group_by` (`None` for a source
/// without that field: its hits are uncapped).
#[allow(clippy::type_complexity)]
fn group_columns<'s>(
    sources: &[Source<'s, '_>],
    call: &Call<'_>,
) -> Result<Option<Vec<Option<(Attributes<'s>, &'s [u32])>>>> {
    if call.group_by.is_empty() {
        if call.group_size > 0 {
            return Err(Error::invalid("group_size needs group_by"));
        }
        return Ok(None);
    }
    if call.group_size == 0 {
        return Err(Error::invalid("group_by needs a group_size of at least 1"));
    }
    let mut cols = Vec::with_capacity(sources.len());
    for s in sources {
        let attrs = s.index.attributes();
        let col = match attrs.as_ref().and_then(|a| a.field(call.group_by)) {
            None => None,
            Some(f) => match f.kind() {
                FieldKind::Keyword | FieldKind::Bool => {
                    attrs.and_then(|a| a.row_values(f).map(|c| (a, c)))
                }
                kind => {
                    return Err(Error::invalid(format!(
                        "group_by {:?} is {} {} field in index {:?}; groups need a \
                         single-valued keyword or bool field{}",
                        call.group_by,
                        if kind.name().starts_with(['a', 'e', 'i', 'o', 'u']) {
                            "an"
                        } else {
                            "a"
                        },
                        kind.name(),
                        s.name,
                        groupable_fields(sources)
                    )))
                }
            },
        };
        cols.push(col);
    }
    if cols.iter().all(Option::is_none) {
        return Err(Error::invalid(format!(
            "group_by {:?}: no such attribute field{}",
            call.group_by,
            groupable_fields(sources)
        )));
    }
    Ok(Some(cols))
}

/// `"; fields that can group: a, b"` for an error message, or `""`.
fn groupable_fields(sources: &[Source<'_, '_>]) -> String {
    let mut names: Vec<&str> = sources
        .iter()
        .filter_map(|s| s.index.attributes())
        .flat_map(|a| {
            a.fields
                .iter()
                .filter(|f| matches!(f.kind(), FieldKind::Keyword | FieldKind::Bool))
                .map(|f| f.name.as_str())
                .collect::<Vec<_>>()
        })
        .collect();
    names.sort_unstable();
    names.dedup();
    if names.is_empty() {
        String::new()
    } else {
        format!("; fields that can group: {}", names.join(", "))
    }
}

/// Each candidate's group as a small number ([`UNCAPPED`] without a
/// value), below the number of candidates, for [`pick`]. Within one index
/// equal values share a dictionary number; several indexes (each with its
/// own dictionary) share a group by its string.
pub fn number_groups(cols: &[Option<(Attributes<'_>, &[u32])>], candidates: &[Hit]) -> Vec<u32> {
    // Every value first: the loads are independent, so their cache misses
    // overlap instead of waiting on each numbering in turn.
    let values: Vec<u32> = candidates
        .iter()
        .map(|h| match &cols[h.source as usize] {
            Some((_, col)) => col.get(h.node as usize).copied().unwrap_or(NO_VALUE),
            None => NO_VALUE,
        })
        .collect();
    if cols.len() == 1 {
        // One dictionary: a value's rank among the distinct values is its
        // number, found without hashing.
        let mut distinct: Vec<u32> = values.iter().copied().filter(|&v| v != NO_VALUE).collect();
        distinct.sort_unstable();
        distinct.dedup();
        return values
            .iter()
            .map(|v| match distinct.binary_search(v) {
                Ok(rank) => rank as u32,
                Err(_) => UNCAPPED,
            })
            .collect();
    }
    let mut numbers: HashMap<&str, u32> = HashMap::with_capacity(candidates.len());
    candidates
        .iter()
        .zip(values)
        .map(|(h, v)| match &cols[h.source as usize] {
            Some((attrs, _)) if v != NO_VALUE => {
                let next = numbers.len() as u32;
                *numbers.entry(attrs.value(v)).or_insert(next)
            }
            _ => UNCAPPED,
        })
        .collect()
}

/// Look the example ids up in the sources and bring every example to the
/// stored form. `None` when the call has no examples.
fn resolve_examples(
    sources: &[Source<'_, '_>],
    call: &Call<'_>,
    metric: Metric,
    dim: usize,
) -> Result<Option<Examples>> {
    if !call.has_examples() {
        return Ok(None);
    }
    let mut seeds = vec![RoaringBitmap::new(); sources.len()];
    let mut by_id = |ids: &[String], out: &mut Vec<Vec<f32>>| -> Result<()> {
        for id in ids {
            let mut vector = None;
            for (s, src) in sources.iter().enumerate() {
                if let Some(node) = src.index.find(id) {
                    if src.deleted.is_some_and(|d| d.contains(node)) {
                        continue; // deleted, or replaced by a later layer
                    }
                    seeds[s].insert(node);
                    if vector.is_none() {
                        let snap = src.index.snapshot();
                        let row = snap.vectors_f32().row(node);
                        // Stored rows are checked finite by verify: these
                        // bytes never were (served unverified, or changed).
                        if row.len() != dim || row.iter().any(|x| !x.is_finite()) {
                            return Err(Error::corrupt(
                                snap.path(),
                                format!("the stored vector of {id:?} is damaged"),
                            ));
                        }
                        vector = Some(row.to_vec());
                    }
                }
            }
            out.push(vector.ok_or_else(|| Error::UnknownItem(id.clone()))?);
        }
        Ok(())
    };
    let (mut positives, mut negatives) = (Vec::new(), Vec::new());
    by_id(call.positive_ids, &mut positives)?;
    by_id(call.negative_ids, &mut negatives)?;
    for (i, v) in call.positive_vectors.iter().enumerate() {
        positives.push(prepare_example(
            metric,
            dim,
            v,
            &format!("positive vector {i}"),
        )?);
    }
    if !call.vector.is_empty() {
        positives.push(prepare_example(
            metric,
            dim,
            call.vector,
            "the query vector",
        )?);
    }
    for (i, v) in call.negative_vectors.iter().enumerate() {
        negatives.push(prepare_example(
            metric,
            dim,
            v,
            &format!("negative vector {i}"),
        )?);
    }
    Ok(Some(Examples {
        positives,
        negatives,
        seeds,
    }))
}

/// The nearest `params.k` admitted items of one source: by distance to
/// `query`, or by the strategy's score of the examples.
#[allow(clippy::too_many_arguments)]
fn search_source(
    index: &Index,
    source: u32,
    params: &SearchParams,
    admission: &Admission<'_, '_>,
    bound: Option<&Bound<'_>>,
    query: Option<&[f32]>,
    examples: Option<&Examples>,
    strategy: Strategy,
    metric: Metric,
) -> Result<(Vec<Hit>, SearchStats)> {
    let as_hits = |found: &[Neighbor]| -> Vec<Hit> {
        found
            .iter()
            .map(|n| Hit {
                source,
                node: n.id,
                distance: n.distance,
            })
            .collect()
    };
    let mut found = Vec::with_capacity(params.k);
    if let Some(q) = query {
        let stats = index.search_bounded_into(q, params, admission, bound, &mut found)?;
        return Ok((as_hits(&found), stats));
    }
    let e = examples.expect("a call without a query has examples");
    let scorer = Scorer::new(metric, strategy, &e.positives, &e.negatives);
    let n = index.snapshot().len();
    let rows = index.snapshot().vectors_f32();
    let ef = index.parts().beam(params);
    // Without positives there is nothing to search near: score every
    // admitted item. Likewise when few are admitted or the beam covers all.
    let exact = e.positives.is_empty()
        || ef >= n
        || (!admission.admits_all() && prefers_exact(admission.estimate(n), n, ef));
    let mut stats = SearchStats::default();
    let mut pool = RoaringBitmap::new();
    if !exact {
        // Candidates: the nearest items of each positive (the best score is
        // near one of them), or where the sum of scores points.
        let probes: Vec<Vec<f32>> = match (strategy, metric) {
            // Linear in x: the sum's direction ranks exactly as the score.
            (Strategy::SumScores, Metric::Dot | Metric::Cosine) => vec![sum_direction(metric, e)],
            (Strategy::SumScores, Metric::L2) => {
                let mut p = e.positives.clone();
                p.push(sum_direction(metric, e));
                p
            }
            _ => e.positives.clone(),
        };
        for p in probes.iter().filter(|p| p.iter().any(|x| *x != 0.0)) {
            stats += index.search_admitted_into(p, params, admission, &mut found)?;
            pool.extend(found.iter().map(|n| n.id));
        }
    }
    // Scored exactly; every admitted item when there is nothing to search
    // near, or examples that cancel out (a zero sum: all score alike).
    let pool = if pool.is_empty() {
        crate::index::IndexParts::with_cancel(params, |cancel| admission.admitted(n, cancel))?
    } else {
        std::borrow::Cow::Owned(pool)
    };
    stats.distances += pool.len() * scorer_cost(e);
    let mut scored = crate::index::IndexParts::with_cancel(params, |cancel| {
        top_by(pool.iter(), params.k, cancel, |r| {
            scorer.distance(rows.row(r))
        })
    })?;
    scored.truncate(params.k);
    index.check_found(&scored)?;
    Ok((as_hits(&scored), stats))
}

fn scorer_cost(e: &Examples) -> u64 {
    (e.positives.len() + e.negatives.len()) as u64
}

/// The query whose nearest items have the best `SUM_SCORES`: under dot and
/// cosine the sum is linear, `⟨x, Σpos − Σneg⟩`, so this is exact there; under
/// l2 it is the average vector, a good place to look.
fn sum_direction(metric: Metric, e: &Examples) -> Vec<f32> {
    let dim = e.positives.first().map_or(0, Vec::len);
    let mut w = vec![0f32; dim];
    match metric {
        Metric::Dot | Metric::Cosine => {
            for p in &e.positives {
                w.iter_mut().zip(p).for_each(|(w, x)| *w += x);
            }
            for n in &e.negatives {
                w.iter_mut().zip(n).for_each(|(w, x)| *w -= x);
            }
        }
        Metric::L2 => {
            let pos: Vec<&[f32]> = e.positives.iter().map(Vec::as_slice).collect();
            let neg: Vec<&[f32]> = e.negatives.iter().map(Vec::as_slice).collect();
            if let Ok(q) = average_vector(metric, dim, &pos, &neg) {
                w = q;
            }
        }
    }
    w
}

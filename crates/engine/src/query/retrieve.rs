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
use crate::index::{prefers_exact, Bound, Index, Plan, SearchParams, MAX_K};
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
    /// Never return the items of these keys ([`crate::shards::key`]).
    pub exclude_keys: &'a [u64],
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
    /// The sources may hold copies of one id (a sharded folder placed with
    /// a closure): keep each id's nearest hit only.
    pub distinct_ids: bool,
}

impl Call<'_> {
    /// A search for one query vector: no examples.
    pub fn is_plain(&self) -> bool {
        !self.has_examples() && !self.vector.is_empty()
    }

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

/// What every source is searched for: the nearest items to one query, or
/// the best scores of the examples under the strategy.
struct Ask {
    /// The one query of a plain or average-vector call.
    query: Option<Vec<f32>>,
    examples: Option<Examples>,
    strategy: Strategy,
    metric: Metric,
}

/// One group column of a source: its attributes (whose dictionary names
/// the values) and each node's value number of the `group_by` field.
pub struct GroupColumn<'a> {
    pub attributes: Attributes<'a>,
    pub values: &'a [u32],
}

/// Per source, its group column (`None` for a source without the field:
/// its hits are uncapped).
type GroupColumns<'s> = Vec<Option<GroupColumn<'s>>>;

/// A call checked against its sources, with its examples resolved: what
/// the later stages search for and how they pick.
struct Resolved<'s> {
    k: usize,
    /// Candidates per source that diversity and group caps choose among.
    candidates: usize,
    /// Maximal marginal relevance is on.
    mmr: bool,
    /// Per source, the index (as the call counts them) it belongs to.
    owners: Vec<u32>,
    /// Indexes in the call (one past the largest owner).
    indexes: usize,
    groups: Option<GroupColumns<'s>>,
    ask: Ask,
}

/// How each source is searched: what it must not return and how many
/// hits to fetch of it.
struct SourcePlan {
    /// Per source, the caller's exclusions and the seed items.
    excluded: Vec<std::sync::Arc<RoaringBitmap>>,
    /// Per source, the hits to ask for (doubled when group caps leave the
    /// call short).
    fetch: Vec<usize>,
    /// The later sources of an index only look nearer than the k-th hit
    /// of its first source.
    bounded: bool,
    /// Per source, whether it is the first of its index.
    first_of_owner: Vec<bool>,
}

/// One source's hits.
#[derive(Clone)]
struct Found {
    hits: Vec<Hit>,
    /// The list was full: the source may have more behind it.
    more: bool,
}

/// The merged lists, picked down to the call's answer.
struct Picked {
    hits: Vec<Hit>,
    /// Distances the pick computed (diversity compares candidates).
    distances: u64,
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

/// A call's stages: resolve it (and its examples), plan the sources, then
/// search them and merge their lists; again with wider lists while group
/// caps leave it short.
fn run(sources: &[Source<'_, '_>], call: &Call<'_>) -> Result<Retrieved> {
    let resolved = resolve(sources, call)?;
    let mut plan = plan_sources(sources, call, &resolved);
    let mut lists: Vec<Option<Found>> = vec![None; sources.len()];
    let mut stats = SearchStats::default();
    loop {
        stats += search(sources, call, &resolved, &plan, &mut lists)?;
        let picked = pick_merged(sources, call, &resolved, &lists);
        stats.distances += picked.distances;
        let hits = picked.hits;
        // Group caps may turn away so many that fewer than k remain: widen
        // the sources that may hold more, and pick again.
        let short = hits.len() < resolved.k && resolved.groups.is_some();
        let widen: Vec<usize> = (0..sources.len())
            .filter(|&s| lists[s].as_ref().is_some_and(|l| l.more))
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
            plan.fetch[s] = plan.fetch[s].saturating_mul(2);
            lists[s] = None;
        }
    }
}

/// Check the call against its sources, find its group columns, resolve
/// its examples and, for a plain or average-vector call, its one query.
fn resolve<'s>(sources: &[Source<'s, '_>], call: &Call<'_>) -> Result<Resolved<'s>> {
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
    let query = match (&examples, call.strategy) {
        (None, _) => Some(call.vector.to_vec()),
        (Some(e), Strategy::AverageVector) => {
            let pos: Vec<&[f32]> = e.positives.iter().map(Vec::as_slice).collect();
            let neg: Vec<&[f32]> = e.negatives.iter().map(Vec::as_slice).collect();
            Some(average_vector(metric, dim, &pos, &neg)?)
        }
        (Some(_), _) => None,
    };
    Ok(Resolved {
        k,
        candidates,
        mmr,
        owners,
        indexes,
        groups,
        ask: Ask {
            query,
            examples,
            strategy: call.strategy,
            metric,
        },
    })
}

/// Per source, the nodes it must not return and how many hits to fetch.
fn plan_sources(sources: &[Source<'_, '_>], call: &Call<'_>, r: &Resolved<'_>) -> SourcePlan {
    let exclusions = IdList::with_keys(call.exclude_ids, call.exclude_keys);
    let mut excluded = Vec::with_capacity(sources.len());
    for (s, src) in sources.iter().enumerate() {
        let mut away = src.index.excluded_nodes(&exclusions);
        if let Some(seeds) = r.ask.examples.as_ref().map(|e| &e.seeds[s]) {
            if !seeds.is_empty() {
                // Seeds are per call: added to a copy, never to a kept list.
                *std::sync::Arc::make_mut(&mut away) |= seeds;
            }
        }
        excluded.push(away);
    }
    // Diversity and group caps choose among `candidates` per source.
    let wide = r.mmr || !call.group_by.is_empty();
    let fetch = vec![if wide { r.candidates } else { r.k }; sources.len()];
    // A plain top-k by distance keeps nothing of an index farther than
    // its k-th hit: its first source (a layered index's base) is searched
    // first, and its later layers only look nearer than what that found.
    // Diversity and group caps pick among farther candidates too.
    let bounded = !wide && r.ask.query.is_some();
    let first_of_owner = (0..sources.len())
        .map(|s| !r.owners[..s].contains(&r.owners[s]))
        .collect();
    SourcePlan {
        excluded,
        fetch,
        bounded,
        first_of_owner,
    }
}

/// Search (again) the sources whose lists are missing; in parallel when
/// there are several and a thread is free. Bounded plans search each
/// index's first source first, and its later ones within what it found.
fn search(
    sources: &[Source<'_, '_>],
    call: &Call<'_>,
    r: &Resolved<'_>,
    plan: &SourcePlan,
    lists: &mut [Option<Found>],
) -> Result<SearchStats> {
    let k = r.k;
    let todo: Vec<usize> = (0..sources.len()).filter(|&s| lists[s].is_none()).collect();
    let search = |s: usize, bound: Option<&Bound<'_>>| {
        search_source(&SourceSearch {
            index: sources[s].index,
            source: s as u32,
            params: SearchParams {
                k: plan.fetch[s].min(MAX_K),
                ..call.params.clone()
            },
            admission: Admission {
                filter: sources[s].filter,
                excluded: Some(&plan.excluded[s]),
                deleted: sources[s].deleted,
            },
            bound,
            ask: &r.ask,
        })
    };
    let (first, later): (Vec<usize>, Vec<usize>) = if plan.bounded {
        todo.iter().partition(|&&s| plan.first_of_owner[s])
    } else {
        (todo, Vec::new())
    };
    let mut stats = SearchStats::default();
    for (s, hits, st) in search_all(&first, |s| search(s, None))? {
        stats += st;
        // A full list may have more behind it.
        let more = hits.len() >= plan.fetch[s] && plan.fetch[s] < sources[s].index.snapshot().len();
        lists[s] = Some(Found { hits, more });
    }
    if !later.is_empty() {
        // Per owner's first source: its k-th distance and the rows of
        // its k hits, when it found k.
        let bounds: Vec<_> = (0..sources.len())
            .map(|f| {
                let hits = &lists[f].as_ref()?.hits;
                if !plan.first_of_owner[f] || hits.len() < k {
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
            let f = r.owners.iter().position(|&o| o == r.owners[s])?;
            let (distance, rows) = bounds[f].as_ref()?;
            Some(Bound {
                distance: *distance,
                rows,
            })
        };
        for (s, hits, st) in search_all(&later, |s| search(s, bound_of(s).as_ref()))? {
            stats += st;
            let more =
                hits.len() >= plan.fetch[s] && plan.fetch[s] < sources[s].index.snapshot().len();
            lists[s] = Some(Found { hits, more });
        }
    }
    Ok(stats)
}

/// Merge the sources' lists by distance and pick the call's hits: the
/// top k, under per-index minimums, group caps and diversity.
fn pick_merged(
    sources: &[Source<'_, '_>],
    call: &Call<'_>,
    r: &Resolved<'_>,
    lists: &[Option<Found>],
) -> Picked {
    let all: Vec<&[Hit]> = lists
        .iter()
        .map(|l| l.as_ref().map_or(&[][..], |l| &l.hits[..]))
        .collect();
    let mut merged = merge(&all);
    if call.distinct_ids {
        let mut seen = std::collections::HashSet::with_capacity(merged.len());
        merged.retain(|h| seen.insert(sources[h.source as usize].index.id(h.node)));
    }
    // MMR compares candidates with each other: find their rows once.
    let rows: Vec<&[f32]> = if r.mmr {
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
    let group_numbers = r.groups.as_ref().map(|cols| number_groups(cols, &merged));
    let kernel = Kernel::<f32>::new(r.ask.metric);
    let hits = pick(
        &merged,
        &Pick {
            k: r.k,
            sources: r.indexes,
            owners: &r.owners,
            min_per_source: call.min_per_index,
            group: group_numbers.as_deref().map(|g| (g, call.group_size)),
            mmr: r.mmr.then(|| {
                let rows = &rows;
                let dist = move |a: usize, b: usize| kernel.distance(rows[a], rows[b]);
                (1.0 - call.diversity, dist)
            }),
        },
    );
    let distances = if r.mmr {
        (merged.len() * hits.len()) as u64
    } else {
        0
    };
    Picked { hits, distances }
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
fn group_columns<'s>(
    sources: &[Source<'s, '_>],
    call: &Call<'_>,
) -> Result<Option<GroupColumns<'s>>> {
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
                FieldKind::Keyword | FieldKind::Bool => attrs.and_then(|a| {
                    a.row_values(f).map(|values| GroupColumn {
                        attributes: a,
                        values,
                    })
                }),
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
pub fn number_groups(cols: &[Option<GroupColumn<'_>>], candidates: &[Hit]) -> Vec<u32> {
    // Every value first: the loads are independent, so their cache misses
    // overlap instead of waiting on each numbering in turn.
    let values: Vec<u32> = candidates
        .iter()
        .map(|h| match &cols[h.source as usize] {
            Some(col) => col.values.get(h.node as usize).copied().unwrap_or(NO_VALUE),
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
            Some(col) if v != NO_VALUE => {
                let next = numbers.len() as u32;
                *numbers.entry(col.attributes.value(v)).or_insert(next)
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

/// One source's search: the index, what it admits, and how far to look.
/// Its filter's plan is tied to the index (`'i`), as in [`Source`].
struct SourceSearch<'a, 'i> {
    index: &'a Index,
    /// Its position among the call's sources, for its hits.
    source: u32,
    params: SearchParams,
    admission: Admission<'a, 'i>,
    /// Look only nearer than this (a layer after its index's first).
    bound: Option<&'a Bound<'a>>,
    ask: &'a Ask,
}

/// The nearest `params.k` admitted items of one source: by distance to
/// the ask's query, or by the strategy's score of its examples.
fn search_source(search: &SourceSearch<'_, '_>) -> Result<(Vec<Hit>, SearchStats)> {
    let SourceSearch {
        index,
        source,
        ref params,
        ref admission,
        bound,
        ask,
    } = *search;
    let (query, examples, strategy, metric) = (
        ask.query.as_deref(),
        ask.examples.as_ref(),
        ask.strategy,
        ask.metric,
    );
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
        || params.plan == Plan::Exact
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

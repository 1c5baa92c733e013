//! The beam search over one layer, and the greedy descent above it.

use crate::distance::Element;
use crate::error::Result;
use crate::graph::GraphView;

use super::cancel::{Cancel, CANCEL_CHECK_MASK};
use super::scratch::Scratch;
use super::space::{prefetch, Rejecting, Space};
use super::{Candidate, Links, SearchStats};

/// Neighbours gathered before a descent step scores them: more than an
/// upper layer's usual degree.
pub(super) const DESCENT_BATCH: usize = 64;

/// The nodes a descent has scored, so a neighbour shared by the nodes it
/// passes through is scored once: a small open-addressing set that stops
/// recording (and lets repeats through) once three quarters full.
struct Seen {
    slots: [u32; SEEN_SLOTS],
    len: usize,
}

const SEEN_SLOTS: usize = 256;

impl Seen {
    fn new() -> Self {
        Seen {
            slots: [u32::MAX; SEEN_SLOTS],
            len: 0,
        }
    }

    /// False when `node` was recorded before.
    #[inline(always)]
    fn insert(&mut self, node: u32) -> bool {
        if self.len >= SEEN_SLOTS * 3 / 4 {
            return true;
        }
        let mut i = (node.wrapping_mul(0x9E37_79B1) >> 24) as usize;
        loop {
            match self.slots[i] {
                u32::MAX => {
                    self.slots[i] = node;
                    self.len += 1;
                    return true;
                }
                n if n == node => return false,
                _ => i = (i + 1) % SEEN_SLOTS,
            }
        }
    }
}

/// Greedy descent from `layer_from` down to (and excluding) `layer_to`: on
/// each layer, move to the nearest neighbour until no neighbour is nearer.
pub(crate) fn greedy_descent<L: Links, E: Element>(
    links: &L,
    space: &Space<'_, E>,
    mut node: u32,
    mut dist: f32,
    layer_from: usize,
    layer_to: usize,
    stats: &mut SearchStats,
) -> (u32, f32) {
    let mut layer = layer_from;
    let mut seen = Seen::new();
    seen.insert(node);
    while layer > layer_to {
        loop {
            let mut best = (node, dist);
            // The neighbours' rows are requested together, a few ahead of
            // the one being scored, so their misses overlap as in the beam.
            let mut batch = [0u32; DESCENT_BATCH];
            let mut len = 0;
            let flush = |batch: &[u32], best: &mut (u32, f32), stats: &mut SearchStats| {
                space.score_each(batch, stats, |nb, d| {
                    if d < best.1 {
                        *best = (nb, d);
                    }
                });
            };
            links.for_each_neighbor(node, layer, |nb| {
                if !seen.insert(nb) {
                    return;
                }
                if len == DESCENT_BATCH {
                    flush(&batch, &mut best, stats);
                    len = 0;
                }
                batch[len] = nb;
                len += 1;
            });
            flush(&batch[..len], &mut best, stats);
            if best.0 == node {
                break;
            }
            (node, dist) = best;
        }
        layer -= 1;
    }
    (node, dist)
}

/// Where a beam search may stop before its beam is fully expanded: once
/// the `keep` nearest entries are expanded, an entry farther than `bound`
/// (in traversal distance) is not. A later layer of an index searched with
/// the k-th distance already found elsewhere as its bound only needs the
/// nodes nearer than that; `keep` lets it walk from wherever the descent
/// left it to its own nearest few first, which may lie past the bound.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    pub bound: f32,
    pub keep: usize,
}

impl Limit {
    /// The plain beam search: expand until every entry is.
    pub const NONE: Limit = Limit {
        bound: f32::INFINITY,
        keep: usize::MAX,
    };
}

/// What every step of one beam search reads: the links it walks, the space
/// that scores nodes, what stops it early, and the beam's width.
pub(crate) struct SearchContext<'c, 'a, L, E: Element, C> {
    pub links: &'c L,
    pub space: &'c Space<'a, E>,
    pub cancel: &'c C,
    pub ef: usize,
}

impl<L, E: Element, C> SearchContext<'_, '_, L, E, C> {
    /// The same search with a beam of `ef`.
    pub(crate) fn with_ef(&self, ef: usize) -> Self {
        SearchContext {
            links: self.links,
            space: self.space,
            cancel: self.cancel,
            ef,
        }
    }
}

/// Beam search of width `cx.ef` on one layer from the given entry points.
/// The result is left in `scratch.pool`, nearest first.
pub(crate) fn search_layer<L: Links, E: Element, C: Cancel>(
    cx: &SearchContext<'_, '_, L, E, C>,
    entries: &[(u32, f32)],
    layer: usize,
    scratch: &mut Scratch,
    stats: &mut SearchStats,
) -> Result<()> {
    search_layer_limited(cx, entries, layer, Limit::NONE, scratch, stats)
}

/// [`search_layer`] that stops at `limit`.
fn search_layer_limited<L: Links, E: Element, C: Cancel>(
    cx: &SearchContext<'_, '_, L, E, C>,
    entries: &[(u32, f32)],
    layer: usize,
    limit: Limit,
    scratch: &mut Scratch,
    stats: &mut SearchStats,
) -> Result<()> {
    let cx = &cx.with_ef(cx.ef.max(1));
    let (links, cancel) = (cx.links, cx.cancel);
    scratch.start(cx.space.rows.len(), entries, cx.ef);
    let mut cursor = 0;
    while cursor < scratch.pool.len() {
        debug_assert!(scratch.pool.is_sorted_by(|a, b| a.dist <= b.dist));
        // The pool is sorted, so every entry from here on is past the bound.
        if cursor >= limit.keep && scratch.pool[cursor].dist > limit.bound {
            break;
        }
        let current = &mut scratch.pool[cursor];
        current.expanded = true;
        let node = current.id;
        stats.expansions += 1;
        if stats.expansions & CANCEL_CHECK_MASK == 0 && cancel.cancelled() {
            return Err(cancel.error());
        }

        let mut batch = std::mem::take(&mut scratch.batch);
        batch.clear();
        links.for_each_neighbor(node, layer, |nb| {
            if scratch.visit(nb) {
                batch.push(nb);
            }
        });
        cursor = score_batch(cx, &batch, &mut scratch.pool, cursor, stats);
        scratch.batch = batch;
    }
    Ok(())
}

/// One expansion's arithmetic, shared by the plain and the filtered beam:
/// compute the distances of `batch` (prefetching a few rows ahead so memory
/// latency overlaps), insert each that beats the beam's worst, and return
/// the next node to expand: the first unexpanded entry after `cursor` or
/// at the earliest insertion, whose links are prefetched.
#[inline(always)]
pub(super) fn score_batch<L: Links, E: Element, C>(
    cx: &SearchContext<'_, '_, L, E, C>,
    batch: &[u32],
    pool: &mut Vec<Candidate>,
    cursor: usize,
    stats: &mut SearchStats,
) -> usize {
    let (links, space, ef) = (cx.links, cx.space, cx.ef);
    if let Some(reject) = &space.reject {
        if pool.len() >= ef && batch.len() <= MAX_BATCH {
            return score_batch_rejecting(cx, reject, batch, pool, cursor, stats);
        }
    }
    let mut next = cursor + 1;
    space.score_each(batch, stats, |nb, d| {
        offer(links, pool, ef, nb, d, &mut next)
    });
    next_to_expand(links, pool, next)
}

/// Put `nb` at distance `d` into the beam if it beats the worst (or the
/// beam is not full), lowering `next` to where it went.
#[inline(always)]
fn offer<L: Links>(
    links: &L,
    pool: &mut Vec<Candidate>,
    ef: usize,
    nb: u32,
    d: f32,
    next: &mut usize,
) {
    if pool.len() < ef || d < pool[pool.len() - 1].dist {
        let pos = insert(
            pool,
            ef,
            Candidate {
                dist: d,
                id: nb,
                expanded: false,
            },
        );
        *next = (*next).min(pos);
        // A candidate that enters the beam is likely to be expanded soon:
        // start fetching its links now, not when it is popped.
        links.prefetch_links(nb);
    }
}

/// The first unexpanded entry from `next` on, its links prefetched.
#[inline(always)]
fn next_to_expand<L: Links>(links: &L, pool: &[Candidate], mut next: usize) -> usize {
    while next < pool.len() && pool[next].expanded {
        next += 1;
    }
    if let Some(c) = pool.get(next) {
        links.prefetch_links(c.id);
    }
    next
}

/// Insert into a sorted pool capped at `ef`; returns the position.
#[inline(always)]
pub(super) fn insert(pool: &mut Vec<Candidate>, ef: usize, c: Candidate) -> usize {
    let pos = pool.partition_point(|x| x.dist <= c.dist);
    if pos >= ef {
        return pos;
    }
    if pool.len() == ef {
        pool.pop();
    }
    pool.insert(pos, c);
    debug_assert!(pool.len() <= ef);
    pos
}

/// The most neighbours one expansion may gather for [`score_batch_rejecting`]
/// (m0 at M = 64); a wider batch is scored the plain way.
const MAX_BATCH: usize = 128;

/// [`score_batch`] against a full beam with early rejection, in two passes
/// so memory latency still overlaps: first the leading lines of every
/// neighbour (prefetched a few ahead) and the test, which turns most away;
/// then the survivors, whose remaining lines were requested the moment they
/// passed, scored in full and inserted. The bound is the beam's worst when
/// the batch starts; it only shrinks as survivors enter, so using it turns
/// away no candidate that the current worst would keep.
#[inline(never)]
fn score_batch_rejecting<L: Links, E: Element, C>(
    cx: &SearchContext<'_, '_, L, E, C>,
    reject: &Rejecting<E>,
    batch: &[u32],
    pool: &mut Vec<Candidate>,
    cursor: usize,
    stats: &mut SearchStats,
) -> usize {
    let (links, space, ef) = (cx.links, cx.space, cx.ef);
    debug_assert!(pool.len() >= ef && batch.len() <= MAX_BATCH);
    let Rejecting {
        test,
        l2,
        head_lines: head,
    } = reject;
    // A cosine distance can round below zero (near-duplicates); a negative
    // bound would turn away everything, exact duplicates included.
    let bound = pool[pool.len() - 1].dist.max(0.0);
    let query = &space.query[..test.dims];
    // The head is a few lines: keep about as many lines in flight as the
    // plain path does.
    let ahead = 2 * space.ahead;
    let tail = space.lines.saturating_sub(*head);
    for &nb in batch.iter().take(ahead) {
        prefetch(space.rows.row_ptr(nb).cast(), *head);
    }
    let mut survivors = [0u32; MAX_BATCH];
    let mut kept = 0;
    for (i, &nb) in batch.iter().enumerate() {
        if let Some(&later) = batch.get(i + ahead) {
            prefetch(space.rows.row_ptr(later).cast(), *head);
        }
        // A row too short (never, for validated ids) gives NaN: kept.
        let head_row = space.rows.row(nb).get(..test.dims).unwrap_or(&[]);
        let partial = l2(query, head_row) as f32;
        stats.distances += 1;
        if partial * test.scale > bound {
            stats.rejected += 1;
            continue;
        }
        prefetch(
            space.rows.row_ptr(nb).cast::<u8>().wrapping_add(*head * 64),
            tail,
        );
        survivors[kept] = nb;
        kept += 1;
    }
    let mut next = cursor + 1;
    for &nb in &survivors[..kept] {
        offer(links, pool, ef, nb, space.distance(nb), &mut next);
    }
    next_to_expand(links, pool, next)
}

/// Full HNSW query: greedy descent through the upper layers, then a beam of
/// width `ef` on layer 0. Results are left in `scratch.pool`.
pub fn hnsw_search<E: Element, C: Cancel>(
    graph: &GraphView<'_>,
    space: &Space<'_, E>,
    ef: usize,
    scratch: &mut Scratch,
    cancel: &C,
) -> Result<SearchStats> {
    hnsw_search_limited(graph, space, ef, Limit::NONE, scratch, cancel)
}

/// [`hnsw_search`] whose layer-0 beam stops at `limit`.
pub fn hnsw_search_limited<E: Element, C: Cancel>(
    graph: &GraphView<'_>,
    space: &Space<'_, E>,
    ef: usize,
    limit: Limit,
    scratch: &mut Scratch,
    cancel: &C,
) -> Result<SearchStats> {
    let mut stats = SearchStats::default();
    if graph.is_empty() {
        scratch.pool.clear();
        return Ok(stats);
    }
    let ep = graph.entry_point;
    let d = space.distance(ep);
    stats.distances += 1;
    let (node, dist) = greedy_descent(graph, space, ep, d, graph.max_level as usize, 0, &mut stats);
    let cx = SearchContext {
        links: graph,
        space,
        cancel,
        ef,
    };
    search_layer_limited(&cx, &[(node, dist)], 0, limit, scratch, &mut stats)?;
    Ok(stats)
}

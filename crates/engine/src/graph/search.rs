//! The hot path: HNSW search over a borrowed graph and borrowed vectors.
//!
//! No I/O and no allocation per query once warm: all working memory lives
//! in a [`Scratch`] taken from a [`ScratchPool`] and returned after the
//! query (`tests/alloc.rs` counts).
//!
//! The layer-0 beam search keeps one sorted candidate list of at most `ef`
//! entries (as NSG and glass do) instead of hnswlib's two heaps: the next node
//! to expand is the nearest unexpanded entry, and the search ends when every
//! entry has been expanded. For each expanded node the unvisited neighbours
//! are gathered first, their vectors prefetched a few ahead, and only then are
//! their distances computed, so memory latency overlaps with arithmetic.
//!
//! The same routines serve the builder (over its concurrently-updated graph)
//! and queries (over a mapped snapshot): both implement [`Links`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

use crate::distance::{Element, Kernel, Metric};
use crate::error::{Error, Result};
use crate::filter::Admit;
use crate::graph::GraphView;
use crate::reject::EarlyReject;
use crate::vectors::Rows;

/// A search result: dense node number and distance (lower is closer).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbor {
    pub id: u32,
    pub distance: f32,
}

/// Work counters of one query, for `eval` and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SearchStats {
    pub distances: u64,
    pub expansions: u64,
    /// Of `distances`, candidates turned away after their leading
    /// dimensions ([`crate::reject`]).
    pub rejected: u64,
}

impl std::ops::AddAssign for SearchStats {
    fn add_assign(&mut self, o: Self) {
        self.distances += o.distances;
        self.expansions += o.expansions;
        self.rejected += o.rejected;
    }
}

/// A source of adjacency: a mapped snapshot's graph, or the builder's.
pub trait Links {
    fn for_each_neighbor(&self, node: u32, layer: usize, f: impl FnMut(u32));
    /// Hint that `node`'s layer-0 links are about to be read.
    fn prefetch_links(&self, _node: u32) {}
}

impl Links for GraphView<'_> {
    #[inline(always)]
    fn for_each_neighbor(&self, node: u32, layer: usize, mut f: impl FnMut(u32)) {
        for &nb in self.neighbors(node, layer) {
            f(nb)
        }
    }

    #[inline(always)]
    fn prefetch_links(&self, node: u32) {
        // A record is 4 + 4·m0 bytes at an arbitrary offset: the degree and
        // the first ~30 ids span at most two lines.
        prefetch(self.links0_ptr(node).cast(), 2);
    }
}

/// Stops a search early: checked once every few expanded nodes.
pub trait Cancel {
    fn cancelled(&self) -> bool;

    /// The error a stopped search returns.
    fn error(&self) -> Error {
        Error::DeadlineExceeded
    }
}

/// Never cancels; compiles to nothing.
pub struct NoCancel;

impl Cancel for NoCancel {
    #[inline(always)]
    fn cancelled(&self) -> bool {
        false
    }
}

/// Cancels once the wall clock passes a deadline.
pub struct Deadline(pub Instant);

impl Cancel for Deadline {
    fn cancelled(&self) -> bool {
        Instant::now() >= self.0
    }
}

/// Cancels once the flag is set (by another thread: the caller went away).
pub struct Flag<'a>(pub &'a AtomicBool);

impl Cancel for Flag<'_> {
    fn cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn error(&self) -> Error {
        Error::Cancelled
    }
}

/// Cancels on the flag or at the deadline, whichever comes first.
pub struct FlagOrDeadline<'a>(pub &'a AtomicBool, pub Instant);

impl Cancel for FlagOrDeadline<'_> {
    fn cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed) || Instant::now() >= self.1
    }

    fn error(&self) -> Error {
        if self.0.load(Ordering::Relaxed) {
            Error::Cancelled
        } else {
            Error::DeadlineExceeded
        }
    }
}

/// How often (in expanded nodes, a power of two) cancellation is checked.
const CANCEL_CHECK_MASK: u64 = 15;

/// Vectors, a kernel and a query: what computes distances to nodes.
pub struct Space<'a, E: Element> {
    pub rows: Rows<'a, E>,
    pub kernel: Kernel<E>,
    pub query: &'a [E],
    /// Cache lines prefetched per vector.
    lines: usize,
    /// How many neighbours ahead of the one being computed are prefetched:
    /// enough to keep a few dozen cache lines in flight, which is what one
    /// core can track (measured on words-dev-384: 8 ahead for i8 rows of 6
    /// lines, 4 for f32 rows of 24 lines).
    ahead: usize,
    /// Early rejection against a full beam ([`crate::reject`]).
    reject: Option<Rejecting<E>>,
}

/// Early rejection as one space runs it.
struct Rejecting<E: Element> {
    test: EarlyReject,
    /// Squared L2 over the leading dimensions.
    l2: fn(&[E], &[E]) -> f64,
    /// Cache lines holding the leading dimensions.
    head_lines: usize,
}

impl<'a, E: Element> Space<'a, E> {
    pub fn new(rows: Rows<'a, E>, kernel: Kernel<E>, query: &'a [E]) -> Self {
        let bytes = rows.dim * std::mem::size_of::<E>();
        let lines = bytes.div_ceil(64).clamp(1, 32);
        Space {
            rows,
            kernel,
            query,
            lines,
            ahead: if lines <= 8 { 8 } else { 4 },
            reject: None,
        }
    }

    /// Turn far candidates away after their leading dimensions, as
    /// measured for these rows ([`EarlyReject::measure`]).
    pub fn with_early_reject(mut self, reject: Option<EarlyReject>) -> Self {
        self.reject = reject
            .filter(|r| r.dims < self.rows.dim)
            .map(|test| Rejecting {
                test,
                l2: E::raw_kernel(Metric::L2),
                head_lines: (test.dims * std::mem::size_of::<E>()).div_ceil(64),
            });
        self
    }

    #[inline(always)]
    pub fn distance(&self, node: u32) -> f32 {
        self.kernel.distance(self.query, self.rows.row(node))
    }

    #[inline(always)]
    pub fn prefetch(&self, node: u32) {
        prefetch(self.rows.row_ptr(node).cast(), self.lines);
    }

    /// Score `batch` in order, handing each node and its distance to `f`,
    /// with the rows of the nodes a few ahead requested first so that
    /// their misses overlap.
    #[inline(always)]
    fn score_each(&self, batch: &[u32], stats: &mut SearchStats, mut f: impl FnMut(u32, f32)) {
        for &nb in batch.iter().take(self.ahead) {
            self.prefetch(nb);
        }
        for (i, &nb) in batch.iter().enumerate() {
            if let Some(&later) = batch.get(i + self.ahead) {
                self.prefetch(later);
            }
            stats.distances += 1;
            f(nb, self.distance(nb));
        }
    }
}

/// Prefetch `lines` cache lines starting at `ptr` into L2. Every prefetch
/// of the engine comes here: rows and links in a traversal, the rows of a
/// re-rank or an exact scan, the slots of the id table.
///
/// Into L2, not L1: a traversal keeps a few dozen lines in flight, more
/// than the L1's miss buffers track, and a T0 prefetch that finds them
/// full waits for one to free. On Zen 4 that wait is where the traversal
/// spent its time (perf put 20-40% of a query's samples on the prefetch
/// instructions). Requested into L2, the lines arrive as fast and the
/// kernel's loads take an L2 hit of a few cycles. `fathom eval --threads 1`,
/// T0 and T1 alternated in one binary at equal recall: words-dev-384 f32
/// 1.35-1.40×, bf16 1.2-1.3×, i8 1.08-1.12×, seeded 100k × 384 l2
/// clusters 1.4-1.6×, 1M × 128 f32 about even (docs/search.md).
#[inline(always)]
#[allow(unsafe_code)]
pub(crate) fn prefetch(ptr: *const u8, lines: usize) {
    #[cfg(target_arch = "x86_64")]
    for i in 0..lines {
        // SAFETY: prefetch is a hint that never faults, whatever the address;
        // the pointer is computed with wrapping arithmetic and never read.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(
                ptr.wrapping_add(i * 64).cast(),
            )
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (ptr, lines);
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Candidate {
    pub dist: f32,
    pub id: u32,
    pub expanded: bool,
}

/// Reusable per-query working memory.
pub struct Scratch {
    /// Visited marks: `visited[i] == epoch` means node `i` was seen this query.
    visited: Vec<u16>,
    epoch: u16,
    /// The beam, sorted by distance, at most `ef` long.
    pub(crate) pool: Vec<Candidate>,
    /// Unvisited neighbours of the node being expanded.
    batch: Vec<u32>,
    /// Neighbours a filter turned away: bridges to their own neighbours.
    bridges: Vec<u32>,
    /// Layer-0 starting points of a filtered search.
    entries: Vec<(u32, f32)>,
    /// Set by the caller: the filter's admitted count and the index size,
    /// to stop a filtered search as soon as [`local_share`] shows the
    /// filter thin around the query (`thin` then tells it so).
    pub(crate) thin_check: Option<(u64, u64)>,
    pub(crate) thin: bool,
    /// Query converted to each storage type.
    pub(crate) q_f32: Vec<f32>,
    pub(crate) q_bf16: Vec<u16>,
    pub(crate) q_i8: Vec<i8>,
    /// A stored row converted to the traversal type (a bound's rows).
    pub(crate) row_bf16: Vec<u16>,
    pub(crate) row_i8: Vec<i8>,
}

impl Scratch {
    pub fn new(n: usize) -> Self {
        Scratch {
            visited: vec![0; n],
            epoch: 0,
            pool: Vec::with_capacity(256),
            batch: Vec::with_capacity(64),
            bridges: Vec::with_capacity(64),
            entries: Vec::new(),
            thin_check: None,
            thin: false,
            q_f32: Vec::new(),
            q_bf16: Vec::new(),
            q_i8: Vec::new(),
            row_bf16: Vec::new(),
            row_i8: Vec::new(),
        }
    }

    /// Start a new query: bump the epoch instead of clearing the marks.
    fn next_epoch(&mut self, n: usize) {
        if self.visited.len() < n {
            self.visited.resize(n, 0);
        }
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.visited.iter_mut().for_each(|v| *v = 0);
            self.epoch = 1;
        }
    }

    /// Start a beam search: clear the marks and seed the beam with the
    /// entries, nearest first, at most `ef` of them.
    fn start(&mut self, n: usize, entries: &[(u32, f32)], ef: usize) {
        self.next_epoch(n);
        self.pool.clear();
        for &(id, dist) in entries {
            if self.visit(id) {
                insert(
                    &mut self.pool,
                    ef,
                    Candidate {
                        dist,
                        id,
                        expanded: false,
                    },
                );
            }
        }
    }

    /// Mark `node` visited; returns true if it was not visited before.
    #[inline(always)]
    fn visit(&mut self, node: u32) -> bool {
        match self.visited.get_mut(node as usize) {
            Some(v) if *v != self.epoch => {
                *v = self.epoch;
                true
            }
            _ => false,
        }
    }

    /// The beam after a search, nearest first.
    pub(crate) fn results(&self) -> impl Iterator<Item = Neighbor> + '_ {
        self.pool.iter().map(|c| Neighbor {
            id: c.id,
            distance: c.dist,
        })
    }
}

/// A pool of scratch spaces, so concurrent queries each get one without
/// allocating. A scratch is created only when all existing ones are in use,
/// and at most [`ScratchPool::keep_limit`] idle ones are kept: a burst of
/// concurrent queries does not hold its peak of memory (a visited array of
/// two bytes per node each) afterwards.
pub struct ScratchPool {
    n: usize,
    keep: usize,
    free: Mutex<Vec<Scratch>>,
}

impl ScratchPool {
    pub fn new(n: usize) -> Self {
        let keep = Self::keep_limit();
        ScratchPool {
            n,
            keep,
            free: Mutex::new(Vec::with_capacity(keep)),
        }
    }

    /// Idle scratch spaces held for the next queries.
    pub fn idle(&self) -> usize {
        self.free.lock().len()
    }

    /// The most idle scratch spaces kept: one per core, and at least 16.
    pub fn keep_limit() -> usize {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .max(16)
    }

    pub fn get(&self) -> ScratchGuard<'_> {
        let scratch = self
            .free
            .lock()
            .pop()
            .unwrap_or_else(|| Scratch::new(self.n));
        ScratchGuard {
            pool: self,
            scratch: Some(scratch),
        }
    }

    /// Take `s` back, or drop it when enough are idle.
    fn put(&self, s: Scratch) {
        let extra = {
            let mut free = self.free.lock();
            debug_assert!(free.len() <= self.keep);
            if free.len() < self.keep {
                free.push(s);
                None
            } else {
                Some(s)
            }
        };
        // Freed outside the lock.
        drop(extra);
    }
}

pub struct ScratchGuard<'a> {
    pool: &'a ScratchPool,
    scratch: Option<Scratch>,
}

impl std::ops::Deref for ScratchGuard<'_> {
    type Target = Scratch;
    fn deref(&self) -> &Scratch {
        self.scratch.as_ref().expect("present until drop")
    }
}

impl std::ops::DerefMut for ScratchGuard<'_> {
    fn deref_mut(&mut self) -> &mut Scratch {
        self.scratch.as_mut().expect("present until drop")
    }
}

impl Drop for ScratchGuard<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.scratch.take() {
            self.pool.put(s);
        }
    }
}

/// Neighbours gathered before a descent step scores them: more than an
/// upper layer's usual degree.
const DESCENT_BATCH: usize = 64;

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

/// Beam search of width `ef` on one layer from the given entry points. The
/// result is left in `scratch.pool`, nearest first.
#[allow(clippy::too_many_arguments)]
pub(crate) fn search_layer<L: Links, E: Element, C: Cancel>(
    links: &L,
    space: &Space<'_, E>,
    entries: &[(u32, f32)],
    layer: usize,
    ef: usize,
    scratch: &mut Scratch,
    cancel: &C,
    stats: &mut SearchStats,
) -> Result<()> {
    search_layer_limited(
        links,
        space,
        entries,
        layer,
        ef,
        Limit::NONE,
        scratch,
        cancel,
        stats,
    )
}

/// [`search_layer`] that stops at `limit`.
#[allow(clippy::too_many_arguments)]
fn search_layer_limited<L: Links, E: Element, C: Cancel>(
    links: &L,
    space: &Space<'_, E>,
    entries: &[(u32, f32)],
    layer: usize,
    ef: usize,
    limit: Limit,
    scratch: &mut Scratch,
    cancel: &C,
    stats: &mut SearchStats,
) -> Result<()> {
    let ef = ef.max(1);
    scratch.start(space.rows.len(), entries, ef);
    let mut cursor = 0;
    while cursor < scratch.pool.len() {
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
        cursor = score_batch(links, space, &batch, &mut scratch.pool, ef, cursor, stats);
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
fn score_batch<L: Links, E: Element>(
    links: &L,
    space: &Space<'_, E>,
    batch: &[u32],
    pool: &mut Vec<Candidate>,
    ef: usize,
    cursor: usize,
    stats: &mut SearchStats,
) -> usize {
    if let Some(reject) = &space.reject {
        if pool.len() >= ef && batch.len() <= MAX_BATCH {
            return score_batch_rejecting(links, space, reject, batch, pool, ef, cursor, stats);
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
fn insert(pool: &mut Vec<Candidate>, ef: usize, c: Candidate) -> usize {
    let pos = pool.partition_point(|x| x.dist <= c.dist);
    if pos >= ef {
        return pos;
    }
    if pool.len() == ef {
        pool.pop();
    }
    pool.insert(pos, c);
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
#[allow(clippy::too_many_arguments)]
#[inline(never)]
fn score_batch_rejecting<L: Links, E: Element>(
    links: &L,
    space: &Space<'_, E>,
    reject: &Rejecting<E>,
    batch: &[u32],
    pool: &mut Vec<Candidate>,
    ef: usize,
    cursor: usize,
    stats: &mut SearchStats,
) -> usize {
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
    search_layer_limited(
        graph,
        space,
        &[(node, dist)],
        0,
        ef,
        limit,
        scratch,
        cancel,
        &mut stats,
    )?;
    Ok(stats)
}

/// Neighbours whose admission measures the admitted share around the query
/// ([`local_share`]).
const SHARE_SAMPLE: u64 = 384;

/// A filter whose admitted share around the query (not zero) is under
/// 1/this of its share of the index is thin there ([`Scratch::thin`]). On
/// the synthetic 1M × 128 set, a language filter leaves the queries of
/// other clusters at 0–2% against 8.8% overall, where the graph reaches
/// only recall 0.82; uncorrelated filters measure within a few percent of
/// their overall share (docs/filters.md).
const THIN_SHARE_INV: u64 = 3;

/// How many of the layer-0 nodes around `near` (its neighbours, then
/// theirs, up to [`SHARE_SAMPLE`]) `admit` admits, and how many it turns
/// away. `near` is the query's nearest node found unfiltered, so this is
/// the admitted share where the nearest admitted items should be, not where
/// the filtered beam goes.
fn local_share<L: Links, A: Admit>(links: &L, near: u32, admit: &A) -> (u64, u64) {
    let (mut admits, mut seen) = (0u64, 0u64);
    let mut sample = |node: u32| {
        if seen < SHARE_SAMPLE {
            links.for_each_neighbor(node, 0, |x| {
                seen += 1;
                admits += u64::from(admit.admit(x));
            });
        }
    };
    sample(near);
    links.for_each_neighbor(near, 0, &mut sample);
    (admits, seen - admits)
}

/// Layer-0 beam search that returns only admitted nodes (filter, exclusions,
/// deletions: whatever `admit` decides).
///
/// Only admitted nodes enter the beam, so it holds `ef` nodes that may be
/// returned and the search costs about what an unfiltered one of the same
/// `ef` costs. A filter cuts the graph into pieces, so when expanding a node
/// the neighbours it turns away serve as bridges: their own neighbours are
/// gathered (two hops, as ACORN does) until the batch holds `fanout` admitted
/// nodes. The entry point is a starting place, and is dropped from the beam at
/// the end if it is not admitted. Results are left in `scratch.pool`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn search_layer_admitted<L: Links, E: Element, C: Cancel, A: Admit>(
    links: &L,
    space: &Space<'_, E>,
    entries: &[(u32, f32)],
    layer: usize,
    ef: usize,
    fanout: usize,
    scratch: &mut Scratch,
    cancel: &C,
    admit: &A,
    stats: &mut SearchStats,
) -> Result<()> {
    let ef = ef.max(1);
    scratch.start(space.rows.len(), entries, ef);
    let mut cursor = 0;
    while cursor < scratch.pool.len() {
        let current = &mut scratch.pool[cursor];
        current.expanded = true;
        let node = current.id;
        stats.expansions += 1;
        if stats.expansions & CANCEL_CHECK_MASK == 0 && cancel.cancelled() {
            return Err(cancel.error());
        }

        let mut batch = std::mem::take(&mut scratch.batch);
        let mut bridges = std::mem::take(&mut scratch.bridges);
        batch.clear();
        bridges.clear();
        links.for_each_neighbor(node, layer, |nb| {
            if scratch.visit(nb) {
                if admit.admit(nb) {
                    batch.push(nb);
                } else {
                    bridges.push(nb);
                }
            }
        });
        const BRIDGES_AHEAD: usize = 4;
        for &b in bridges.iter().take(BRIDGES_AHEAD) {
            links.prefetch_links(b);
        }
        for (i, &b) in bridges.iter().enumerate() {
            if batch.len() >= fanout {
                break;
            }
            if let Some(&later) = bridges.get(i + BRIDGES_AHEAD) {
                links.prefetch_links(later);
            }
            // Turned-away nodes are not marked visited: they may bridge again.
            links.for_each_neighbor(b, layer, |x| {
                if admit.admit(x) && scratch.visit(x) {
                    batch.push(x);
                }
            });
        }
        cursor = score_batch(links, space, &batch, &mut scratch.pool, ef, cursor, stats);
        scratch.batch = batch;
        scratch.bridges = bridges;
    }
    // Entries are starting places; only admitted nodes are results.
    scratch.pool.retain(|c| admit.admit(c.id));
    Ok(())
}

/// [`hnsw_search`] returning only admitted nodes: unfiltered greedy descent
/// through the upper layers (they only navigate), then
/// [`search_layer_admitted`] on layer 0 with a beam one wider, for the entry
/// point it may have to drop, bridging until `fanout` admitted neighbours.
pub fn hnsw_search_admitted<E: Element, C: Cancel, A: Admit>(
    graph: &GraphView<'_>,
    space: &Space<'_, E>,
    ef: usize,
    scratch: &mut Scratch,
    cancel: &C,
    admit: &A,
    fanout: usize,
) -> Result<SearchStats> {
    let mut stats = SearchStats::default();
    scratch.thin = false;
    if graph.is_empty() {
        scratch.pool.clear();
        return Ok(stats);
    }
    let ep = graph.entry_point;
    let d = space.distance(ep);
    stats.distances += 1;
    let entry = if graph.max_level >= 1 {
        greedy_descent(graph, space, ep, d, graph.max_level as usize, 1, &mut stats)
    } else {
        (ep, d)
    };
    if let Some((admitted, n)) = scratch.thin_check {
        let (admits, turned_away) = local_share(graph, entry.0, admit);
        if admits > 0 && admits * THIN_SHARE_INV * n < admitted * (admits + turned_away) {
            // The caller scans the matches instead: no traversal to waste.
            scratch.thin = true;
            scratch.pool.clear();
            return Ok(stats);
        }
    }
    // A filter that excludes the query's neighbourhood (an anti-correlated
    // one) leaves admitted islands there that two hops on layer 0 cannot
    // leave. Layer 1's long links can: search it admitted-only first, and
    // start layer 0 from the admitted nodes it finds.
    let mut entries = std::mem::take(&mut scratch.entries);
    entries.clear();
    entries.push(entry);
    if graph.max_level >= 1 {
        search_layer_admitted(
            graph,
            space,
            &[entry],
            1,
            ef,
            graph.m,
            scratch,
            cancel,
            admit,
            &mut stats,
        )?;
        // The query's own neighbourhood stays a starting place too: the
        // nearest admitted nodes may be rare there but still nearest.
        entries.extend(scratch.pool.iter().map(|c| (c.id, c.dist)));
    }
    let r = search_layer_admitted(
        graph,
        space,
        &entries,
        0,
        ef + 1,
        fanout,
        scratch,
        cancel,
        admit,
        &mut stats,
    );
    scratch.entries = entries;
    r?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Graph;

    #[test]
    fn descent_scores_each_node_once() {
        // Points on a line at 0, 1, 2, ..., 7; the query at 6.2. On layer 1
        // every node links to all the others, so each step of the greedy
        // walk meets the nodes the step before scored.
        let n = 8;
        let rows: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let mut g = Graph::with_levels(8, 8, vec![1; n]);
        for i in 0..n as u32 {
            let others: Vec<u32> = (0..n as u32).filter(|&j| j != i).collect();
            g.set_neighbors(i, 1, &others);
            g.set_neighbors(i, 0, &others);
        }
        let rows = Rows {
            data: &rows[..],
            dim: 1,
            stride: 1,
        };
        let query = [6.2f32];
        let space = Space::new(rows, Kernel::<f32>::new(Metric::L2), &query);
        let mut stats = SearchStats::default();
        let start = 0;
        let (node, dist) = greedy_descent(
            &g.view(),
            &space,
            start,
            space.distance(start),
            1,
            0,
            &mut stats,
        );
        assert_eq!(node, 6);
        assert!((dist - 0.04).abs() < 1e-5, "{dist}");
        // From 0 it moves to 6 (all 7 others scored), then finds nothing
        // new to score: 7 distances, not 7 + 7.
        assert_eq!(stats.distances, 7);
    }

    /// The walk as it was before it skipped scored nodes: every neighbour
    /// scored in turn, the first strictly nearer one kept.
    fn plain_descent(
        g: &GraphView<'_>,
        space: &Space<'_, f32>,
        mut node: u32,
        mut dist: f32,
        from: usize,
        to: usize,
    ) -> (u32, f32) {
        for layer in (to + 1..=from).rev() {
            loop {
                let mut best = (node, dist);
                for &nb in g.neighbors(node, layer) {
                    let d = space.distance(nb);
                    if d < best.1 {
                        best = (nb, d);
                    }
                }
                if best.0 == node {
                    break;
                }
                (node, dist) = best;
            }
        }
        (node, dist)
    }

    #[test]
    fn descent_ends_where_the_plain_walk_ends() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        // Points on an integer grid, so some distances tie; a few nodes on
        // layers 2 and 3 and most on layer 1, with up to 90 links a node
        // there, so a step's neighbours fill more than one batch of 64.
        let (n, dim, m) = (600usize, 8usize, 90usize);
        let rows: Vec<f32> = (0..n * dim)
            .map(|_| rng.random_range(0..10) as f32)
            .collect();
        let levels: Vec<u8> = (0..n)
            .map(|i| match i {
                0..3 => 3,
                3..30 => 2,
                30..400 => 1,
                _ => 0,
            })
            .collect();
        let mut g = Graph::with_levels(m, m, levels.clone());
        for i in 0..n as u32 {
            for layer in 1..=levels[i as usize] as usize {
                let peers: Vec<u32> = (0..n as u32)
                    .filter(|&j| j != i && levels[j as usize] as usize >= layer)
                    .filter(|_| rng.random_bool(0.5))
                    .take(m)
                    .collect();
                g.set_neighbors(i, layer, &peers);
            }
        }
        let view = g.view();
        let rows = Rows {
            data: &rows[..],
            dim,
            stride: dim,
        };
        let mut longest = 0;
        for _ in 0..200 {
            let query: Vec<f32> = (0..dim).map(|_| rng.random_range(0..10) as f32).collect();
            let space = Space::new(rows, Kernel::<f32>::new(Metric::L2), &query);
            let ep = view.entry_point;
            let d = space.distance(ep);
            for to in [0, 1] {
                let top = view.max_level as usize;
                let mut stats = SearchStats::default();
                let got = greedy_descent(&view, &space, ep, d, top, to, &mut stats);
                assert_eq!(got, plain_descent(&view, &space, ep, d, top, to));
            }
        }
        for i in 0..n as u32 {
            longest = longest.max(view.neighbors(i, 1).len());
        }
        assert!(longest > DESCENT_BATCH, "{longest}");
    }
}

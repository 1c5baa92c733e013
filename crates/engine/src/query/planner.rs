//! The planner's policy: whether a filtered search scans its matches
//! exactly or walks the graph, how wide a filtered beam is, and how much
//! of a bounded beam is expanded whatever its bound.

/// The plan of a filtered search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Plan {
    /// Chosen per query from the number of matching items ([`prefers_exact`]).
    #[default]
    Auto,
    /// Exact scan of the admitted items, filtered or not: the exact answer
    /// of any call (recall's reference).
    Exact,
    /// Filtered graph traversal (still completed exactly if it finds fewer
    /// than `k` when more match).
    Graph,
    /// An unfiltered traversal of a beam widened by the filter's share,
    /// keeping the admitted nodes (a filtered traversal when that leaves
    /// fewer than `k`).
    Post,
}

/// The least share of the index a filter admits for the planner to search
/// it as an unfiltered traversal of a beam widened by 1/share, keeping the
/// admitted nodes ([`Plan::Post`]). On 220k MiniLM phrase embeddings a 27%
/// to 64% filter kept 0.55–0.98× of unfiltered QPS at recall 0.95 this way,
/// against 0.30–0.45× by filtered traversal, whose bridging fetches link
/// lists of turned-away nodes at every expansion (docs/filters.md).
pub const POST_MIN_SHARE: f64 = 0.25;

/// Whether an exact scan of `matching` rows beats a filtered traversal of
/// beam `ef` over `n` items.
///
/// A filtered traversal costs about an unfiltered one of the same beam while
/// the admitted nodes stay connected through two hops, and grows as they
/// thin out; the exact scan costs one distance per matching row. The
/// constants were measured on words-dev-384 and the synthetic 1M × 128 set
/// (`docs/filters.md`).
pub fn prefers_exact(matching: u64, n: usize, ef: usize) -> bool {
    let n = n as u64;
    matching <= EXACT_MIN_ROWS.max(ef as u64 * EXACT_ROWS_PER_EF)
        || matching * EXACT_MAX_SHARE_INV <= n
}

/// Below this many matching rows the exact scan always wins.
const EXACT_MIN_ROWS: u64 = 2_000;
/// Matching rows per unit of beam width below which exact wins.
const EXACT_ROWS_PER_EF: u64 = 64;
/// Exact when at most 1/this of the index matches (two hops stop connecting).
const EXACT_MAX_SHARE_INV: u64 = 25;

/// The beam of a filtered traversal chosen by the planner: the admitted
/// nodes thin out below 10% and recall with them, so the beam widens by
/// `sqrt(0.1 / selectivity)`, at most 4×.
pub fn filtered_ef(ef: usize, selectivity: f64) -> usize {
    let boost = (0.1 / selectivity.max(1e-9)).sqrt().clamp(1.0, 4.0);
    (ef as f64 * boost).round() as usize
}

/// How many of a bounded beam's nearest entries are expanded whatever
/// their distance: 2·√ef. A beam of one is a greedy walk that stops in the
/// first local minimum past the bound and misses a layer's few near items
/// (recall@10 0.02–0.03 lower on words-dev-384 with one delta of 10%); the
/// whole beam spends as much as an unbounded search. ef/4 lost up to 0.009
/// at ef 16 and 1.5·√ef up to 0.006; 2·√ef loses about 0.002 for 4% more
/// distances than 1.5·√ef (benches/layers.rs).
pub(crate) fn bounded_keep(ef: usize) -> usize {
    (((ef as f64).sqrt() * 2.0).round() as usize).max(1)
}

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
//!
//! `beam` holds the beam search and the descent, `filtered` the admitted-only
//! traversal, `space` what scores a node, `scratch` the pooled working
//! memory, `cancel` what stops a search early.

pub mod beam;
pub mod cancel;
pub mod filtered;
pub mod scratch;
pub mod space;

pub(crate) use beam::{greedy_descent, search_layer, SearchContext};
pub use beam::{hnsw_search, hnsw_search_limited, Limit};
pub use cancel::{Cancel, Deadline, Flag, FlagOrDeadline, NoCancel};
pub use filtered::{hnsw_search_admitted, hnsw_search_value};
pub use scratch::{Scratch, ScratchGuard, ScratchPool};
pub(crate) use space::prefetch;
pub use space::Space;

use crate::graph::GraphView;

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
    /// Of `expansions`, those of a filtered traversal that read the links
    /// of turned-away neighbours (two hops) to fill their batch.
    pub bridged: u64,
    /// The link lists of turned-away neighbours those expansions read.
    pub bridge_lists: u64,
}

impl std::ops::AddAssign for SearchStats {
    fn add_assign(&mut self, o: Self) {
        self.distances += o.distances;
        self.expansions += o.expansions;
        self.rejected += o.rejected;
        self.bridged += o.bridged;
        self.bridge_lists += o.bridge_lists;
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
        space::prefetch(self.links0_ptr(node).cast(), 2);
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Candidate {
    pub dist: f32,
    pub id: u32,
    pub expanded: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distance::{Kernel, Metric};
    use crate::graph::Graph;
    use crate::vectors::Rows;
    use beam::DESCENT_BATCH;

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

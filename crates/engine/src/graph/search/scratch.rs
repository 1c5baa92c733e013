//! Per-query working memory and the pool that lends it out, so that a
//! warm search allocates nothing.

use parking_lot::Mutex;

use super::beam::insert;
use super::{Candidate, Neighbor};

/// Reusable per-query working memory.
pub struct Scratch {
    /// Visited marks: `visited[i] == epoch` means node `i` was seen this query.
    visited: Vec<u16>,
    epoch: u16,
    /// The beam, sorted by distance, at most `ef` long.
    pub(crate) pool: Vec<Candidate>,
    /// Unvisited neighbours of the node being expanded.
    pub(super) batch: Vec<u32>,
    /// Neighbours a filter turned away: bridges to their own neighbours.
    pub(super) bridges: Vec<u32>,
    /// Layer-0 starting points of a filtered search.
    pub(super) entries: Vec<(u32, f32)>,
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
    pub(super) fn next_epoch(&mut self, n: usize) {
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
    pub(super) fn start(&mut self, n: usize, entries: &[(u32, f32)], ef: usize) {
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
    pub(super) fn visit(&mut self, node: u32) -> bool {
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

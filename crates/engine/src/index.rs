//! A searchable index: an open snapshot plus a scratch pool, and the query
//! front door (validation, query conversion, exact re-rank, exact fallback for
//! tiny indexes). The traversal itself is in `search`.

use std::path::Path;
use std::time::Instant;

use crate::distance::{f32_to_bf16, normalize, Element, Kernel, Metric, Storage};
use crate::error::{Error, Result};
use crate::exact;
use crate::graph::GraphView;
use crate::search::{
    hnsw_search, prefetch, Cancel, Deadline, Neighbor, NoCancel, Scratch, ScratchPool, SearchStats,
    Space,
};
use crate::snapshot::Snapshot;
use crate::vectors::{Quantizer, Rows, VectorSlice};

/// The beam width used when neither the caller nor the snapshot sets one.
pub const DEFAULT_EF: usize = 64;

/// Largest k a query may ask for: a k beyond this is a mistake, not a
/// retrieval request, and would make the result itself the cost.
pub const MAX_K: usize = 100_000;
/// Largest beam width accepted.
pub const MAX_EF: usize = 100_000;

/// Per-query knobs.
#[derive(Debug, Clone, Copy)]
pub struct SearchParams {
    pub k: usize,
    /// Beam width; 0 means the index default. Raised to `k` when below it.
    pub ef: usize,
    pub deadline: Option<Instant>,
}

impl SearchParams {
    pub fn new(k: usize, ef: usize) -> Self {
        SearchParams {
            k,
            ef,
            deadline: None,
        }
    }
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
}

impl IndexParts<'_> {
    pub fn len(&self) -> usize {
        self.graph.len()
    }

    pub fn is_empty(&self) -> bool {
        self.graph.is_empty()
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
        if params.k == 0 {
            return Err(Error::invalid("k must be at least 1"));
        }
        if params.k > MAX_K {
            return Err(Error::invalid(format!(
                "k = {} exceeds the maximum {MAX_K}",
                params.k
            )));
        }
        if params.ef > MAX_EF {
            return Err(Error::invalid(format!(
                "ef = {} exceeds the maximum {MAX_EF}",
                params.ef
            )));
        }
        self.prepare_query(query, scratch)?;
        out.clear();
        let n = self.len();
        let ef = match params.ef {
            0 => self.default_ef,
            ef => ef,
        }
        .max(params.k);
        // A beam as wide as the index (or a k covering it) is an exhaustive
        // search: do it exactly, which also returns the whole index sorted.
        if ef >= n {
            let kernel = Kernel::<f32>::new(self.metric);
            let (rows, q, k) = (self.exact, &scratch.q_f32, params.k);
            match params.deadline {
                None => exact::knn_into(rows, &kernel, q, k, out),
                Some(d) => exact::knn_into_cancellable(rows, &kernel, q, k, out, &Deadline(d))?,
            }
            return Ok(SearchStats {
                distances: n as u64,
                expansions: 0,
            });
        }
        let stats = match params.deadline {
            None => self.traverse(ef, scratch, &NoCancel)?,
            Some(d) => self.traverse(ef, scratch, &Deadline(d))?,
        };
        if self.vectors.storage() == Storage::F32 {
            out.extend(scratch.results().take(params.k));
        } else {
            // Re-rank the whole beam against the exact vectors.
            let kernel = Kernel::<f32>::new(self.metric);
            let q = &scratch.q_f32;
            // The exact rows are cold (only re-ranking reads them): request
            // them all before computing any distance.
            let lines = (self.dim * 4).div_ceil(64);
            for c in &scratch.pool {
                prefetch(self.exact.row_ptr(c.id).cast(), lines);
            }
            out.extend(scratch.pool.iter().map(|c| Neighbor {
                id: c.id,
                distance: kernel.distance(q, self.exact.row(c.id)),
            }));
            out.sort_unstable_by(|a, b| a.distance.total_cmp(&b.distance).then(a.id.cmp(&b.id)));
            out.truncate(params.k);
        }
        Ok(stats)
    }

    fn traverse<C: Cancel>(
        &self,
        ef: usize,
        scratch: &mut Scratch,
        cancel: &C,
    ) -> Result<SearchStats> {
        match self.vectors {
            VectorSlice::F32(rows) => {
                let q = std::mem::take(&mut scratch.q_f32);
                let r = run(&self.graph, rows, self.metric, &q, ef, scratch, cancel);
                scratch.q_f32 = q;
                r
            }
            VectorSlice::Bf16(rows) => {
                let q = std::mem::take(&mut scratch.q_bf16);
                let r = run(&self.graph, rows, self.metric, &q, ef, scratch, cancel);
                scratch.q_bf16 = q;
                r
            }
            VectorSlice::I8(rows) => {
                let q = std::mem::take(&mut scratch.q_i8);
                let r = run(&self.graph, rows, self.metric, &q, ef, scratch, cancel);
                scratch.q_i8 = q;
                r
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn run<E: Element, C: Cancel>(
    graph: &GraphView<'_>,
    rows: Rows<'_, E>,
    metric: Metric,
    q: &[E],
    ef: usize,
    scratch: &mut Scratch,
    cancel: &C,
) -> Result<SearchStats> {
    // Traversal distances only need to rank like the true ones (i8 codes are
    // scaled per query); results are re-ranked exactly.
    let space = Space::new(rows, Kernel::new(metric), q);
    hnsw_search(graph, &space, ef, scratch, cancel)
}

/// An open snapshot, ready to search from many threads at once.
pub struct Index {
    snapshot: Snapshot,
    pool: ScratchPool,
}

impl Index {
    pub fn open(path: impl AsRef<Path>) -> Result<Index> {
        Ok(Index::from_snapshot(Snapshot::open(path)?))
    }

    pub fn from_snapshot(snapshot: Snapshot) -> Index {
        let pool = ScratchPool::new(snapshot.len());
        Index { snapshot, pool }
    }

    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
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
        }
    }

    /// Search with a pooled scratch space, into a caller-owned buffer.
    pub fn search_into(
        &self,
        query: &[f32],
        params: &SearchParams,
        out: &mut Vec<Neighbor>,
    ) -> Result<SearchStats> {
        let mut scratch = self.pool.get();
        self.parts().search_into(query, params, &mut scratch, out)
    }

    pub fn search(&self, query: &[f32], params: &SearchParams) -> Result<Vec<Neighbor>> {
        let mut out = Vec::with_capacity(params.k.min(self.snapshot.len()));
        self.search_into(query, params, &mut out)?;
        Ok(out)
    }

    /// The external id of a node.
    pub fn id(&self, node: u32) -> &str {
        self.snapshot.id(node).unwrap_or("")
    }

    /// The stored (exact, normalized under cosine) vector of an external id.
    pub fn vector_of(&self, id: &str) -> Option<&[f32]> {
        let node = self.snapshot.find(id)?;
        Some(self.snapshot.vectors_f32().row(node))
    }
}

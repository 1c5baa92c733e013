//! Exact k-nearest-neighbour search by brute force over the same kernels:
//! the oracle for recall in tests and `eval`, and the answer for indexes so
//! small that a graph would not pay.

use std::collections::BinaryHeap;

use roaring::RoaringBitmap;

use crate::distance::{normalize, Kernel, Metric};
use crate::error::Result;
use crate::search::{prefetch, Cancel, Neighbor, NoCancel};
use crate::vectors::Rows;

/// Max-heap entry ordered by distance, then node id (deterministic ties).
#[derive(PartialEq)]
struct Entry(f32, u32);
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&o.0).then(self.1.cmp(&o.1))
    }
}

/// The `k` nearest rows to `query` (already normalized under cosine), nearest
/// first, written to `out`.
pub fn knn_into(
    rows: Rows<'_, f32>,
    kernel: &Kernel<f32>,
    query: &[f32],
    k: usize,
    out: &mut Vec<Neighbor>,
) {
    // NoCancel never stops the scan.
    let _ = knn_into_cancellable(rows, kernel, query, k, out, &NoCancel);
}

/// As [`knn_into`], checking `cancel` every few thousand rows so that an
/// exhaustive search honours a deadline.
pub fn knn_into_cancellable<C: Cancel>(
    rows: Rows<'_, f32>,
    kernel: &Kernel<f32>,
    query: &[f32],
    k: usize,
    out: &mut Vec<Neighbor>,
    cancel: &C,
) -> Result<()> {
    knn_rows_into(rows, kernel, query, k, 0..rows.len() as u32, out, cancel)
}

/// The `k` nearest among the rows `ids` (each `< rows.len()`), nearest first:
/// the exact plan of a filtered search, over the matching rows only.
pub fn knn_rows_into<C: Cancel>(
    rows: Rows<'_, f32>,
    kernel: &Kernel<f32>,
    query: &[f32],
    k: usize,
    ids: impl IntoIterator<Item = u32>,
    out: &mut Vec<Neighbor>,
    cancel: &C,
) -> Result<()> {
    out.clear();
    let k = k.min(rows.len());
    if k == 0 {
        return Ok(());
    }
    let lines = (rows.dim * 4).div_ceil(64);
    // The heap lives in `out`: a warm buffer makes the scan allocation-free.
    out.reserve(k);
    let mut heap = TopK { heap: out, k };
    // Rows of a subset are scattered: gather a block of ids, request all
    // their rows, then compute, so that memory latency overlaps.
    let mut block = [0u32; 64];
    let mut ids = ids.into_iter();
    let mut scanned = 0usize;
    loop {
        let mut len = 0;
        for id in ids.by_ref().take(block.len()) {
            block[len] = id;
            len += 1;
        }
        if len == 0 {
            break;
        }
        for &i in &block[..len] {
            prefetch(rows.row_ptr(i).cast(), lines);
        }
        scanned += len;
        if scanned % 4096 < len && cancel.cancelled() {
            heap.heap.clear();
            return Err(cancel.error());
        }
        for &i in &block[..len] {
            heap.offer(Neighbor {
                id: i,
                distance: kernel.distance(query, rows.row(i)),
            });
        }
    }
    heap.finish();
    Ok(())
}

/// The `k` nearest of the neighbours offered, kept as a max-heap in a
/// caller's buffer (ordered by distance, then id, as [`Entry`]).
struct TopK<'a> {
    heap: &'a mut Vec<Neighbor>,
    k: usize,
}

/// Whether `a` ranks before `b`: nearer, or as near with a lower id.
#[inline(always)]
fn before(a: &Neighbor, b: &Neighbor) -> bool {
    a.distance.total_cmp(&b.distance).then(a.id.cmp(&b.id)) == std::cmp::Ordering::Less
}

impl TopK<'_> {
    #[inline(always)]
    fn offer(&mut self, n: Neighbor) {
        let h = &mut *self.heap;
        if h.len() < self.k {
            h.push(n);
            let mut i = h.len() - 1;
            while i > 0 {
                let parent = (i - 1) / 2;
                if !before(&h[parent], &h[i]) {
                    break;
                }
                h.swap(parent, i);
                i = parent;
            }
        } else if before(&n, &h[0]) {
            h[0] = n;
            let mut i = 0;
            loop {
                let left = 2 * i + 1;
                if left >= h.len() {
                    break;
                }
                let right = left + 1;
                let child = if right < h.len() && before(&h[left], &h[right]) {
                    right
                } else {
                    left
                };
                if !before(&h[i], &h[child]) {
                    break;
                }
                h.swap(i, child);
                i = child;
            }
        }
        debug_assert!(h.len() <= self.k);
    }

    /// Nearest first.
    fn finish(self) {
        self.heap
            .sort_unstable_by(|a, b| a.distance.total_cmp(&b.distance).then(a.id.cmp(&b.id)));
    }
}

/// The `k` of `ids` with the lowest `distance`, nearest first: the exact
/// plan of a scored (recommendation) search. Checks `cancel` every
/// thousand rows.
pub fn top_by<C: Cancel + ?Sized>(
    ids: impl Iterator<Item = u32>,
    k: usize,
    cancel: &C,
    distance: impl Fn(u32) -> f32,
) -> Result<Vec<Neighbor>> {
    let mut heap = BinaryHeap::with_capacity(k + 1);
    for (i, id) in ids.enumerate() {
        if i % 1024 == 1023 && cancel.cancelled() {
            return Err(cancel.error());
        }
        let e = Entry(distance(id), id);
        if heap.len() < k {
            heap.push(e);
        } else if heap.peek().is_some_and(|top| e < *top) {
            heap.pop();
            heap.push(e);
        }
    }
    Ok(heap
        .into_sorted_vec()
        .into_iter()
        .map(|Entry(distance, id)| Neighbor { id, distance })
        .collect())
}

/// Exact top-`k` node ids (nearest first) for many raw queries on `threads`
/// threads: ground truth for recall. Queries are normalized here under
/// cosine; a zero query under cosine gets no results.
pub fn knn_batch(
    rows: Rows<'_, f32>,
    metric: Metric,
    queries: &[Vec<f32>],
    k: usize,
    threads: usize,
) -> Vec<Vec<u32>> {
    knn_batch_among(rows, metric, queries, k, threads, None)
}

/// As [`knn_batch`], among the rows of `subset` only (all rows when `None`):
/// the exact truth of a filtered search.
pub fn knn_batch_among(
    rows: Rows<'_, f32>,
    metric: Metric,
    queries: &[Vec<f32>],
    k: usize,
    threads: usize,
    subset: Option<&RoaringBitmap>,
) -> Vec<Vec<u32>> {
    let kernel = Kernel::<f32>::new(metric);
    let mut results = vec![Vec::new(); queries.len()];
    let threads = threads.clamp(1, queries.len().max(1));
    let chunk = queries.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        for (qs, rs) in queries.chunks(chunk).zip(results.chunks_mut(chunk)) {
            let kernel = &kernel;
            s.spawn(move || {
                let mut found = Vec::with_capacity(k);
                for (q, r) in qs.iter().zip(rs.iter_mut()) {
                    let mut q = q.clone();
                    if metric == Metric::Cosine && !normalize(&mut q) {
                        continue;
                    }
                    match subset {
                        None => knn_into(rows, kernel, &q, k, &mut found),
                        Some(ids) => {
                            // NoCancel never stops the scan.
                            let _ = knn_rows_into(
                                rows,
                                kernel,
                                &q,
                                k,
                                ids.iter(),
                                &mut found,
                                &NoCancel,
                            );
                        }
                    }
                    r.extend(found.iter().map(|n| n.id));
                }
            });
        }
    });
    results
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The scan keeps the k first rows under (distance, id), ties included:
    /// what sorting every row gives.
    #[test]
    fn knn_rows_into_matches_a_full_sort() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let kernel = Kernel::<f32>::new(Metric::L2);
        let mut out = Vec::new();
        for round in 0..200 {
            let (n, dim) = (rng.random_range(1..300), rng.random_range(1..5));
            // Small integers: many distances tie.
            let data: Vec<f32> = (0..n * dim)
                .map(|_| rng.random_range(0..3) as f32)
                .collect();
            let rows = Rows {
                data: &data,
                dim,
                stride: dim,
            };
            let query: Vec<f32> = (0..dim).map(|_| rng.random_range(0..3) as f32).collect();
            let k = rng.random_range(1..n + 5);
            let ids: Vec<u32> = (0..n as u32).filter(|i| i % 3 != round % 3).collect();
            knn_rows_into(
                rows,
                &kernel,
                &query,
                k,
                ids.iter().copied(),
                &mut out,
                &NoCancel,
            )
            .unwrap();
            let mut want: Vec<Neighbor> = ids
                .iter()
                .map(|&id| Neighbor {
                    id,
                    distance: kernel.distance(&query, rows.row(id)),
                })
                .collect();
            want.sort_by(|a, b| a.distance.total_cmp(&b.distance).then(a.id.cmp(&b.id)));
            want.truncate(k.min(n));
            assert_eq!(out, want, "n {n}, k {k}");
        }
    }
}

//! What scores a node: rows, a kernel and a query, with the prefetches
//! that overlap their misses and early rejection against a full beam.

use crate::distance::{Element, Kernel, Metric};
use crate::reject::EarlyReject;
use crate::vectors::Rows;

use super::SearchStats;

/// Vectors, a kernel and a query: what computes distances to nodes.
pub struct Space<'a, E: Element> {
    pub rows: Rows<'a, E>,
    pub kernel: Kernel<E>,
    pub query: &'a [E],
    /// Cache lines prefetched per vector.
    pub(super) lines: usize,
    /// How many neighbours ahead of the one being computed are prefetched:
    /// enough to keep a few dozen cache lines in flight, which is what one
    /// core can track (measured on words-dev-384: 8 ahead for i8 rows of 6
    /// lines, 4 for f32 rows of 24 lines).
    pub(super) ahead: usize,
    /// Early rejection against a full beam ([`crate::reject`]).
    pub(super) reject: Option<Rejecting<E>>,
}

/// Early rejection as one space runs it.
pub(super) struct Rejecting<E: Element> {
    pub(super) test: EarlyReject,
    /// Squared L2 over the leading dimensions.
    pub(super) l2: fn(&[E], &[E]) -> f64,
    /// Cache lines holding the leading dimensions.
    pub(super) head_lines: usize,
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
    pub(super) fn score_each(
        &self,
        batch: &[u32],
        stats: &mut SearchStats,
        mut f: impl FnMut(u32, f32),
    ) {
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
/// Into L2, not L1: a traversal keeps more lines in flight than the L1's
/// miss buffers track, and a T0 prefetch that finds them full waits
/// (measurements in docs/search.md).
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

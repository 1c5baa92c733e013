//! Early rejection: turning a candidate away after its leading dimensions.
//!
//! Once the beam is full, most candidates a traversal scores never enter it:
//! on words-dev-384 at the ef of recall 0.95, 95% of layer-0 distances are
//! computed against a full beam and 81% of them lose to its worst member.
//! At 384 f32 dimensions each of those costs 24 cache lines fetched from
//! memory, and memory, not arithmetic, bounds the traversal.
//!
//! So the squared difference over the first `dims` dimensions is summed
//! first. Divided by the share of the squared distance those dimensions
//! carry between near pairs (measured on the index's own vectors and
//! links), it estimates the whole distance; a candidate whose
//! estimate exceeds the beam's worst by more than a margin is turned away
//! without its remaining lines being read. Candidates that pass are scored
//! in full by the usual kernel, so every distance that enters the beam is
//! exact, and only the estimate's misses (a candidate turned away that would
//! have entered) can change a result. This is ADSampling's test (Gao and
//! Long, SIGMOD 2023) without its random rotation: the share is measured on
//! the data instead of being made uniform, so a set whose leading
//! dimensions carry more (or less) of the distance gets its own scale.
//!
//! On words-dev-384 it turns away about 40% of the candidates scored, for
//! more QPS at equal recall (docs/search.md has the figures). At
//! 128 dimensions (8 lines per vector) it measured slower and lost recall,
//! hence [`MIN_DIM`] and [`MIN_LINES`].

use crate::distance::{Element, Metric, Storage};
use crate::graph::GraphView;
use crate::vectors::{Rows, VectorSlice};

/// Below this many dimensions the test is not used (see the module docs).
pub const MIN_DIM: usize = 256;

/// Nor below this many cache lines per traversal vector: 8 lines (f32 at
/// 128 dimensions) measured slower. f32 at 384 (24 lines) and bf16 at 384
/// (12 lines) measured faster; i8 codes at 384 (6 lines) were not measured.
pub const MIN_LINES: usize = 12;

/// The estimate's margin: a candidate is turned away when its estimated
/// squared distance exceeds the beam's worst by more than this fraction.
/// Chosen by QPS at equal recall, the measure the search targets use. At
/// 0.3, words-dev-384 (f32) reached recall 0.95 at 0.97-1.11× the QPS of
/// 0.4 (median 1.08×) and 0.99 at 1.09-1.10×, losing 0.0027 of recall at
/// ef 12 and none from ef 32 up; seeded 100k × 384 clusters and bf16 rows
/// came out even (0.96-1.06×). At 0.4 recall matched the plain search at
/// every ef on words-dev-384 (docs/search.md).
pub const MARGIN: f32 = 0.3;

/// Nodes sampled to measure the leading dimensions' share; the links read
/// from each, and how many of the nearest of them are kept.
const SAMPLE_NODES: usize = 512;
const LINKS_READ: usize = 16;
const LINKS_KEPT: usize = 4;

/// The test for one index: how many leading dimensions, and the factor
/// that turns their squared difference into a bound on beam distances.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EarlyReject {
    /// Leading dimensions summed first.
    pub dims: usize,
    /// A candidate is turned away when `partial · scale` exceeds the beam's
    /// worst distance: `scale` folds in the share, the margin and the
    /// metric's relation between squared L2 and its distance.
    pub scale: f32,
}

impl EarlyReject {
    /// Measure the test for an index's traversal vectors under `metric`,
    /// or `None` where it does not apply: fewer than [`MIN_DIM`] dimensions
    /// or [`MIN_LINES`] lines per vector; the dot metric (a partial dot
    /// product bounds nothing); i8 codes under cosine (their traversal
    /// distance is a dot product with a rescaled query, not an L2 of the
    /// codes); too few linked nodes to measure; or leading dimensions that
    /// carry almost none or almost all of the distance.
    pub fn measure(
        metric: Metric,
        vectors: &VectorSlice<'_>,
        graph: &GraphView<'_>,
    ) -> Option<EarlyReject> {
        match vectors {
            VectorSlice::F32(rows) => measure_rows(metric, rows, graph),
            VectorSlice::Bf16(rows) => measure_rows(metric, rows, graph),
            VectorSlice::I8(rows) => measure_rows(metric, rows, graph),
        }
    }
}

fn measure_rows<E: Element>(
    metric: Metric,
    rows: &Rows<'_, E>,
    graph: &GraphView<'_>,
) -> Option<EarlyReject> {
    let dim = rows.dim;
    // Cosine rows are stored normalized, so |q - x|² = 2 (1 - q·x) = 2d.
    // i8 codes under l2 share one step: their squared L2 is the distance.
    let per_distance = match (metric, E::STORAGE) {
        (Metric::Cosine, Storage::F32 | Storage::Bf16) => 2.0,
        (Metric::L2, _) => 1.0,
        _ => return None,
    };
    let lines = (dim * std::mem::size_of::<E>()).div_ceil(64);
    if dim < MIN_DIM || lines < MIN_LINES {
        return None;
    }
    // About a sixth of the row, in whole 16-dimension steps: 64 of 384.
    let dims = (dim / 6).next_multiple_of(16).min(dim - 16);
    let share = near_share(rows, graph, dims)?;
    if !(0.02..=0.9).contains(&share) {
        return None;
    }
    Some(EarlyReject {
        dims,
        scale: 1.0 / (share * (1.0 + MARGIN) * per_distance),
    })
}

/// The share of the squared distance that the first `dims` dimensions carry
/// between near pairs: each sampled node and the nearest few of its links,
/// as near as the candidates a beam weighs. Random pairs would not do, nor
/// all links (HNSW keeps some long ones on purpose): where cluster structure
/// lives in the trailing dimensions, the leading ones carry a small share of
/// the distance between clusters but an ordinary share of the distance
/// within one, and a scale fitted to the first turns true neighbours away.
fn near_share<E: Element>(rows: &Rows<'_, E>, graph: &GraphView<'_>, dims: usize) -> Option<f32> {
    let l2 = E::raw_kernel(Metric::L2);
    let n = graph.len().min(rows.len());
    let step = (n / SAMPLE_NODES).max(1);
    let (mut head, mut whole, mut pairs) = (0f64, 0f64, 0usize);
    let mut near: Vec<(f64, f64)> = Vec::with_capacity(LINKS_READ);
    for a in (0..n as u32).step_by(step).take(SAMPLE_NODES) {
        let ra = rows.row(a);
        if ra.len() != rows.dim {
            continue;
        }
        near.clear();
        for &b in graph.neighbors(a, 0).iter().take(LINKS_READ) {
            let rb = rows.row(b);
            if rb.len() != rows.dim {
                continue;
            }
            let (w, h) = (l2(ra, rb), l2(&ra[..dims], &rb[..dims]));
            if w.is_finite() && h.is_finite() {
                near.push((w, h));
            }
        }
        near.sort_by(|x, y| x.0.total_cmp(&y.0));
        for &(w, h) in near.iter().take(LINKS_KEPT) {
            whole += w;
            head += h;
            pairs += 1;
        }
    }
    (pairs >= 64 && whole > 0.0).then(|| (head / whole) as f32)
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    fn rows(data: &[f32], dim: usize) -> VectorSlice<'_> {
        VectorSlice::F32(Rows {
            data,
            dim,
            stride: dim,
        })
    }

    /// Each node linked to the next eight.
    struct Chain {
        levels: Vec<u8>,
        links0: Vec<u32>,
        offsets: Vec<u32>,
    }

    impl Chain {
        const M0: usize = 8;

        fn new(n: usize) -> Chain {
            let mut links0 = Vec::new();
            for i in 0..n {
                links0.push(Self::M0 as u32);
                links0.extend((1..=Self::M0).map(|d| ((i + d) % n) as u32));
            }
            Chain {
                levels: vec![0; n],
                links0,
                offsets: vec![0; n + 1],
            }
        }

        fn view(&self) -> GraphView<'_> {
            GraphView {
                m: Self::M0 / 2,
                m0: Self::M0,
                entry_point: 0,
                max_level: 0,
                levels: &self.levels,
                links0: &self.links0,
                upper_offsets: &self.offsets,
                upper_links: &[],
            }
        }
    }

    fn noise(seed: u64) -> impl FnMut() -> f32 {
        let mut rng = StdRng::seed_from_u64(seed);
        move || rng.random_range(-0.5..0.5)
    }

    #[test]
    fn share_is_measured_between_linked_rows() {
        let (dim, n) = (384, 1000);
        // Leading 64 dimensions with 3× the spread (9× the variance) of the
        // rest: their share is 64·9 / (64·9 + 320) = 0.643.
        let mut next = noise(7);
        let data: Vec<f32> = (0..n * dim)
            .map(|i| if i % dim < 64 { 3.0 * next() } else { next() })
            .collect();
        let chain = Chain::new(n);
        let r = EarlyReject::measure(Metric::L2, &rows(&data, dim), &chain.view()).unwrap();
        assert_eq!(r.dims, 64);
        let share = 1.0 / (r.scale * (1.0 + MARGIN));
        assert!((share - 0.643).abs() < 0.03, "{share}");
    }

    #[test]
    fn not_used_where_it_cannot_pay_or_bound() {
        let chain = Chain::new(100);
        let data = vec![0.5f32; 128 * 100];
        let g = chain.view();
        assert_eq!(
            EarlyReject::measure(Metric::L2, &rows(&data, 128), &g),
            None
        );
        let mut next = noise(3);
        let data: Vec<f32> = (0..384 * 100).map(|_| next()).collect();
        assert!(EarlyReject::measure(Metric::L2, &rows(&data, 384), &g).is_some());
        assert_eq!(
            EarlyReject::measure(Metric::Dot, &rows(&data, 384), &g),
            None
        );
        // i8 codes at 384 dimensions are 6 lines: under the floor.
        let codes: Vec<i8> = data.iter().map(|x| (x * 200.0) as i8).collect();
        let codes = VectorSlice::I8(Rows {
            data: &codes,
            dim: 384,
            stride: 384,
        });
        assert_eq!(EarlyReject::measure(Metric::L2, &codes, &g), None);
        // Identical rows: no distance to share.
        let data = vec![0.5f32; 384 * 100];
        assert_eq!(
            EarlyReject::measure(Metric::L2, &rows(&data, 384), &g),
            None
        );
    }
}

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
//! carry on average, it estimates the whole distance; a candidate whose
//! estimate exceeds the beam's worst by more than a margin is turned away
//! without its remaining lines being read. Candidates that pass are scored
//! in full by the usual kernel, so every distance that enters the beam is
//! exact, and only the estimate's misses (a candidate turned away that would
//! have entered) can change a result. This is ADSampling's test (Gao and
//! Long, SIGMOD 2023) without its random rotation: the share is measured on
//! the data instead of being made uniform, so a set whose leading
//! dimensions carry more (or less) of the distance gets its own scale.
//!
//! Measured on words-dev-384, it raises QPS by 1.15–1.25× with the same
//! recall at the same ef (docs/search.md has the figures). At 128 dimensions (8 lines per vector)
//! it measured slower and lost recall, hence [`MIN_DIM`].

use crate::distance::{Metric, Storage};
use crate::vectors::Rows;

/// Below this many dimensions the test is not used (see the module docs).
pub const MIN_DIM: usize = 256;

/// The estimate's margin: a candidate is turned away when its estimated
/// squared distance exceeds the beam's worst by more than this fraction.
/// On words-dev-384 at 0.4 recall matched the plain search at every ef
/// measured (12 to 48); at 0.3 it lost 0.0026 at ef 12, and each step down
/// bought about 5% more QPS.
pub const MARGIN: f32 = 0.4;

/// Rows sampled to measure the leading dimensions' share.
const SAMPLE_ROWS: usize = 2048;

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
    /// Measure the test for an index's exact `rows` under `metric`, for
    /// traversal vectors of `storage`, or `None` where it does not apply:
    /// fewer than [`MIN_DIM`] dimensions; the dot metric (a partial dot
    /// product bounds nothing); i8 codes under cosine (their traversal
    /// distance is a dot product with a rescaled query, not an L2 of the
    /// codes); too few rows to measure; or leading dimensions that carry
    /// almost none or almost all the variance. Under l2, i8 codes share one
    /// step, so their squared distance splits as the rows' does.
    pub fn measure(metric: Metric, storage: Storage, rows: &Rows<'_, f32>) -> Option<EarlyReject> {
        let (dim, n) = (rows.dim, rows.len());
        // Cosine rows are stored normalized, so |q - x|² = 2 (1 - q·x) = 2d.
        let per_distance = match (metric, storage) {
            (Metric::Cosine, Storage::F32 | Storage::Bf16) => 2.0,
            (Metric::L2, _) => 1.0,
            _ => return None,
        };
        if dim < MIN_DIM || n < 64 {
            return None;
        }
        // About a sixth of the row, in whole 64-byte lines: 64 of 384.
        let dims = (dim / 6).next_multiple_of(16).min(dim - 16);
        let share = leading_share(rows, n, dims)?;
        if !(0.02..=0.9).contains(&share) {
            return None;
        }
        Some(EarlyReject {
            dims,
            scale: 1.0 / (share * (1.0 + MARGIN) * per_distance),
        })
    }
}

/// The share of the summed per-dimension variance held by the first `dims`
/// dimensions, over a strided sample of rows: for two independent rows the
/// expected squared difference per dimension is twice its variance.
fn leading_share(rows: &Rows<'_, f32>, n: usize, dims: usize) -> Option<f32> {
    let dim = rows.dim;
    let step = (n / SAMPLE_ROWS).max(1);
    let mut sum = vec![0f64; dim];
    let mut sq = vec![0f64; dim];
    let mut m = 0usize;
    for i in (0..n).step_by(step).take(SAMPLE_ROWS) {
        let row = rows.row(i as u32);
        if row.len() != dim {
            return None;
        }
        for (j, &x) in row.iter().enumerate() {
            sum[j] += x as f64;
            sq[j] += x as f64 * x as f64;
        }
        m += 1;
    }
    let m = m as f64;
    let var: Vec<f64> = sum
        .iter()
        .zip(&sq)
        .map(|(s, q)| (q / m - (s / m) * (s / m)).max(0.0))
        .collect();
    let total: f64 = var.iter().sum();
    if !(total > 0.0 && total.is_finite()) {
        return None;
    }
    Some((var[..dims].iter().sum::<f64>() / total) as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(data: &[f32], dim: usize) -> Rows<'_, f32> {
        Rows {
            data,
            dim,
            stride: dim,
        }
    }

    #[test]
    fn share_follows_the_variance() {
        let dim = 384;
        let n = 1000;
        // Leading 64 dimensions with 3× the spread (9× the variance) of the
        // rest: their share is 64·9 / (64·9 + 320) = 0.643.
        let mut state = 7u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        };
        let data: Vec<f32> = (0..n * dim)
            .map(|i| if i % dim < 64 { 3.0 * next() } else { next() })
            .collect();
        let r = EarlyReject::measure(Metric::L2, Storage::F32, &rows(&data, dim)).unwrap();
        assert_eq!(r.dims, 64);
        let share = 1.0 / (r.scale * (1.0 + MARGIN));
        assert!((share - 0.643).abs() < 0.03, "{share}");
    }

    #[test]
    fn not_used_where_it_cannot_pay_or_bound() {
        let data = vec![0.5f32; 128 * 100];
        assert_eq!(
            EarlyReject::measure(Metric::L2, Storage::F32, &rows(&data, 128)),
            None
        );
        let data: Vec<f32> = (0..384 * 100).map(|i| (i % 7) as f32).collect();
        assert_eq!(
            EarlyReject::measure(Metric::Dot, Storage::F32, &rows(&data, 384)),
            None
        );
        // Constant rows: no variance to share.
        let data = vec![0.5f32; 384 * 100];
        assert_eq!(
            EarlyReject::measure(Metric::L2, Storage::F32, &rows(&data, 384)),
            None
        );
    }
}

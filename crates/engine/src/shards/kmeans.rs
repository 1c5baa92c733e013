//! Placement by similarity: k-means centroids trained on a sample of the
//! items, and a balanced assignment of every item to one of them, so that
//! a query can search only the shards whose centroids are nearest it.
//!
//! Distances to centroids are the index's metric; under cosine, items and
//! centroids are compared as unit vectors. Training is Lloyd's algorithm
//! from a k-means++ start, on L2 (of unit vectors, under cosine).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use crate::distance::{normalize, Kernel, Metric};

/// How centroids are trained and items assigned.
#[derive(Debug, Clone)]
pub struct KmeansOptions {
    pub clusters: usize,
    /// Items trained on (a uniform sample; all of them when fewer).
    pub sample: usize,
    pub iterations: usize,
    /// No cluster holds more than `(1 + balance) × n / clusters` items.
    pub balance: f32,
    pub seed: u64,
    /// SPANN's closure: an item whose distance to another centroid is
    /// within `(1 + closure)` times its distance to its own is also placed
    /// there ([`second_choices`]); 0 places each item once.
    pub closure: f32,
}

impl KmeansOptions {
    pub fn new(clusters: usize) -> KmeansOptions {
        KmeansOptions {
            clusters,
            sample: (clusters * 512).max(20_000),
            iterations: 20,
            balance: 0.1,
            seed: 42,
            closure: 0.0,
        }
    }
}

/// Trained centroids, `clusters × dim` row-major, in the metric's space.
#[derive(Debug, Clone, PartialEq)]
pub struct Centroids {
    pub dim: usize,
    pub metric: Metric,
    pub rows: Vec<f32>,
}

impl Centroids {
    pub fn len(&self) -> usize {
        self.rows.len() / self.dim.max(1)
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn row(&self, c: usize) -> &[f32] {
        &self.rows[c * self.dim..(c + 1) * self.dim]
    }

    /// `v` as centroids see it: a unit vector under cosine.
    fn prepare<'v>(&self, v: &'v [f32], buf: &'v mut Vec<f32>) -> &'v [f32] {
        if self.metric == Metric::Cosine {
            buf.clear();
            buf.extend_from_slice(v);
            normalize(buf);
            buf
        } else {
            v
        }
    }

    /// The distance from `v` to each centroid.
    pub fn distances(&self, v: &[f32]) -> Vec<f32> {
        let kernel = Kernel::<f32>::new(self.metric);
        let mut buf = Vec::new();
        let v = self.prepare(v, &mut buf);
        (0..self.len())
            .map(|c| kernel.distance(v, self.row(c)))
            .collect()
    }

    /// Every centroid's number, nearest `v` first.
    pub fn order(&self, v: &[f32]) -> Vec<u32> {
        let d = self.distances(v);
        let mut order: Vec<u32> = (0..d.len() as u32).collect();
        order.sort_by(|&a, &b| d[a as usize].total_cmp(&d[b as usize]).then(a.cmp(&b)));
        order
    }
}

/// Train `options.clusters` centroids on a sample of `vectors` (`dim` wide).
pub fn train(vectors: &[f32], dim: usize, metric: Metric, options: &KmeansOptions) -> Centroids {
    let n = vectors.len() / dim;
    let k = options.clusters.clamp(1, n.max(1));
    let mut rng = StdRng::seed_from_u64(options.seed);
    let picked: Vec<usize> = if n <= options.sample {
        (0..n).collect()
    } else {
        rand::seq::index::sample(&mut rng, n, options.sample).into_vec()
    };
    let mut sample: Vec<f32> = Vec::with_capacity(picked.len() * dim);
    for &i in &picked {
        sample.extend_from_slice(&vectors[i * dim..(i + 1) * dim]);
    }
    if metric == Metric::Cosine {
        sample.chunks_exact_mut(dim).for_each(|v| {
            normalize(v);
        });
    }
    let m = picked.len();
    let row = |s: &[f32], i: usize| -> Vec<f32> { s[i * dim..(i + 1) * dim].to_vec() };
    let l2 = Kernel::<f32>::new(Metric::L2);

    // k-means++: each next centre drawn with probability ∝ squared distance.
    let mut centres: Vec<f32> = row(&sample, rng.random_range(0..m));
    let mut nearest: Vec<f32> = (0..m)
        .into_par_iter()
        .map(|i| l2.distance(&sample[i * dim..(i + 1) * dim], &centres[..dim]))
        .collect();
    while centres.len() / dim < k {
        let total: f64 = nearest.iter().map(|&d| d as f64).sum();
        let pick = if total > 0.0 {
            let mut r = rng.random::<f64>() * total;
            let mut chosen = m - 1;
            for (i, &d) in nearest.iter().enumerate() {
                r -= d as f64;
                if r <= 0.0 {
                    chosen = i;
                    break;
                }
            }
            chosen
        } else {
            rng.random_range(0..m)
        };
        let c = row(&sample, pick);
        nearest
            .par_iter_mut()
            .enumerate()
            .for_each(|(i, d)| *d = d.min(l2.distance(&sample[i * dim..(i + 1) * dim], &c)));
        centres.extend_from_slice(&c);
    }

    // Lloyd's iterations.
    for _ in 0..options.iterations {
        let assign: Vec<usize> = (0..m)
            .into_par_iter()
            .map(|i| nearest_centre(&l2, &sample[i * dim..(i + 1) * dim], &centres, dim))
            .collect();
        let mut sums = vec![0f64; k * dim];
        let mut counts = vec![0usize; k];
        for (i, &c) in assign.iter().enumerate() {
            counts[c] += 1;
            for (s, x) in sums[c * dim..(c + 1) * dim]
                .iter_mut()
                .zip(&sample[i * dim..(i + 1) * dim])
            {
                *s += *x as f64;
            }
        }
        let mut moved = false;
        for c in 0..k {
            let new: Vec<f32> = if counts[c] == 0 {
                // An empty cluster restarts at a random sample.
                row(&sample, rng.random_range(0..m))
            } else {
                sums[c * dim..(c + 1) * dim]
                    .iter()
                    .map(|s| (*s / counts[c] as f64) as f32)
                    .collect()
            };
            moved |= new != centres[c * dim..(c + 1) * dim];
            centres[c * dim..(c + 1) * dim].copy_from_slice(&new);
        }
        if !moved {
            break;
        }
    }
    if metric == Metric::Cosine {
        centres.chunks_exact_mut(dim).for_each(|c| {
            normalize(c);
        });
    }
    Centroids {
        dim,
        metric,
        rows: centres,
    }
}

fn nearest_centre(l2: &Kernel<f32>, v: &[f32], centres: &[f32], dim: usize) -> usize {
    centres
        .chunks_exact(dim)
        .map(|c| l2.distance(v, c))
        .enumerate()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map_or(0, |(i, _)| i)
}

/// Each item's cluster: its nearest centroid that still has room, items
/// with the most to lose by a second choice placed first. No cluster gets
/// more than `(1 + balance) × n / clusters` items (rounded up).
pub fn assign_balanced(vectors: &[f32], centroids: &Centroids, balance: f32) -> Vec<u32> {
    let dim = centroids.dim;
    let n = vectors.len() / dim;
    let k = centroids.len();
    // Rounded to 6 places: 0.1f32 is 0.10000000149, which would make
    // 1000 × 1.1 round up to 1101.
    let balance = (balance.max(0.0) as f64 * 1e6).round() / 1e6;
    let room = ((n as f64 / k as f64) * (1.0 + balance) - 1e-9).ceil() as usize;
    let room = room.max(n.div_ceil(k));
    let orders: Vec<(Vec<u32>, f32)> = (0..n)
        .into_par_iter()
        .map(|i| {
            let v = &vectors[i * dim..(i + 1) * dim];
            let d = centroids.distances(v);
            let order = centroids.order(v);
            let regret = if k > 1 {
                d[order[1] as usize] - d[order[0] as usize]
            } else {
                0.0
            };
            (order, regret)
        })
        .collect();
    let mut by_regret: Vec<usize> = (0..n).collect();
    by_regret.sort_by(|&a, &b| orders[b].1.total_cmp(&orders[a].1).then(a.cmp(&b)));
    let mut load = vec![0usize; k];
    let mut out = vec![0u32; n];
    for i in by_regret {
        let c = orders[i]
            .0
            .iter()
            .copied()
            .find(|&c| load[c as usize] < room)
            .expect("k × room ≥ n leaves a cluster with room");
        load[c as usize] += 1;
        out[i] = c;
    }
    out
}

/// Each item's second cluster under SPANN's closure, if any: the nearest
/// centroid other than its own (`primary`) whose distance is at most its
/// own's plus `closure` times that distance's magnitude. Items near a
/// boundary are then found from either side of it.
pub fn second_choices(
    vectors: &[f32],
    centroids: &Centroids,
    primary: &[u32],
    closure: f32,
) -> Vec<Option<u32>> {
    let dim = centroids.dim;
    if closure <= 0.0 || centroids.len() < 2 {
        return vec![None; primary.len()];
    }
    (0..primary.len())
        .into_par_iter()
        .map(|i| {
            let d = centroids.distances(&vectors[i * dim..(i + 1) * dim]);
            let own = primary[i] as usize;
            let limit = d[own] + closure * d[own].abs();
            (0..d.len())
                .filter(|&c| c != own && d[c] <= limit)
                .min_by(|&a, &b| d[a].total_cmp(&d[b]).then(a.cmp(&b)))
                .map(|c| c as u32)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth;

    #[test]
    fn clusters_are_found_and_the_assignment_is_balanced() {
        let dim = 16;
        let flat = synth::clustered(4000, dim, 4, 9);
        let c = train(&flat, dim, Metric::L2, &KmeansOptions::new(4));
        assert_eq!(c.len(), 4);
        let parts = assign_balanced(&flat, &c, 0.1);
        let mut load = [0usize; 4];
        for &p in &parts {
            load[p as usize] += 1;
        }
        assert!(load.iter().all(|&l| l <= 1100), "{load:?}");
        // Points land with their nearest centroid unless it was full: most do.
        let nearest = (0..4000)
            .filter(|&i| c.order(&flat[i * dim..(i + 1) * dim])[0] == parts[i])
            .count();
        assert!(
            nearest > 3000,
            "{nearest} of 4000 with their nearest centroid"
        );
        // A tight balance is kept too.
        let tight = assign_balanced(&flat, &c, 0.0);
        let mut load = [0usize; 4];
        for &p in &tight {
            load[p as usize] += 1;
        }
        assert_eq!(load, [1000; 4]);
    }

    #[test]
    fn cosine_centroids_are_unit_vectors_and_order_is_by_distance() {
        let dim = 8;
        let flat = synth::clustered(500, dim, 3, 2);
        let c = train(&flat, dim, Metric::Cosine, &KmeansOptions::new(3));
        for i in 0..3 {
            let n: f32 = c.row(i).iter().map(|x| x * x).sum();
            assert!((n - 1.0).abs() < 1e-4);
        }
        let q = &flat[..dim];
        let d = c.distances(q);
        let o = c.order(q);
        assert!(d[o[0] as usize] <= d[o[1] as usize] && d[o[1] as usize] <= d[o[2] as usize]);
    }
}

//! Seeded synthetic data: clustered Gaussian vectors, like embeddings that
//! group by genre or topic. Used by tests, benchmarks and `fathom demo`, so
//! every run of them sees the same data.

use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

/// `n` vectors of `dim` dimensions around `clusters` random centres, with
/// cluster sizes drawn unevenly (a few large clusters, many small ones).
pub fn clustered(n: usize, dim: usize, clusters: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let unit = Normal::new(0.0f32, 1.0).expect("valid normal");
    let clusters = clusters.max(1);
    let centres: Vec<f32> = (0..clusters * dim).map(|_| unit.sample(&mut rng)).collect();
    // Zipf-like weights so cluster sizes differ, as genres do.
    let weights: Vec<f64> = (1..=clusters).map(|r| 1.0 / (r as f64).sqrt()).collect();
    let total: f64 = weights.iter().sum();
    let spread = Normal::new(0.0f32, 0.35).expect("valid normal");
    let mut out = Vec::with_capacity(n * dim);
    for _ in 0..n {
        let mut pick = rng.random::<f64>() * total;
        let mut c = 0;
        while c + 1 < clusters && pick >= weights[c] {
            pick -= weights[c];
            c += 1;
        }
        let centre = &centres[c * dim..(c + 1) * dim];
        out.extend(centre.iter().map(|x| x + spread.sample(&mut rng)));
    }
    out
}

/// Base vectors and held-out queries from the same distribution.
pub fn clustered_with_queries(n: usize, nq: usize, dim: usize, clusters: usize, seed: u64) -> (Vec<f32>, Vec<Vec<f32>>) {
    let all = clustered(n + nq, dim, clusters, seed);
    let (base, queries) = all.split_at(n * dim);
    (base.to_vec(), queries.chunks_exact(dim).map(<[f32]>::to_vec).collect())
}

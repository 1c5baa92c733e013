//! Seeded synthetic data: clustered Gaussian vectors, like embeddings that
//! group by genre or topic. Used by tests, benchmarks and `fathom demo`, so
//! every run of them sees the same data.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

/// Cluster centres and uneven cluster weights, drawn from one seed.
struct Clusters {
    dim: usize,
    centres: Vec<f32>,
    weights: Vec<f64>,
    total: f64,
}

impl Clusters {
    fn new(dim: usize, clusters: usize, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let unit = Normal::new(0.0f32, 1.0).expect("valid normal");
        let clusters = clusters.max(1);
        let centres = (0..clusters * dim).map(|_| unit.sample(&mut rng)).collect();
        // Zipf-like weights so cluster sizes differ, as genres do.
        let weights: Vec<f64> = (1..=clusters).map(|r| 1.0 / (r as f64).sqrt()).collect();
        let total = weights.iter().sum();
        Clusters {
            dim,
            centres,
            weights,
            total,
        }
    }

    fn sample(&self, n: usize, rng: &mut StdRng, out: &mut Vec<f32>) {
        let spread = Normal::new(0.0f32, 0.35).expect("valid normal");
        for _ in 0..n {
            let mut pick = rng.random::<f64>() * self.total;
            let mut c = 0;
            while c + 1 < self.weights.len() && pick >= self.weights[c] {
                pick -= self.weights[c];
                c += 1;
            }
            let centre = &self.centres[c * self.dim..(c + 1) * self.dim];
            out.extend(centre.iter().map(|x| x + spread.sample(rng)));
        }
    }
}

/// `n` vectors of `dim` dimensions around `clusters` random centres, with
/// cluster sizes drawn unevenly (a few large clusters, many small ones).
pub fn clustered(n: usize, dim: usize, clusters: usize, seed: u64) -> Vec<f32> {
    let c = Clusters::new(dim, clusters, seed);
    let mut rng = StdRng::seed_from_u64(seed.wrapping_add(1));
    let mut out = Vec::with_capacity(n * dim);
    c.sample(n, &mut rng, &mut out);
    out
}

/// Queries from the same distribution as `clustered(.., dim, clusters, seed)`
/// (same centres) but drawn independently of the base vectors.
pub fn clustered_queries(nq: usize, dim: usize, clusters: usize, seed: u64) -> Vec<Vec<f32>> {
    let c = Clusters::new(dim, clusters, seed);
    let mut rng = StdRng::seed_from_u64(seed ^ 0x9E37_79B9_7F4A_7C15);
    let mut out = Vec::with_capacity(nq * dim);
    c.sample(nq, &mut rng, &mut out);
    out.chunks_exact(dim.max(1)).map(<[f32]>::to_vec).collect()
}

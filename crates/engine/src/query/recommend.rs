//! Recommendation-style queries: examples instead of one query vector.
//!
//! A call may give positive and negative examples, as stored item ids
//! (seeds) or as raw vectors (a user model's taste vectors), combined by one
//! of three strategies with Qdrant's semantics, so its users meet no
//! surprises. With `sim` the similarity of [`similarity`]:
//!
//! - `AVERAGE_VECTOR`: one search for `q = avg(pos) + (avg(pos) − avg(neg))`,
//!   or `avg(pos)` without negatives. Under cosine every example is
//!   normalized first and `q` after, so each example weighs the same
//!   whatever its length. Distances are ordinary distances to `q`.
//! - `BEST_SCORE`: `score = max sim(pos)` when that beats `max sim(neg)`,
//!   else `−(max sim(neg))²`. Negatives alone are allowed.
//! - `SUM_SCORES`: `score = Σ sim(pos) − Σ sim(neg)`.
//!
//! The two scoring strategies return `distance = −score`, so lower is still
//! closer. `docs/recommend.md` has the formulas and how candidates are found.

use crate::distance::{normalize, Kernel, Metric};
use crate::error::{Error, Result};

/// How examples become a ranking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    #[default]
    AverageVector,
    BestScore,
    SumScores,
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "average-vector" => Ok(Strategy::AverageVector),
            "best-score" => Ok(Strategy::BestScore),
            "sum-scores" => Ok(Strategy::SumScores),
            _ => Err(format!(
                "unknown strategy {s:?} (expected average-vector, best-score or sum-scores)"
            )),
        }
    }
}

/// The similarity (higher is closer) of fathom's distance `d` under
/// `metric`, as Qdrant scores it: the cosine, the dot product, or minus the
/// Euclidean distance (fathom's l2 distance is squared).
#[inline]
pub fn similarity(metric: Metric, d: f32) -> f32 {
    match metric {
        Metric::Cosine => 1.0 - d,
        Metric::Dot => -d,
        Metric::L2 => -d.max(0.0).sqrt(),
    }
}

/// Scores items against examples by `BEST_SCORE` or `SUM_SCORES`. Examples
/// are as stored (normalized under cosine); cost is one distance per example.
pub struct Scorer<'a> {
    pub metric: Metric,
    pub strategy: Strategy,
    pub positives: &'a [Vec<f32>],
    pub negatives: &'a [Vec<f32>],
    kernel: Kernel<f32>,
}

impl<'a> Scorer<'a> {
    pub fn new(
        metric: Metric,
        strategy: Strategy,
        positives: &'a [Vec<f32>],
        negatives: &'a [Vec<f32>],
    ) -> Self {
        Scorer {
            metric,
            strategy,
            positives,
            negatives,
            kernel: Kernel::new(metric),
        }
    }

    /// The strategy's score of `x` (a stored row), higher is closer.
    pub fn score(&self, x: &[f32]) -> f32 {
        let sims = |examples: &'a [Vec<f32>]| {
            examples
                .iter()
                .map(move |e| similarity(self.metric, self.kernel.distance(e, x)))
        };
        match self.strategy {
            Strategy::SumScores => {
                sims(self.positives).sum::<f32>() - sims(self.negatives).sum::<f32>()
            }
            // Average-vector calls never score; treat it as best score.
            Strategy::BestScore | Strategy::AverageVector => {
                let best_pos = sims(self.positives).fold(f32::NEG_INFINITY, f32::max);
                let best_neg = sims(self.negatives).fold(f32::NEG_INFINITY, f32::max);
                if best_pos > best_neg {
                    best_pos
                } else {
                    -(best_neg * best_neg)
                }
            }
        }
    }

    /// `−score`: the distance a scored hit carries.
    #[inline]
    pub fn distance(&self, x: &[f32]) -> f32 {
        -self.score(x)
    }
}

/// Check one example and bring it to the stored form (normalized under
/// cosine), naming it in errors.
pub fn prepare_example(metric: Metric, dim: usize, e: &[f32], what: &str) -> Result<Vec<f32>> {
    if e.len() != dim {
        return Err(Error::invalid(format!(
            "{what} has dimension {}, index has {dim}",
            e.len()
        )));
    }
    if let Some(j) = e.iter().position(|x| !x.is_finite()) {
        return Err(Error::invalid(format!(
            "{what} component {j} is not finite"
        )));
    }
    let mut v = e.to_vec();
    if metric == Metric::Cosine && !normalize(&mut v) {
        return Err(Error::invalid(format!(
            "{what} is a zero vector, which has no cosine direction"
        )));
    }
    Ok(v)
}

/// The single query of the `AVERAGE_VECTOR` strategy.
pub fn average_vector(
    metric: Metric,
    dim: usize,
    positives: &[&[f32]],
    negatives: &[&[f32]],
) -> Result<Vec<f32>> {
    if positives.is_empty() {
        return Err(Error::invalid(
            "the average-vector strategy needs at least one positive example",
        ));
    }
    let mean = |examples: &[&[f32]], what: &str| -> Result<Vec<f32>> {
        let mut acc = vec![0f64; dim];
        for (i, e) in examples.iter().enumerate() {
            let v = prepare_example(metric, dim, e, &format!("{what} example {i}"))?;
            acc.iter_mut().zip(&v).for_each(|(a, x)| *a += *x as f64);
        }
        let n = examples.len().max(1) as f64;
        Ok(acc.into_iter().map(|a| (a / n) as f32).collect())
    };
    let pos = mean(positives, "positive")?;
    let mut q = pos.clone();
    if !negatives.is_empty() {
        let neg = mean(negatives, "negative")?;
        q.iter_mut()
            .zip(pos.iter().zip(&neg))
            .for_each(|(q, (p, n))| *q += p - n);
    }
    if metric == Metric::Cosine && !normalize(&mut q) {
        return Err(Error::invalid(
            "the examples cancel out: their average-vector query is zero",
        ));
    }
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn average_vector_follows_the_formula() {
        let p1 = [1.0f32, 0.0];
        let p2 = [0.0f32, 1.0];
        let n1 = [1.0f32, 1.0];
        // l2: no normalization. avg(pos) = (.5, .5); + (avg(pos) - neg) = (.5,.5) + (-.5,-.5).
        let q = average_vector(Metric::L2, 2, &[&p1, &p2], &[&n1]).unwrap();
        assert_eq!(q, [0.0, 0.0]);
        let q = average_vector(Metric::L2, 2, &[&p1, &p2], &[]).unwrap();
        assert_eq!(q, [0.5, 0.5]);
        // cosine: inputs normalized, output normalized.
        let q = average_vector(Metric::Cosine, 2, &[&[3.0, 0.0]], &[&[0.0, 5.0]]).unwrap();
        let want = [2.0f32 / 5f32.sqrt(), -1.0 / 5f32.sqrt()];
        assert!(
            q.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6),
            "{q:?}"
        );
        assert!(average_vector(Metric::L2, 2, &[], &[&n1]).is_err());
        assert!(average_vector(Metric::L2, 3, &[&p1], &[]).is_err());
        assert!(average_vector(Metric::Cosine, 2, &[&p1, &[-1.0, 0.0]], &[]).is_err());
    }
}

//! Recommendation-style queries: examples instead of one query vector.
//!
//! A call may give positive and negative examples, as stored item ids
//! (seeds) or as raw vectors (a user model's taste vectors). The
//! `AVERAGE_VECTOR` strategy turns them into one query, with Qdrant's
//! semantics so its users meet no surprises:
//!
//! `q = avg(pos) + (avg(pos) − avg(neg))`, or `avg(pos)` without negatives.
//!
//! Under cosine every example is normalized first and `q` after, so each
//! example weighs the same whatever its length. The search then runs on `q`
//! like any other, and the returned distances are ordinary distances to `q`.

use crate::distance::{normalize, Metric};
use crate::error::{Error, Result};

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
            if e.len() != dim {
                return Err(Error::invalid(format!(
                    "{what} example {i} has dimension {}, index has {dim}",
                    e.len()
                )));
            }
            if let Some(j) = e.iter().position(|x| !x.is_finite()) {
                return Err(Error::invalid(format!(
                    "{what} example {i} component {j} is not finite"
                )));
            }
            let mut v = e.to_vec();
            if metric == Metric::Cosine && !normalize(&mut v) {
                return Err(Error::invalid(format!(
                    "{what} example {i} is a zero vector, which has no cosine direction"
                )));
            }
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

//! Means over sliding windows of the latest values, one window per key,
//! with a 95% interval: online recall and shadow overlap report these.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

use parking_lot::Mutex;

/// The mean of a window and its 95% interval (normal approximation).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mean {
    pub mean: f64,
    pub low: f64,
    pub high: f64,
    pub samples: u64,
}

/// One window per key, each of the latest `size` values.
pub(crate) struct Windows<K> {
    size: usize,
    values: Mutex<HashMap<K, VecDeque<f64>>>,
}

impl<K: Eq + Hash + Clone + Ord> Windows<K> {
    pub fn new(size: usize) -> Self {
        Windows {
            size: size.max(1),
            values: Mutex::new(HashMap::new()),
        }
    }

    pub fn push(&self, key: K, value: f64) {
        let mut values = self.values.lock();
        let w = values
            .entry(key)
            .or_insert_with(|| VecDeque::with_capacity(self.size.min(4_096)));
        if w.len() == self.size {
            w.pop_front();
        }
        w.push_back(value);
    }

    /// Every key's mean, by key.
    pub fn means(&self) -> Vec<(K, Mean)> {
        let values = self.values.lock();
        let mut out: Vec<(K, Mean)> = values
            .iter()
            .filter(|(_, w)| !w.is_empty())
            .map(|(k, w)| (k.clone(), mean_of(w)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

fn mean_of(w: &VecDeque<f64>) -> Mean {
    let n = w.len() as f64;
    let mean = w.iter().sum::<f64>() / n;
    let var = if n > 1.0 {
        w.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    let half = 1.96 * (var / n).sqrt();
    Mean {
        mean,
        low: mean - half,
        high: mean + half,
        samples: w.len() as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_keeps_the_latest_values_and_brackets_their_mean() {
        let w = Windows::new(4);
        for v in [0.0, 0.0, 1.0, 0.8, 0.6, 0.6] {
            w.push("a", v);
        }
        w.push("b", 2.0);
        let means = w.means();
        assert_eq!(means.len(), 2);
        let (key, m) = means[0];
        assert_eq!(key, "a");
        assert_eq!(m.samples, 4);
        assert!((m.mean - 0.75).abs() < 1e-9, "{m:?}");
        assert!(m.low < 0.75 && m.high > 0.75);
        assert_eq!(
            (means[1].1.mean, means[1].1.low, means[1].1.high),
            (2.0, 2.0, 2.0)
        );
    }
}

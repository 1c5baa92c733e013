//! Online recall: a sample of served calls is searched again exactly, off
//! the response path (on a [`Lane`]), and each index keeps its recall@k
//! over a sliding window of its latest samples, per kind of call.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::lane::{Job, Lane};
use crate::window::{Mean, Windows};

/// The header a router sets on the shard calls of a call it sampled: the
/// shard samples the call whatever its own draw.
pub const SAMPLE_HEADER: &str = "fathom-recall-sample";

/// `serve --recall-sample`, `--recall-budget`, `--recall-window`.
#[derive(Debug, Clone, Copy)]
pub struct RecallOptions {
    /// Share of calls sampled, in [0, 1]; 0 turns sampling off.
    pub sample: f64,
    /// Share of one core the exact re-runs may use, in (0, 1].
    pub budget: f64,
    /// Samples per index and kind that an estimate covers (the latest).
    pub window: usize,
    /// Samples waiting for their exact re-run at most; more are dropped.
    pub queue: usize,
}

impl Default for RecallOptions {
    fn default() -> Self {
        RecallOptions {
            sample: 0.001,
            budget: 0.05,
            window: 1_000,
            queue: 256,
        }
    }
}

/// What a sampled call searched with, which its recall is reported under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A query vector, no filter.
    Plain,
    /// A query vector and a filter.
    Filtered,
    /// Seed ids or taste vectors.
    Examples,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Plain => "plain",
            Kind::Filtered => "filtered",
            Kind::Examples => "examples",
        }
    }
}

/// One index's recall for one kind of call, over its window: the mean
/// recall@k of its samples and a 95% interval, clamped to [0, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    pub kind: Kind,
    pub recall: Mean,
}

/// The server's sampler: whether a call is sampled, the lane that re-runs
/// samples exactly, and each index's windows.
pub struct Recall {
    options: RecallOptions,
    lane: Option<Lane>,
    windows: Arc<Windows<(String, Kind)>>,
    dropped: Mutex<HashMap<String, u64>>,
}

impl Recall {
    /// A sampler; with a sample of 0, one that never samples and starts no
    /// thread.
    pub fn new(options: RecallOptions) -> std::io::Result<Recall> {
        let window = options.window;
        let lane = if options.sample > 0.0 {
            Some(Lane::start("recall", options.queue, options.budget)?)
        } else {
            None
        };
        Ok(Recall {
            options,
            lane,
            windows: Arc::new(Windows::new(window)),
            dropped: Mutex::default(),
        })
    }

    /// Whether to sample this call: drawn at the sampling rate, or
    /// `asked` by a router. Never when sampling is off.
    pub fn roll(&self, asked: bool) -> bool {
        self.lane.is_some() && (asked || rand::random::<f64>() < self.options.sample)
    }

    /// Queue a sampled call of `index`: `exact` re-runs it exactly and
    /// returns its recall, or `None` when there is nothing to measure
    /// (nothing matches). A full queue drops the sample, counted per index.
    pub fn offer(
        &self,
        index: &str,
        kind: Kind,
        exact: impl FnOnce() -> Option<f64> + Send + 'static,
    ) {
        let Some(lane) = &self.lane else { return };
        let windows = Arc::clone(&self.windows);
        let key = (index.to_string(), kind);
        let job: Job = Box::new(move || {
            if let Some(recall) = exact() {
                windows.push(key, recall);
            }
        });
        if !lane.offer(job) {
            *self.dropped.lock().entry(index.to_string()).or_default() += 1;
        }
    }

    /// `index`'s estimates, one per kind of call sampled, by kind.
    pub fn estimates(&self, index: &str) -> Vec<Estimate> {
        self.all()
            .into_iter()
            .filter(|(name, _)| name == index)
            .map(|(_, e)| e)
            .collect()
    }

    /// Every index's estimates, by index then kind.
    pub fn all(&self) -> Vec<(String, Estimate)> {
        self.windows
            .means()
            .into_iter()
            .map(|((name, kind), m)| {
                let recall = Mean {
                    low: m.low.max(0.0),
                    high: m.high.min(1.0),
                    ..m
                };
                (name, Estimate { kind, recall })
            })
            .collect()
    }

    /// Samples of `index` dropped because the queue was full.
    pub fn dropped(&self, index: &str) -> u64 {
        self.dropped.lock().get(index).copied().unwrap_or(0)
    }

    /// Samples dropped, per index.
    pub fn all_dropped(&self) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = self
            .dropped
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        out.sort();
        out
    }
}

/// The estimates of one index's shards pooled into the whole index's, per
/// kind: means weighted by samples, and the interval of that weighted mean
/// (the shards' samples are independent).
pub fn pool_estimates(
    shards: &[Vec<crate::proto::RecallEstimate>],
) -> Vec<crate::proto::RecallEstimate> {
    let mut kinds: Vec<String> = shards.iter().flatten().map(|e| e.kind.clone()).collect();
    kinds.sort();
    kinds.dedup();
    kinds
        .into_iter()
        .map(|kind| {
            let of_kind: Vec<_> = shards.iter().flatten().filter(|e| e.kind == kind).collect();
            let total: u64 = of_kind.iter().map(|e| e.samples).sum();
            let weight = |e: &crate::proto::RecallEstimate| e.samples as f64 / total.max(1) as f64;
            let mean: f64 = of_kind.iter().map(|e| weight(e) * e.estimate).sum();
            let half = of_kind
                .iter()
                .map(|e| (weight(e) * (e.high - e.low) / 2.0).powi(2))
                .sum::<f64>()
                .sqrt();
            crate::proto::RecallEstimate {
                kind,
                estimate: mean,
                low: (mean - half).max(0.0),
                high: (mean + half).min(1.0),
                samples: total,
            }
        })
        .collect()
}

/// recall@k of `served` against the exact answer's ids: the share of the
/// exact hits served. `None` when the exact answer is empty.
pub fn recall_of<'a>(
    served: &[String],
    exact: impl ExactSizeIterator<Item = &'a str>,
) -> Option<f64> {
    let total = exact.len();
    if total == 0 {
        return None;
    }
    let found = exact.filter(|id| served.iter().any(|s| s == id)).count();
    Some(found as f64 / total as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampled_calls_feed_their_index_and_kind() {
        let recall = Recall::new(RecallOptions {
            sample: 1.0,
            budget: 1.0,
            window: 4,
            queue: 64,
        })
        .unwrap();
        for r in [0.0, 0.0, 1.0, 0.8, 0.6, 0.6] {
            recall.offer("a", Kind::Plain, move || Some(r));
        }
        recall.offer("a", Kind::Plain, || None);
        recall.offer("a", Kind::Filtered, || Some(1.0));
        // The lane runs jobs in order: the last one's estimate shows last.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while recall.estimates("a").len() < 2 {
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let e = recall.estimates("a");
        assert_eq!(e.len(), 2);
        assert_eq!((e[0].kind, e[0].recall.samples), (Kind::Plain, 4));
        assert!((e[0].recall.mean - 0.75).abs() < 1e-9, "{e:?}");
        assert!(e[0].recall.high <= 1.0);
        assert_eq!((e[1].kind, e[1].recall.mean), (Kind::Filtered, 1.0));
        assert!(recall.estimates("b").is_empty());
    }

    #[test]
    fn shard_estimates_pool_by_their_samples() {
        let e = |kind: &str, estimate: f64, half: f64, samples| crate::proto::RecallEstimate {
            kind: kind.into(),
            estimate,
            low: estimate - half,
            high: estimate + half,
            samples,
        };
        let pooled = pool_estimates(&[
            vec![e("plain", 0.9, 0.02, 300), e("filtered", 0.8, 0.1, 10)],
            vec![e("plain", 0.8, 0.04, 100)],
        ]);
        assert_eq!(pooled.len(), 2);
        let (f, p) = (&pooled[0], &pooled[1]);
        assert_eq!(
            (f.kind.as_str(), f.samples, f.estimate),
            ("filtered", 10, 0.8)
        );
        assert_eq!((p.kind.as_str(), p.samples), ("plain", 400));
        assert!((p.estimate - 0.875).abs() < 1e-9);
        let half = ((0.75f64 * 0.02).powi(2) + (0.25f64 * 0.04).powi(2)).sqrt();
        assert!((p.high - p.estimate - half).abs() < 1e-9);
    }

    #[test]
    fn recall_counts_the_exact_hits_served() {
        let served = vec!["a".to_string(), "b".into(), "x".into()];
        assert_eq!(
            recall_of(&served, ["a", "b", "c", "d"].into_iter()),
            Some(0.5)
        );
        assert_eq!(recall_of(&served, std::iter::empty()), None);
    }
}

//! Shadow traffic: a share of a name's calls searched again on another
//! index (`serve --shadow`), off the response path on a budgeted [`Lane`],
//! comparing its hits and its time with what was served.

use crate::lane::{Job, Lane};
use crate::window::{Mean, Windows};
use std::sync::Arc;

/// What one shadow search found against the served answer.
pub struct Compared {
    /// overlap@k: the share of the served hits the shadow also returned
    /// (of the longer list, so that a shadow returning fewer counts).
    pub overlap: f64,
    /// The shadow search's time minus the served search's, in seconds.
    pub delta_seconds: f64,
}

/// A name and the index that shadows it.
pub type Pair = (String, String);

pub struct Shadow {
    lane: Option<Lane>,
    overlap: Arc<Windows<Pair>>,
    delta: Arc<Windows<Pair>>,
}

impl Shadow {
    /// A shadow lane using at most `budget` of one core; none when nothing
    /// is shadowed.
    pub fn new(enabled: bool, budget: f64, window: usize) -> std::io::Result<Shadow> {
        Ok(Shadow {
            lane: if enabled {
                Some(Lane::start("shadow", 256, budget)?)
            } else {
                None
            },
            overlap: Arc::new(Windows::new(window)),
            delta: Arc::new(Windows::new(window)),
        })
    }

    /// Queue a shadow search of `name`'s call on `shadow`; `run` searches
    /// and compares (`None`: it failed, and is not counted). Dropped when
    /// the lane is behind.
    pub fn offer(
        &self,
        name: &str,
        shadow: &str,
        run: impl FnOnce() -> Option<Compared> + Send + 'static,
    ) -> bool {
        let Some(lane) = &self.lane else {
            return false;
        };
        let (overlap, delta) = (Arc::clone(&self.overlap), Arc::clone(&self.delta));
        let pair: Pair = (name.to_string(), shadow.to_string());
        let job: Job = Box::new(move || {
            if let Some(c) = run() {
                overlap.push(pair.clone(), c.overlap);
                delta.push(pair, c.delta_seconds);
            }
        });
        lane.offer(job)
    }

    /// Per (name, shadow): mean overlap@k and mean time difference.
    pub fn means(&self) -> Vec<(Pair, Mean, Mean)> {
        let deltas = self.delta.means();
        self.overlap
            .means()
            .into_iter()
            .filter_map(|(pair, o)| {
                let d = deltas.iter().find(|(p, _)| *p == pair)?.1;
                Some((pair, o, d))
            })
            .collect()
    }

    /// Shadow searches dropped because the lane was behind.
    pub fn dropped(&self) -> u64 {
        self.lane.as_ref().map_or(0, Lane::dropped)
    }
}

/// overlap@k of two answers' ids.
pub fn overlap(served: &[&str], shadow: &[&str]) -> f64 {
    let longer = served.len().max(shadow.len());
    if longer == 0 {
        return 1.0;
    }
    let shared = served.iter().filter(|id| shadow.contains(id)).count();
    shared as f64 / longer as f64
}

#[cfg(test)]
mod tests {
    #[test]
    fn overlap_counts_shared_hits_of_the_longer_answer() {
        use super::overlap;
        assert_eq!(overlap(&["a", "b"], &["b", "a"]), 1.0);
        assert_eq!(overlap(&["a", "b", "c", "d"], &["a", "x"]), 0.25);
        assert_eq!(overlap(&["a"], &["a", "b"]), 0.5);
        assert_eq!(overlap(&[], &[]), 1.0);
    }
}

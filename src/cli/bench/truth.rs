//! Scoring the server's answers against ground truth.
//!
//! Ground truth (`.ivecs`, as `fathom eval` and `fathom synth` use it) names
//! neighbours by their 0-based row in the base file. The server answers with
//! external ids. The two meet through the ids the snapshot was built with:
//! `fathom build` gives a `.fvecs`/`.npy` input without `--ids` the row
//! numbers as ids ("0", "1", ...), which is the default here; with
//! `--ids FILE`, line `i` of the file is the id of row `i` (the same file
//! given to `fathom build --ids`, or the `ids.txt` that `fathom synth`
//! writes). An id that maps to no row counts as a miss and is tallied as
//! unmapped, so a wrong mapping shows instead of passing as low recall.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use fathom_engine::formats::read_ids;

/// From a server's external id to a ground-truth row.
pub enum IdMap {
    /// Ids are the decimal row numbers.
    RowNumbers,
    /// Line `i` of `path` is the id of row `i`.
    Table {
        path: PathBuf,
        ids: Vec<String>,
        rows: HashMap<String, u32>,
    },
}

impl IdMap {
    pub fn from_file(path: &Path) -> Result<IdMap> {
        let ids = crate::cli::about_path(read_ids(path), "reading", path)?;
        if ids.is_empty() {
            bail!("{} lists no ids", path.display());
        }
        if u32::try_from(ids.len()).is_err() {
            bail!(
                "{} lists more ids than rows can be numbered",
                path.display()
            );
        }
        let mut rows = HashMap::with_capacity(ids.len());
        for (row, id) in ids.iter().enumerate() {
            if let Some(first) = rows.insert(id.clone(), row as u32) {
                bail!(
                    "{}: id {id:?} is on lines {} and {}",
                    path.display(),
                    first + 1,
                    row + 1
                );
            }
        }
        Ok(IdMap::Table {
            path: path.to_path_buf(),
            ids,
            rows,
        })
    }

    /// The base row of external id `id`, if it has one.
    pub fn row(&self, id: &str) -> Option<u32> {
        match self {
            IdMap::RowNumbers => id.parse().ok(),
            IdMap::Table { rows, .. } => rows.get(id).copied(),
        }
    }

    /// How the mapping was chosen, for error messages.
    pub fn describe(&self) -> String {
        match self {
            IdMap::RowNumbers => "row numbers (no --ids given)".to_string(),
            IdMap::Table { path, .. } => format!("the ids in {}", path.display()),
        }
    }
}

/// Exact neighbours of each query, as base rows.
pub struct GroundTruth {
    rows: Vec<Vec<u32>>,
    k: usize,
}

impl GroundTruth {
    /// Check `rows` against `queries` queries and `k`, as `fathom eval` does.
    pub fn new(mut rows: Vec<Vec<u32>>, queries: usize, k: usize) -> Result<GroundTruth> {
        if rows.len() < queries {
            bail!("{} ground-truth rows for {queries} queries", rows.len());
        }
        rows.truncate(queries);
        if let Some((q, r)) = rows.iter().enumerate().find(|(_, r)| r.len() < k) {
            bail!(
                "ground-truth row {q} has {} neighbours, fewer than k = {k}",
                r.len()
            );
        }
        Ok(GroundTruth { rows, k })
    }

    /// The neighbours recall@k is counted against for query `q`: the first
    /// k of its row (as `fathom_engine::eval::recall_at_k` takes them).
    pub fn truth(&self, q: usize) -> &[u32] {
        let r = &self.rows[q];
        &r[..self.k.min(r.len())]
    }

    pub fn queries(&self) -> usize {
        self.rows.len()
    }

    /// Score one answer to query `q`: (hits among the first k, ids that map
    /// to no row).
    pub fn score<'a>(
        &self,
        q: usize,
        answer: impl Iterator<Item = &'a str>,
        ids: &IdMap,
    ) -> (u64, u64) {
        let truth = self.truth(q);
        let (mut hits, mut unmapped) = (0, 0);
        for id in answer.take(self.k) {
            match ids.row(id) {
                Some(row) if truth.contains(&row) => hits += 1,
                Some(_) => {}
                None => unmapped += 1,
            }
        }
        (hits, unmapped)
    }
}

/// Recall tallies per query: answers may repeat a query many times.
#[derive(Clone, Debug, Default)]
pub struct RecallTally {
    /// Per query: (hits summed over its answers, number of answers).
    per_query: Vec<(u64, u64)>,
    pub unmapped: u64,
}

impl RecallTally {
    pub fn new(queries: usize) -> RecallTally {
        RecallTally {
            per_query: vec![(0, 0); queries],
            unmapped: 0,
        }
    }

    pub fn add(&mut self, q: usize, hits: u64, unmapped: u64) {
        let t = &mut self.per_query[q];
        t.0 += hits;
        t.1 += 1;
        self.unmapped += unmapped;
    }

    /// Mean over the answered queries of each query's mean recall@k, and the
    /// number of queries answered. Each query counts once however often it
    /// was sent, so a run that answers every query gives exactly what
    /// `fathom_engine::eval::mean_recall` gives for the same answers.
    pub fn recall(&self, truth: &GroundTruth) -> (Option<f64>, usize) {
        let mut sum = 0.0;
        let mut answered = 0;
        for (q, &(hits, answers)) in self.per_query.iter().enumerate() {
            if answers == 0 {
                continue;
            }
            let want = truth.truth(q).len() as u64;
            // hits / (answers * want) rounds like recall_at_k's hits / want
            // when every answer scores the same.
            sum += if want == 0 {
                1.0
            } else {
                hits as f64 / (answers * want) as f64
            };
            answered += 1;
        }
        if answered == 0 {
            (None, 0)
        } else {
            (Some(sum / answered as f64), answered)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fathom_engine::eval::mean_recall;

    #[test]
    fn repeated_answers_average_to_eval_recall() {
        let truth_rows = vec![vec![1, 2, 3], vec![4, 5, 6], vec![7, 8, 9]];
        let gt = GroundTruth::new(truth_rows.clone(), 3, 3).unwrap();
        let answers: Vec<Vec<u32>> = vec![vec![1, 9, 3], vec![6, 0, 0], vec![7, 8, 9]];
        let ids = IdMap::RowNumbers;
        let mut tally = RecallTally::new(3);
        for repeat in 0..7 {
            for (q, a) in answers.iter().enumerate() {
                if repeat > 2 && q == 1 {
                    continue; // uneven repeats
                }
                let strings: Vec<String> = a.iter().map(u32::to_string).collect();
                let (h, u) = gt.score(q, strings.iter().map(String::as_str), &ids);
                tally.add(q, h, u);
            }
        }
        let (recall, answered) = tally.recall(&gt);
        assert_eq!(answered, 3);
        assert_eq!(recall, Some(mean_recall(&answers, &truth_rows, 3)));
        assert_eq!(tally.unmapped, 0);
    }

    #[test]
    fn unknown_ids_are_counted() {
        let gt = GroundTruth::new(vec![vec![0, 1]], 1, 2).unwrap();
        let (h, u) = gt.score(0, ["0", "track:1"].into_iter(), &IdMap::RowNumbers);
        assert_eq!((h, u), (1, 1));
    }

    #[test]
    fn short_truth_is_refused() {
        assert!(GroundTruth::new(vec![vec![0, 1]], 1, 5).is_err());
        assert!(GroundTruth::new(vec![vec![0, 1]], 2, 1).is_err());
    }
}

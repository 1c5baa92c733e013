//! Captured queries (`serve --capture-sample --capture-dir DIR`): a sample
//! of served Search calls with a query vector, written for replay by
//! `fathom eval --queries … --requests …`. Per index, the folder holds
//! pairs of files, `DIR/INDEX/capture-<unix ms>.fvecs` (the vectors) and
//! `.jsonl` (line i: row i's k, ef, filter and exclusions), rotated at a
//! size and kept to a count, oldest removed first. Writes happen on a
//! background thread; a full queue drops the sample.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::Serialize;

use crate::lane::Lane;

/// `serve --capture-*`.
#[derive(Debug, Clone)]
pub struct CaptureOptions {
    /// Share of Search calls captured, in (0, 1].
    pub sample: f64,
    pub dir: PathBuf,
    /// A pair of files is closed once its vectors pass this size.
    pub max_file_bytes: u64,
    /// Pairs kept per index; the oldest are removed.
    pub keep: usize,
}

/// One captured call: line of the `.jsonl` file beside its vector's row.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Default)]
pub struct CapturedRequest {
    pub k: u32,
    #[serde(default)]
    pub ef: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub filter: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_keys: Vec<u64>,
    #[serde(default)]
    pub at_unix_ms: u64,
}

/// The files being written for one index.
struct Open {
    vectors: BufWriter<File>,
    requests: BufWriter<File>,
    bytes: u64,
}

pub struct Capture {
    options: CaptureOptions,
    lane: Lane,
    open: Arc<Mutex<HashMap<String, Open>>>,
}

impl Capture {
    pub fn start(options: CaptureOptions) -> std::io::Result<Capture> {
        std::fs::create_dir_all(&options.dir)?;
        Ok(Capture {
            lane: Lane::start("capture", 1024, 1.0)?,
            options,
            open: Arc::default(),
        })
    }

    pub fn roll(&self) -> bool {
        rand::random::<f64>() < self.options.sample
    }

    /// Queue `request` with its `vector` for `index`'s files.
    pub fn offer(&self, index: &str, vector: Vec<f32>, request: CapturedRequest) {
        let (open, options, index) = (
            Arc::clone(&self.open),
            self.options.clone(),
            index.to_string(),
        );
        self.lane.offer(Box::new(move || {
            let mut open = open.lock();
            if let Err(e) = write(&mut open, &options, &index, &vector, &request) {
                // A full disk loses captures, never calls.
                tracing::warn!(error = %e, index, "cannot write a captured query");
                open.remove(&index);
            }
        }));
    }

    /// Captures dropped because the writer was behind.
    pub fn dropped(&self) -> u64 {
        self.lane.dropped()
    }
}

fn write(
    open: &mut HashMap<String, Open>,
    options: &CaptureOptions,
    index: &str,
    vector: &[f32],
    request: &CapturedRequest,
) -> std::io::Result<()> {
    if open
        .get(index)
        .is_some_and(|o| o.bytes >= options.max_file_bytes)
    {
        open.remove(index);
    }
    let files = match open.entry(index.to_string()) {
        std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
        std::collections::hash_map::Entry::Vacant(v) => v.insert(start_pair(options, index)?),
    };
    // The row, then its line, each flushed: a reader sees whole rows, and
    // at most one row without its line after a crash.
    let mut row = Vec::with_capacity(4 + 4 * vector.len());
    row.extend_from_slice(&(vector.len() as u32).to_le_bytes());
    for x in vector {
        row.extend_from_slice(&x.to_le_bytes());
    }
    files.vectors.write_all(&row)?;
    files.vectors.flush()?;
    let mut line = serde_json::to_vec(request).map_err(std::io::Error::other)?;
    line.push(b'\n');
    files.requests.write_all(&line)?;
    files.requests.flush()?;
    files.bytes += row.len() as u64;
    Ok(())
}

/// Open a new pair of files for `index`, removing the oldest pairs past
/// `keep`.
fn start_pair(options: &CaptureOptions, index: &str) -> std::io::Result<Open> {
    let dir = options.dir.join(index);
    std::fs::create_dir_all(&dir)?;
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    // After every pair there: a name reused after its pair was pruned
    // would sort first and be pruned next.
    let newest = stems(&dir)?.into_iter().map(|s| order_key(&s)).max();
    let (ms, n) = match newest {
        Some(last) if last >= (ms, 0) => (last.0, last.1 + 1),
        _ => (ms, 0),
    };
    let stem = if n == 0 {
        format!("capture-{ms}")
    } else {
        format!("capture-{ms}-{n}")
    };
    let create = |ext: &str| {
        OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(dir.join(format!("{stem}.{ext}")))
            .map(BufWriter::new)
    };
    let pair = Open {
        vectors: create("fvecs")?,
        requests: create("jsonl")?,
        bytes: 0,
    };
    prune(&dir, options.keep.max(1))?;
    Ok(pair)
}

/// Remove the oldest pairs of `dir` past `keep` (by name: they are named
/// by time).
fn prune(dir: &Path, keep: usize) -> std::io::Result<()> {
    let mut stems = stems(dir)?;
    stems.sort_by_key(|s| order_key(s));
    let excess = stems.len().saturating_sub(keep);
    for stem in &stems[..excess] {
        for ext in ["fvecs", "jsonl"] {
            match std::fs::remove_file(dir.join(format!("{stem}.{ext}"))) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
    }
    Ok(())
}

/// The pairs of `dir`, by the name of their vectors file without `.fvecs`.
fn stems(dir: &Path) -> std::io::Result<Vec<String>> {
    Ok(std::fs::read_dir(dir)?
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".fvecs")
                .filter(|s| s.starts_with("capture-"))
                .map(str::to_string)
        })
        .collect())
}

/// `capture-<ms>[-<n>]` in the order written.
fn order_key(stem: &str) -> (u128, u64) {
    let rest = stem.trim_start_matches("capture-");
    let (ms, n) = rest.split_once('-').unwrap_or((rest, "0"));
    (ms.parse().unwrap_or(0), n.parse().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_rotate_at_their_size_and_only_the_latest_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let options = CaptureOptions {
            sample: 1.0,
            dir: dir.path().to_path_buf(),
            max_file_bytes: 3 * (4 + 4 * 2),
            keep: 2,
        };
        let mut open = HashMap::new();
        for i in 0..10u32 {
            let r = CapturedRequest {
                k: i + 1,
                ..Default::default()
            };
            write(&mut open, &options, "t", &[i as f32, 0.5], &r).unwrap();
        }
        drop(open);
        let mut stems: Vec<String> = std::fs::read_dir(dir.path().join("t"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        stems.sort();
        // 10 rows at 3 a file: 4 pairs written, the last 2 kept.
        assert_eq!(stems.len(), 4, "{stems:?}");
        let mut ks = Vec::new();
        let mut rows = 0;
        for s in stems.iter().filter(|s| s.ends_with(".jsonl")) {
            let text = std::fs::read_to_string(dir.path().join("t").join(s)).unwrap();
            for line in text.lines() {
                ks.push(serde_json::from_str::<CapturedRequest>(line).unwrap().k);
            }
            let fvecs = dir.path().join("t").join(s.replace(".jsonl", ".fvecs"));
            rows += std::fs::metadata(fvecs).unwrap().len() / 12;
        }
        ks.sort();
        assert_eq!(ks, [7, 8, 9, 10]);
        assert_eq!(rows, 4);
    }
}

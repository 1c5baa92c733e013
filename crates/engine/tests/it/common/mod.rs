//! Shared fixtures: seeded clustered data, in-memory builds, snapshots in temp
//! directories, exact ground truth.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use fathom_engine::builder::{build, BuildOptions, BuilderKind, BuiltIndex, Dataset};
use fathom_engine::exact::knn_batch;
use fathom_engine::vectors::Rows;
use fathom_engine::{Metric, Storage};

pub const SEED: u64 = 7;

pub fn dataset(n: usize, dim: usize, seed: u64) -> Dataset {
    Dataset {
        dim,
        vectors: fathom_engine::synth::clustered(n, dim, 32, seed),
        ids: (0..n).map(|i| format!("item:{i:06}")).collect(),
        attributes: None,
    }
}

pub fn queries(nq: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
    // Same cluster centres as `dataset(.., seed)`: draw base + queries together
    // and keep the tail.
    fathom_engine::synth::clustered_queries(nq, dim, 32, seed)
}

pub fn build_with(
    ds: Dataset,
    metric: Metric,
    storage: Storage,
    builder: BuilderKind,
    efc: usize,
) -> BuiltIndex {
    let opts = BuildOptions {
        metric,
        storage,
        m: 16,
        ef_construction: efc,
        // One thread: a build is then deterministic, so a test that passes
        // passes every time.
        threads: 1,
        seed: SEED,
        builder,
        default_ef: 64,
        value_graphs: Vec::new(),
    };
    build(ds, Path::new("test"), &opts, &|_, _| {}).expect("build")
}

pub fn write(built: &BuiltIndex, dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    built.write(&p, "test").expect("write snapshot");
    p
}

/// Exact top-k node ids over the builder's (normalized) vectors.
pub fn truth(built: &BuiltIndex, queries: &[Vec<f32>], k: usize) -> Vec<Vec<u32>> {
    let rows = Rows {
        data: &built.vectors,
        dim: built.dim,
        stride: built.dim,
    };
    knn_batch(rows, built.options.metric, queries, k, 2)
}

/// An attribute table from one JSON object per row.
pub fn table(rows: impl IntoIterator<Item = String>) -> fathom_engine::attributes::AttributeTable {
    let mut b = fathom_engine::attributes::AttributesBuilder::new();
    for (i, r) in rows.into_iter().enumerate() {
        let obj: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&r).unwrap();
        b.push(&obj, i + 1).unwrap();
    }
    b.finish()
}

//! Shared bench fixtures: seeded datasets and snapshots, built once and cached
//! under `target/fathom-bench/` so repeated bench runs skip the build.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use fathom_engine::builder::{build, BuildOptions, Dataset};
use fathom_engine::graph::Graph;
use fathom_engine::snapshot::{write_snapshot, BuildInfo, SnapshotContents};
use fathom_engine::{Metric, Storage};

pub const SEED: u64 = 42;

pub fn cache_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fathom-bench");
    std::fs::create_dir_all(&dir).expect("create bench cache dir");
    dir
}

pub fn dataset(n: usize, dim: usize) -> Dataset {
    Dataset {
        dim,
        vectors: fathom_engine::synth::clustered(n, dim, 100, SEED),
        ids: (0..n).map(|i| format!("item:{i:07}")).collect(),
        attributes: None,
    }
}

pub fn queries(nq: usize, dim: usize) -> Vec<Vec<f32>> {
    fathom_engine::synth::clustered_queries(nq, dim, 100, SEED)
}

/// A real HNSW snapshot (M=16, ef_construction=200), one per storage type,
/// all sharing one graph.
pub fn hnsw_snapshots(n: usize, dim: usize, metric: Metric) -> Vec<(Storage, PathBuf)> {
    let dir = cache_dir();
    let paths: Vec<(Storage, PathBuf)> = [Storage::F32, Storage::Bf16, Storage::I8]
        .into_iter()
        .map(|s| (s, dir.join(format!("hnsw-{n}x{dim}-{metric}-{s}.fathom"))))
        .collect();
    if paths
        .iter()
        .all(|(_, p)| fathom_engine::snapshot::Snapshot::open(p).is_ok())
    {
        return paths;
    }
    eprintln!(
        "building {n} x {dim} bench fixture (cached in {})",
        dir.display()
    );
    let opts = BuildOptions {
        metric,
        seed: SEED,
        ..Default::default()
    };
    let mut built =
        build(dataset(n, dim), Path::new("synthetic"), &opts, &|_, _| {}).expect("build");
    for (s, p) in &paths {
        built.set_storage(*s);
        built.write(p, "synthetic").expect("write");
    }
    paths
}

/// A snapshot with real vectors and ids but a graph without edges: enough to
/// time `open`, which never reads the graph, without an hour-long build.
pub fn open_fixture(n: usize, dim: usize) -> PathBuf {
    let p = cache_dir().join(format!("open-{n}x{dim}.fathom"));
    if fathom_engine::snapshot::Snapshot::open(&p).is_ok() {
        return p;
    }
    eprintln!("writing {n} x {dim} open fixture");
    let mut vectors = fathom_engine::synth::clustered(n, dim, 100, SEED);
    for r in vectors.chunks_exact_mut(dim) {
        fathom_engine::distance::normalize(r);
    }
    let ids: Vec<String> = (0..n).map(|i| format!("item:{i:07}")).collect();
    let graph = Graph::with_levels(
        16,
        32,
        fathom_engine::builder::hnsw::draw_levels(n, 16, SEED),
    );
    write_snapshot(
        &p,
        &SnapshotContents {
            metric: Metric::Cosine,
            storage: Storage::F32,
            dim,
            vectors: &vectors,
            graph: &graph,
            ids: &ids,
            attributes: None,
            ef_construction: 200,
            default_ef: 64,
            build: BuildInfo {
                fathom_version: env!("CARGO_PKG_VERSION").into(),
                built_at: 0,
                input: "synthetic".into(),
                builder: "none".into(),
                seed: SEED,
                build_seconds: 0.0,
            },
            quantizer: None,
            value_graphs: None,
        },
    )
    .expect("write open fixture");
    p
}

/// A snapshot of `n` items with catalog attributes (language, markets,
/// explicit, popularity, label) and an edgeless graph: enough to time filter
/// planning and admission, which never read the graph.
pub fn filter_fixture(n: usize) -> PathBuf {
    use fathom_engine::attributes::AttributesBuilder;
    use rand::{Rng, SeedableRng};
    let p = cache_dir().join(format!("filter-{n}.fathom"));
    if fathom_engine::snapshot::Snapshot::open(&p).is_ok() {
        return p;
    }
    eprintln!("writing {n}-item filter fixture");
    let dim = 8;
    let vectors = fathom_engine::synth::clustered(n, dim, 100, SEED);
    let ids: Vec<String> = (0..n).map(|i| format!("item:{i:07}")).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(SEED);
    let langs = ["sv", "en", "de", "fr", "ja", "es", "pt", "ru", "ar"];
    let markets = ["SE", "NO", "US", "GB", "DE", "JP", "BR", "FR"];
    let mut attrs = AttributesBuilder::new();
    for i in 0..n {
        let m: Vec<&str> = markets
            .iter()
            .copied()
            .filter(|_| rng.random_bool(0.4))
            .collect();
        let u: f64 = rng.random();
        let obj = serde_json::json!({
            "lang": langs[i % langs.len()],
            "markets": m,
            "explicit": rng.random_bool(0.1),
            "popularity": (100.0 * u * u * u) as i64,
            "label": format!("label:{}", rng.random_range(0..2000)),
        });
        attrs
            .push(obj.as_object().expect("an object"), i + 1)
            .expect("typed");
    }
    let attrs = attrs.finish();
    let graph = Graph::with_levels(
        16,
        32,
        fathom_engine::builder::hnsw::draw_levels(n, 16, SEED),
    );
    write_snapshot(
        &p,
        &SnapshotContents {
            metric: Metric::L2,
            storage: Storage::F32,
            dim,
            vectors: &vectors,
            graph: &graph,
            ids: &ids,
            attributes: Some(&attrs),
            ef_construction: 200,
            default_ef: 64,
            build: BuildInfo {
                fathom_version: env!("CARGO_PKG_VERSION").into(),
                built_at: 0,
                input: "synthetic".into(),
                builder: "none".into(),
                seed: SEED,
                build_seconds: 0.0,
            },
            quantizer: None,
            value_graphs: None,
        },
    )
    .expect("write");
    p
}

//! Values too large to serve are refused at build, naming the row: what a
//! build accepts, `verify` passes and a search can rank. And `verify` finds
//! rows that a search cannot rank in a snapshot written without the
//! builder's checks.

use std::path::Path;

use fathom_engine::builder::{build, hnsw, BuildOptions, BuilderKind, Dataset};
use fathom_engine::snapshot::{verify, write_snapshot, BuildInfo, Snapshot, SnapshotContents};
use fathom_engine::{Index, Metric, SearchParams, Storage};

fn dataset(rows: &[[f32; 2]]) -> Dataset {
    Dataset {
        dim: 2,
        vectors: rows.iter().flatten().copied().collect(),
        ids: (0..rows.len()).map(|i| format!("v{i}")).collect(),
        attributes: None,
    }
}

fn options(metric: Metric, storage: Storage) -> BuildOptions {
    BuildOptions {
        metric,
        storage,
        m: 8,
        ef_construction: 16,
        threads: 1,
        seed: 1,
        builder: BuilderKind::Fathom,
        default_ef: 16,
        value_graphs: Vec::new(),
    }
}

/// Build and write `rows`; the build's error, or (when it passes) that the
/// snapshot verifies and serves a search.
fn build_serve(rows: &[[f32; 2]], metric: Metric, storage: Storage) -> Result<(), String> {
    let built = build(
        dataset(rows),
        Path::new("input"),
        &options(metric, storage),
        &|_, _| {},
    )
    .map_err(|e| e.to_string())?;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.fathom");
    built.write(&path, "input").map_err(|e| e.to_string())?;
    let report = verify(&Snapshot::open(&path).unwrap());
    assert!(
        report.is_ok(),
        "a build verify rejects: {:?}",
        report.problems
    );
    let index = Index::open(&path).unwrap();
    for q in rows {
        index
            .search(q, &SearchParams::new(2, 16))
            .unwrap_or_else(|e| panic!("a build that cannot serve: {e}"));
    }
    Ok(())
}

const HUGE: [[f32; 2]; 3] = [[1e30, 1e30], [-1e30, 1e30], [1.0, 2.0]];

fn refused(rows: &[[f32; 2]], metric: Metric, storage: Storage, row: usize) {
    let e = build_serve(rows, metric, storage)
        .err()
        .unwrap_or_else(|| panic!("{metric} {storage}: built"));
    assert!(
        e.contains(&format!("row {row} ")) && e.contains(&format!("\"v{row}\"")),
        "{metric} {storage}: {e}"
    );
}

#[test]
fn rows_whose_distances_overflow_f32_are_refused() {
    refused(&HUGE, Metric::L2, Storage::F32, 0);
    refused(&HUGE, Metric::L2, Storage::I8, 0);
    refused(&HUGE, Metric::Dot, Storage::F32, 0);
    // The bad row need not be the first.
    let rows = [[1.0, 2.0], [3.0, 4.0], [-2e19, 1.0]];
    refused(&rows, Metric::L2, Storage::Bf16, 2);
}

#[test]
fn rows_whose_norm_overflows_are_refused_under_cosine() {
    refused(&HUGE, Metric::Cosine, Storage::F32, 0);
    refused(&HUGE, Metric::Cosine, Storage::I8, 0);
}

#[test]
fn values_beyond_bf16_are_refused() {
    let rows = [[3.4e38, -3.4e38], [1.0, 2.0], [2.0, 1.0]];
    refused(&rows, Metric::L2, Storage::Bf16, 0);
    refused(&rows, Metric::Cosine, Storage::Bf16, 0);
}

#[test]
fn large_but_servable_rows_still_build() {
    // Components around 1e18: squared norms near 1e36, distances fit f32.
    let rows = [[1e18, -1e18], [-1e18, 1e18], [1.0, 2.0], [3e18, 0.0]];
    for storage in [Storage::F32, Storage::Bf16, Storage::I8] {
        for metric in [Metric::L2, Metric::Dot, Metric::Cosine] {
            build_serve(&rows, metric, storage).unwrap();
        }
    }
}

#[test]
fn verify_reports_rows_a_search_cannot_rank() {
    let huge = HUGE.iter().flatten().copied().collect::<Vec<f32>>();
    // Not unit length, under cosine.
    let long = [3.0f32, 4.0, 1.0, 0.0, 0.0, 2.0];
    let graph = hnsw::build_graph(
        &huge,
        2,
        Metric::L2,
        &hnsw::GraphParams {
            m: 8,
            ef_construction: 16,
            threads: 1,
            seed: 1,
        },
        &|_| {},
    );
    let ids: Vec<String> = (0..3).map(|i| format!("v{i}")).collect();
    let dir = tempfile::tempdir().unwrap();
    for (metric, storage, vectors) in [
        (Metric::L2, Storage::F32, &huge[..]),
        (Metric::L2, Storage::I8, &huge[..]),
        (Metric::Cosine, Storage::F32, &long[..]),
    ] {
        let path = dir.path().join(format!("{metric}-{storage}.fathom"));
        write_snapshot(
            &path,
            &SnapshotContents {
                metric,
                storage,
                dim: 2,
                vectors,
                graph: &graph,
                ids: &ids,
                attributes: None,
                ef_construction: 16,
                default_ef: 16,
                build: BuildInfo {
                    fathom_version: "test".into(),
                    built_at: 0,
                    input: "test".into(),
                    builder: "fathom".into(),
                    seed: 1,
                    build_seconds: 0.0,
                },
                quantizer: None,
                value_graphs: None,
            },
        )
        .unwrap();
        let report = verify(&Snapshot::open(&path).unwrap());
        assert!(
            report.problems.iter().any(|p| p.contains("row 0")),
            "{metric} {storage}: {:?}",
            report.problems
        );
    }
}

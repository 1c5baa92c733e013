//! Search: recall against exact results, mapped == in-memory, edge cases.

use crate::common;

use common::*;
use fathom_engine::builder::{BuilderKind, Dataset};
use fathom_engine::eval::mean_recall;
use fathom_engine::search::{Scratch, SearchStats};
use fathom_engine::{Error, Index, Metric, SearchParams, Storage};

fn search_all(
    parts: &fathom_engine::index::IndexParts<'_>,
    queries: &[Vec<f32>],
    k: usize,
    ef: usize,
) -> Vec<Vec<u32>> {
    let mut scratch = Scratch::new(parts.len());
    let mut out = Vec::new();
    queries
        .iter()
        .map(|q| {
            parts
                .search_into(q, &SearchParams::new(k, ef), &mut scratch, &mut out)
                .unwrap();
            out.iter().map(|n| n.id).collect()
        })
        .collect()
}

/// The floor sits well below what is measured (printed below), so noise
/// cannot flip it, but a broken graph or kernel falls far under it.
const RECALL_FLOOR: f64 = 0.9;

fn recall_for_builder(builder: BuilderKind, efc: usize) {
    let (n, dim, nq, k) = (20_000, 64, 200, 10);
    let queries = queries(nq, dim, SEED);
    for metric in [Metric::Cosine, Metric::Dot, Metric::L2] {
        let mut built = build_with(dataset(n, dim, SEED), metric, Storage::F32, builder, efc);
        let truth = truth(&built, &queries, k);
        for storage in [Storage::F32, Storage::Bf16, Storage::I8] {
            built.set_storage(storage);
            let found = search_all(&built.parts(), &queries, k, 64);
            let r = mean_recall(&found, &truth, k);
            println!(
                "seed {SEED} builder {} metric {metric} storage {storage}: recall@{k} at ef=64 = {r:.4}",
                builder.name()
            );
            assert!(
                r >= RECALL_FLOOR,
                "{} {metric} {storage}: recall {r:.4} < {RECALL_FLOOR} (seed {SEED})",
                builder.name()
            );
        }
    }
}

#[test]
fn recall_fathom_builder() {
    recall_for_builder(BuilderKind::Fathom, 200);
}

#[test]
fn recall_hnsw_rs_builder() {
    // hnsw_rs builds slowly; a smaller ef_construction keeps the test quick and
    // still must clear the same floor.
    recall_for_builder(BuilderKind::HnswRs, 100);
}

#[test]
fn builders_reach_comparable_recall() {
    let (n, dim, nq, k) = (5_000, 32, 100, 10);
    let queries = queries(nq, dim, SEED);
    let a = build_with(
        dataset(n, dim, SEED),
        Metric::L2,
        Storage::F32,
        BuilderKind::Fathom,
        100,
    );
    let b = build_with(
        dataset(n, dim, SEED),
        Metric::L2,
        Storage::F32,
        BuilderKind::HnswRs,
        100,
    );
    let truth = truth(&a, &queries, k);
    let ra = mean_recall(&search_all(&a.parts(), &queries, k, 32), &truth, k);
    let rb = mean_recall(&search_all(&b.parts(), &queries, k, 32), &truth, k);
    println!("ef=32: fathom builder {ra:.4}, hnsw_rs builder {rb:.4}");
    assert!((ra - rb).abs() < 0.05, "fathom {ra:.4} vs hnsw_rs {rb:.4}");
}

#[test]
fn mapped_search_equals_in_memory_search() {
    let dir = tempfile::tempdir().unwrap();
    let queries = queries(100, 32, SEED);
    for storage in [Storage::F32, Storage::Bf16, Storage::I8] {
        let built = build_with(
            dataset(3000, 32, SEED),
            Metric::Cosine,
            storage,
            BuilderKind::Fathom,
            100,
        );
        let path = write(&built, dir.path(), "m.fathom");
        let index = Index::open(&path).unwrap();
        let mut scratch = Scratch::new(built.len());
        let mut mem = Vec::new();
        for q in &queries {
            let p = SearchParams::new(10, 40);
            let s1: SearchStats = built
                .parts()
                .search_into(q, &p, &mut scratch, &mut mem)
                .unwrap();
            let mut mapped = Vec::new();
            let s2 = index.search_into(q, &p, &mut mapped).unwrap();
            assert_eq!(mem, mapped, "{storage}");
            assert_eq!(s1, s2);
        }
    }
}

fn tiny(vectors: Vec<f32>, dim: usize, metric: Metric) -> fathom_engine::builder::BuiltIndex {
    let n = vectors.len() / dim;
    let ds = Dataset {
        dim,
        vectors,
        ids: (0..n).map(|i| i.to_string()).collect(),
        attributes: None,
    };
    build_with(ds, metric, Storage::F32, BuilderKind::Fathom, 50)
}

#[test]
fn k_larger_than_the_index_returns_it_all_sorted() {
    let built = tiny(fathom_engine::synth::clustered(30, 8, 3, 1), 8, Metric::L2);
    let mut scratch = Scratch::new(30);
    let mut out = Vec::new();
    built
        .parts()
        .search_into(
            &[0.1; 8],
            &SearchParams::new(1000, 0),
            &mut scratch,
            &mut out,
        )
        .unwrap();
    assert_eq!(out.len(), 30);
    assert!(out.windows(2).all(|w| w[0].distance <= w[1].distance));
    let mut ids: Vec<u32> = out.iter().map(|n| n.id).collect();
    ids.sort();
    assert_eq!(ids, (0..30).collect::<Vec<_>>());
}

#[test]
fn a_one_vector_index_works() {
    let dir = tempfile::tempdir().unwrap();
    let built = tiny(vec![1.0, 2.0, 3.0], 3, Metric::Cosine);
    let index = Index::open(write(&built, dir.path(), "one.fathom")).unwrap();
    let hits = index
        .search(&[1.0, 2.0, 3.0], &SearchParams::new(5, 0))
        .unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].id, 0);
    assert!(hits[0].distance.abs() < 1e-6);
}

#[test]
fn duplicate_vectors_are_fine() {
    let mut v = Vec::new();
    for i in 0..500 {
        v.extend_from_slice(&[(i % 5) as f32, 1.0, 2.0, -1.0]);
    }
    let built = tiny(v, 4, Metric::L2);
    let mut scratch = Scratch::new(500);
    let mut out = Vec::new();
    built
        .parts()
        .search_into(
            &[2.0, 1.0, 2.0, -1.0],
            &SearchParams::new(10, 32),
            &mut scratch,
            &mut out,
        )
        .unwrap();
    assert_eq!(out.len(), 10);
    assert!(out.iter().all(|n| n.distance == 0.0), "{out:?}");
}

#[test]
fn bad_queries_get_clear_errors() {
    let built = tiny(
        fathom_engine::synth::clustered(300, 8, 3, 1),
        8,
        Metric::Cosine,
    );
    let parts = built.parts();
    let mut scratch = Scratch::new(300);
    let mut out = Vec::new();
    let mut run = |q: &[f32], k: usize| {
        parts.search_into(q, &SearchParams::new(k, 16), &mut scratch, &mut out)
    };
    let msg = |r: fathom_engine::Result<SearchStats>| match r {
        Err(Error::InvalidArgument(m)) => m,
        other => panic!("expected InvalidArgument, got {other:?}"),
    };
    assert!(msg(run(&[0.0; 8], 5)).contains("zero"));
    assert!(msg(run(&[1.0; 7], 5)).contains("dimension"));
    let mut nan = [1.0; 8];
    nan[3] = f32::NAN;
    assert!(msg(run(&nan, 5)).contains("not finite"));
    assert!(msg(run(&[1.0; 8], 0)).contains("k must be"));
    assert!(msg(run(&[1.0; 8], 1_000_000_000)).contains("exceeds"));
}

#[test]
fn ef_below_k_is_raised_to_k() {
    let built = tiny(
        fathom_engine::synth::clustered(2000, 16, 8, 3),
        16,
        Metric::L2,
    );
    let queries = queries(50, 16, 3);
    let truth = truth(&built, &queries, 50);
    let found = search_all(&built.parts(), &queries, 50, 1);
    assert!(found.iter().all(|r| r.len() == 50));
    let r = mean_recall(&found, &truth, 50);
    assert!(r > 0.8, "recall {r} with ef raised to k");
}

#[test]
fn a_deadline_in_the_past_stops_the_search() {
    let built = tiny(
        fathom_engine::synth::clustered(5000, 16, 8, 3),
        16,
        Metric::L2,
    );
    let mut scratch = Scratch::new(5000);
    let mut out = Vec::new();
    let mut p = SearchParams::new(10, 2000);
    p.deadline = Some(std::time::Instant::now());
    let r = built
        .parts()
        .search_into(&[0.3; 16], &p, &mut scratch, &mut out);
    assert!(matches!(r, Err(Error::DeadlineExceeded)), "{r:?}");
}

#[test]
fn a_deadline_also_stops_an_exhaustive_search() {
    let built = tiny(
        fathom_engine::synth::clustered(20_000, 16, 8, 3),
        16,
        Metric::L2,
    );
    let mut scratch = Scratch::new(20_000);
    let mut out = Vec::new();
    // k covers the index, so this takes the exact path.
    let mut p = SearchParams::new(20_000, 0);
    p.deadline = Some(std::time::Instant::now());
    let r = built
        .parts()
        .search_into(&[0.3; 16], &p, &mut scratch, &mut out);
    assert!(matches!(r, Err(Error::DeadlineExceeded)), "{r:?}");
}

/// The visited marks are tagged with a 16-bit query generation that wraps
/// after 65,535 queries and must then be cleared: a scratch reused across the
/// wrap answers exactly as a fresh one does.
#[test]
fn visited_generation_wraps_without_stale_marks() {
    let built = build_with(
        dataset(400, 8, SEED),
        Metric::L2,
        Storage::F32,
        BuilderKind::Fathom,
        40,
    );
    let parts = built.parts();
    let queries = queries(64, 8, SEED);
    let p = SearchParams::new(5, 16);
    let mut reused = Scratch::new(built.len());
    let (mut out, mut fresh_out) = (Vec::new(), Vec::new());
    for i in 0..(u16::MAX as usize + 200) {
        let q = &queries[i % queries.len()];
        parts.search_into(q, &p, &mut reused, &mut out).unwrap();
        // Compare around the wrap, and now and then elsewhere.
        if i % 4096 == 0 || (65_500..65_600).contains(&i) {
            let mut fresh = Scratch::new(built.len());
            parts
                .search_into(q, &p, &mut fresh, &mut fresh_out)
                .unwrap();
            assert_eq!(out, fresh_out, "query {i}");
        }
    }
}

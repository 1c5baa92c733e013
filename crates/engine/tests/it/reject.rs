//! Early rejection (`fathom_engine::reject`): a traversal that turns far
//! candidates away after their leading dimensions finds what scoring every
//! candidate finds, with exact distances, on data whose leading dimensions
//! carry an ordinary share of the distance and on data where they carry
//! most of it.

use crate::common;

use common::*;
use fathom_engine::builder::{BuilderKind, BuiltIndex, Dataset};
use fathom_engine::distance::Kernel;
use fathom_engine::eval::mean_recall;
use fathom_engine::search::{Scratch, SearchStats};
use fathom_engine::{Metric, SearchParams, Storage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const N: usize = 6_000;
const DIM: usize = 384;
const K: usize = 10;
const EF: usize = 24;

struct Run {
    found: Vec<Vec<u32>>,
    stats: SearchStats,
}

fn run(built: &BuiltIndex, queries: &[Vec<f32>], early_reject: bool) -> Run {
    let parts = built.parts();
    let mut scratch = Scratch::new(parts.len());
    let mut out = Vec::new();
    let mut stats = SearchStats::default();
    let params = SearchParams {
        early_reject,
        ..SearchParams::new(K, EF)
    };
    let kernel = Kernel::<f32>::new(built.options.metric);
    let found = queries
        .iter()
        .map(|q| {
            stats += parts
                .search_into(q, &params, &mut scratch, &mut out)
                .unwrap();
            // Whatever was turned away, what is returned was scored in full.
            let mut q = q.clone();
            if built.options.metric == Metric::Cosine {
                fathom_engine::distance::normalize(&mut q);
            }
            for hit in &out {
                let exact = kernel.distance(&q, parts.exact.row(hit.id));
                assert!(
                    (hit.distance - exact).abs() <= 1e-5 * exact.abs().max(1.0),
                    "node {}: {} returned, {} exact",
                    hit.id,
                    hit.distance,
                    exact
                );
            }
            out.iter().map(|n| n.id).collect()
        })
        .collect();
    Run { found, stats }
}

/// Build `vectors` under `metric` and compare the two traversals over each
/// storage the test applies to.
fn compare(name: &str, vectors: Vec<f32>, queries: &[Vec<f32>], metric: Metric, engaged: f64) {
    let ds = Dataset {
        dim: DIM,
        vectors,
        ids: (0..N).map(|i| format!("item:{i}")).collect(),
        attributes: None,
    };
    let mut built = build_with(ds, metric, Storage::F32, BuilderKind::Fathom, 100);
    let truth = truth(&built, queries, K);
    // (i8 codes at 384 dimensions are 6 lines: under `MIN_LINES`.)
    let storages = [Storage::F32, Storage::Bf16];
    for storage in storages {
        built.set_storage(storage);
        assert!(
            built.parts().early_reject.is_some(),
            "{name} {storage}: not measured"
        );
        let full = run(&built, queries, false);
        let early = run(&built, queries, true);
        let (r_full, r_early) = (
            mean_recall(&full.found, &truth, K),
            mean_recall(&early.found, &truth, K),
        );
        let share = early.stats.rejected as f64 / early.stats.distances as f64;
        println!(
            "{name} {metric} {storage}: recall@{K} at ef {EF}: {r_full:.4} scoring all, {r_early:.4} with early rejection ({:.0}% turned away)",
            share * 100.0
        );
        assert_eq!(full.stats.rejected, 0, "{name}: turned away while off");
        // It must engage where it can. (Seeded clustered data has narrowly spread
        // distances, so a tenth or so is turned away; real embeddings see
        // most.) ...
        assert!(
            share > engaged,
            "{name} {storage}: only {share:.3} turned away"
        );
        // ... and lose next to nothing: the floor is well under what is
        // measured.
        assert!(
            r_early >= r_full - 0.02 && r_early >= 0.85,
            "{name} {metric} {storage}: recall {r_early:.4} with early rejection, {r_full:.4} without"
        );
    }
}

#[test]
fn early_rejection_keeps_recall_and_exact_distances() {
    let queries = queries(150, DIM, SEED);
    for metric in [Metric::Cosine, Metric::L2] {
        let vectors = fathom_engine::synth::clustered(N, DIM, 32, SEED);
        compare("clustered", vectors, &queries, metric, 0.05);
    }
}

/// Leading dimensions that carry most of the distance: an estimate that
/// assumed every dimension carries an equal share (dims / dim of it) would
/// overestimate by several times and turn true neighbours away.
#[test]
fn early_rejection_measures_the_leading_share() {
    let stretch = |v: &mut [f32]| {
        for row in v.chunks_exact_mut(DIM) {
            row[..64].iter_mut().for_each(|x| *x *= 4.0);
        }
    };
    let mut vectors = fathom_engine::synth::clustered(N, DIM, 32, SEED);
    stretch(&mut vectors);
    let mut queries = queries(150, DIM, SEED);
    queries.iter_mut().for_each(|q| stretch(q));
    compare("stretched", vectors, &queries, Metric::L2, 0.05);
}

/// Clusters that live in the trailing dimensions only: over random pairs
/// the leading 64 carry about 4% of the distance, between neighbours about
/// 17%. A share fitted to the whole set's spread would overestimate a
/// neighbour's distance fourfold and turn true neighbours away.
#[test]
fn early_rejection_measures_between_neighbours() {
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut uniform = move || rng.random_range(-0.5f32..0.5);
    let centres: Vec<f32> = (0..32 * DIM).map(|_| 2.0 * uniform()).collect();
    let mut point = |c: usize| -> Vec<f32> {
        (0..DIM)
            .map(|j| {
                let centre = if j < 64 { 0.0 } else { centres[c * DIM + j] };
                centre + uniform()
            })
            .collect()
    };
    let vectors: Vec<f32> = (0..N).flat_map(|i| point(i % 32)).collect();
    let queries: Vec<Vec<f32>> = (0..150).map(|i| point(i * 7 % 32)).collect();
    // Within a cluster every dimension is noise alike, so few candidates
    // are far enough to turn away: only recall is asserted.
    compare("trailing clusters", vectors, &queries, Metric::L2, 0.0);
}

#[test]
fn not_measured_below_its_dimension_for_dot_or_cosine_codes() {
    let small = |dim, metric, storage| {
        build_with(
            dataset(500, dim, SEED),
            metric,
            storage,
            BuilderKind::Fathom,
            50,
        )
    };
    assert_eq!(
        small(64, Metric::L2, Storage::F32).parts().early_reject,
        None
    );
    assert_eq!(
        small(DIM, Metric::Dot, Storage::F32).parts().early_reject,
        None
    );
    // i8 codes under cosine are compared by a dot product with a rescaled
    // query, not by an L2 of the codes.
    let mut cosine = small(DIM, Metric::Cosine, Storage::I8);
    assert_eq!(cosine.parts().early_reject, None);
    cosine.set_storage(Storage::Bf16);
    assert!(cosine.parts().early_reject.is_some());
}

/// A filtered traversal turns candidates away the same way, and still
/// returns only matches with exact distances.
#[test]
fn early_rejection_in_a_filtered_traversal() {
    let mut ds = Dataset {
        dim: DIM,
        vectors: fathom_engine::synth::clustered(N, DIM, 32, SEED),
        ids: (0..N).map(|i| format!("item:{i}")).collect(),
        attributes: None,
    };
    let mut attrs = fathom_engine::attributes::AttributesBuilder::new();
    for i in 0..N {
        let mut row = serde_json::Map::new();
        row.insert("half".into(), serde_json::Value::Bool(i % 2 == 0));
        attrs.push(&row, i + 1).unwrap();
    }
    ds.attributes = Some(attrs.finish());
    let built = build_with(ds, Metric::L2, Storage::F32, BuilderKind::Fathom, 100);
    let dir = tempfile::tempdir().unwrap();
    let index = fathom_engine::Index::open(write(&built, dir.path(), "f.fathom")).unwrap();
    let plan = index.filter("half = true").unwrap();
    let rows = index.snapshot().vectors_f32();
    let kernel = Kernel::<f32>::new(Metric::L2);
    let queries = queries(100, DIM, SEED);
    let mut out = Vec::new();
    let mut recall = [0f64; 2];
    let mut rejected = [0u64; 2];
    for (run, early_reject) in [false, true].into_iter().enumerate() {
        let params = SearchParams {
            plan: fathom_engine::index::Plan::Graph,
            early_reject,
            ..SearchParams::new(K, EF)
        };
        for q in &queries {
            let stats = index
                .search_filtered_into(q, &params, Some(&plan), &mut out)
                .unwrap();
            rejected[run] += stats.rejected;
            let mut truth: Vec<(f32, u32)> = (0..N as u32)
                .step_by(2)
                .map(|i| (kernel.distance(q, rows.row(i)), i))
                .collect();
            truth.sort_by(|a, b| a.0.total_cmp(&b.0));
            let truth: Vec<u32> = truth.iter().take(K).map(|t| t.1).collect();
            for h in &out {
                assert_eq!(h.id % 2, 0, "a hit the filter does not admit");
                let exact = kernel.distance(q, rows.row(h.id));
                assert!((h.distance - exact).abs() <= 1e-5 * exact.max(1.0));
            }
            recall[run] += out.iter().filter(|h| truth.contains(&h.id)).count() as f64
                / (K * queries.len()) as f64;
        }
    }
    println!(
        "filtered l2 f32: recall@{K} at ef {EF}: {:.4} scoring all, {:.4} with early rejection ({} turned away)",
        recall[0], recall[1], rejected[1]
    );
    assert_eq!(rejected[0], 0);
    assert!(rejected[1] > 0, "never turned a candidate away");
    assert!(
        recall[1] >= recall[0] - 0.02 && recall[1] >= 0.85,
        "{recall:?}"
    );
}

//! Filtered search against a brute-force oracle: random filters over seeded
//! attributes, every hit matches, a call returns min(k, matching) hits, the
//! planner at both extremes, and the version-1 fixture.

use crate::common;

use std::path::Path;

use common::*;
use fathom_engine::attributes::AttributesBuilder;
use fathom_engine::builder::BuilderKind;
use fathom_engine::index::Plan;
use fathom_engine::snapshot::{verify, Snapshot};
use fathom_engine::{Error, Index, Metric, SearchParams, Storage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};

const N: usize = 3000;
const DIM: usize = 16;
const LANGS: [&str; 5] = ["sv", "en", "de", "fr", "ja"];
const MARKETS: [&str; 6] = ["SE", "NO", "US", "GB", "DE", "JP"];

/// Seeded attributes: a language tied to the cluster (so it correlates with
/// the vector), multi-valued markets, a bool, a skewed int, a float that is
/// sometimes missing, and a label with many values.
fn attributes(n: usize, seed: u64) -> Vec<Map<String, Value>> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let mut o = Map::new();
            o.insert("lang".into(), json!(LANGS[(i / 7) % LANGS.len()]));
            let markets: Vec<&str> = MARKETS
                .iter()
                .copied()
                .filter(|_| rng.random_bool(0.4))
                .collect();
            o.insert("markets".into(), json!(markets));
            o.insert("explicit".into(), json!(rng.random_bool(0.1)));
            let u: f64 = rng.random();
            o.insert("popularity".into(), json!((100.0 * u * u * u) as i64));
            if rng.random_bool(0.8) {
                o.insert("score".into(), json!(rng.random::<f64>() * 10.0));
            }
            o.insert(
                "label".into(),
                json!(format!("label:{}", rng.random_range(0..400))),
            );
            o
        })
        .collect()
}

struct Fixture {
    _dir: tempfile::TempDir,
    index: Index,
    attrs: Vec<Map<String, Value>>,
    queries: Vec<Vec<f32>>,
}

fn fixture(storage: Storage) -> Fixture {
    let mut ds = dataset(N, DIM, SEED);
    let attrs = attributes(N, SEED);
    let mut b = AttributesBuilder::new();
    for (i, a) in attrs.iter().enumerate() {
        b.push(a, i + 1).unwrap();
    }
    ds.attributes = Some(b.finish());
    let built = build_with(ds, Metric::L2, storage, BuilderKind::Fathom, 100);
    let dir = tempfile::tempdir().unwrap();
    let path = write(&built, dir.path(), "f.fathom");
    let snap = Snapshot::open(&path).unwrap();
    assert!(verify(&snap).is_ok(), "{:?}", verify(&snap).problems);
    Fixture {
        _dir: dir,
        index: Index::from_snapshot(snap),
        attrs,
        queries: queries(40, DIM, SEED),
    }
}

/// The oracle: the filter semantics, written over the JSON attributes.
#[derive(Debug, Clone)]
enum F {
    Eq(&'static str, Value),
    Range(&'static str, &'static str, f64),
    In(&'static str, Vec<Value>),
    Not(Box<F>),
    And(Box<F>, Box<F>),
    Or(Box<F>, Box<F>),
}

impl F {
    fn matches(&self, o: &Map<String, Value>) -> bool {
        let eq = |field: &str, v: &Value| match o.get(field) {
            Some(Value::Array(a)) => a.contains(v),
            Some(Value::Number(x)) => x.as_f64() == v.as_f64(),
            Some(x) => x == v,
            None => false,
        };
        match self {
            F::Eq(f, v) => eq(f, v),
            F::In(f, vs) => vs.iter().any(|v| eq(f, v)),
            F::Range(f, op, b) => match o.get(*f).and_then(Value::as_f64) {
                None => false,
                Some(x) => match *op {
                    "<" => x < *b,
                    "<=" => x <= *b,
                    ">" => x > *b,
                    ">=" => x >= *b,
                    _ => unreachable!(),
                },
            },
            F::Not(f) => !f.matches(o),
            F::And(a, b) => a.matches(o) && b.matches(o),
            F::Or(a, b) => a.matches(o) || b.matches(o),
        }
    }

    fn expr(&self) -> String {
        match self {
            F::Eq(f, v) => format!("{f} = {v}"),
            F::In(f, vs) => format!(
                "{f} IN ({})",
                vs.iter()
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            F::Range(f, op, b) => format!("{f} {op} {b}"),
            F::Not(f) => format!("NOT ({})", f.expr()),
            F::And(a, b) => format!("({}) AND ({})", a.expr(), b.expr()),
            F::Or(a, b) => format!("({}) or ({})", a.expr(), b.expr()),
        }
    }
}

fn random_filter(rng: &mut StdRng, depth: usize) -> F {
    let leaf = |rng: &mut StdRng| -> F {
        match rng.random_range(0..7) {
            0 => F::Eq("lang", json!(LANGS[rng.random_range(0..LANGS.len())])),
            1 => F::Eq(
                "markets",
                json!(MARKETS[rng.random_range(0..MARKETS.len())]),
            ),
            2 => F::Eq("explicit", json!(rng.random_bool(0.5))),
            3 => {
                let op = ["<", "<=", ">", ">="][rng.random_range(0..4)];
                F::Range("popularity", op, rng.random_range(0..100) as f64)
            }
            4 => {
                let op = ["<", "<=", ">", ">="][rng.random_range(0..4)];
                F::Range(
                    "score",
                    op,
                    (rng.random::<f64>() * 10.0 * 100.0).round() / 100.0,
                )
            }
            5 => F::In(
                "label",
                (0..rng.random_range(1..4))
                    .map(|_| json!(format!("label:{}", rng.random_range(0..420))))
                    .collect(),
            ),
            _ => F::Eq("popularity", json!(rng.random_range(0..5))),
        }
    };
    if depth == 0 {
        return leaf(rng);
    }
    match rng.random_range(0..5) {
        0 => F::Not(Box::new(random_filter(rng, depth - 1))),
        1 => F::And(
            Box::new(random_filter(rng, depth - 1)),
            Box::new(random_filter(rng, depth - 1)),
        ),
        2 => F::Or(
            Box::new(random_filter(rng, depth - 1)),
            Box::new(random_filter(rng, depth - 1)),
        ),
        _ => leaf(rng),
    }
}

fn l2(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

#[test]
fn every_hit_matches_and_the_count_is_min_k_matching() {
    let fx = fixture(Storage::F32);
    let vectors = fx.index.snapshot().vectors_f32();
    let mut rng = StdRng::seed_from_u64(99);
    let k = 10;
    let mut out = Vec::new();
    for round in 0..150 {
        let f = random_filter(&mut rng, 3);
        let src = f.expr();
        let plan = fx
            .index
            .filter(&src)
            .unwrap_or_else(|e| panic!("{src}: {e}"));
        let want: Vec<u32> = (0..N as u32)
            .filter(|&i| f.matches(&fx.attrs[i as usize]))
            .collect();
        assert_eq!(plan.matches().len(), want.len() as u64, "{src}");
        assert_eq!(plan.count(), want.len() as u64, "{src}");
        let q = &fx.queries[round % fx.queries.len()];
        for mode in [Plan::Auto, Plan::Exact, Plan::Graph, Plan::Post] {
            let mut params = SearchParams::new(k, 32);
            params.plan = mode;
            fx.index
                .search_filtered_into(q, &params, Some(&plan), &mut out)
                .unwrap();
            assert_eq!(out.len(), k.min(want.len()), "{src} {mode:?}");
            for h in &out {
                assert!(f.matches(&fx.attrs[h.id as usize]), "{src}: hit {}", h.id);
            }
            if mode == Plan::Exact {
                // The exact plan is the brute-force answer.
                let mut truth: Vec<(f32, u32)> =
                    want.iter().map(|&i| (l2(q, vectors.row(i)), i)).collect();
                truth.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                let ids: Vec<u32> = out.iter().map(|h| h.id).collect();
                let expect: Vec<u32> = truth.iter().take(k).map(|t| t.1).collect();
                assert_eq!(ids, expect, "{src}");
            }
        }
    }
}

#[test]
fn filtered_graph_and_widened_beam_recall_hold_and_bf16_i8_rerank_stay_exact() {
    for storage in [Storage::F32, Storage::Bf16, Storage::I8] {
        let fx = fixture(storage);
        let vectors = fx.index.snapshot().vectors_f32();
        let plan = fx
            .index
            .filter("markets = \"SE\" AND explicit = false")
            .unwrap();
        let sel = plan.selectivity();
        assert!((0.2..0.5).contains(&sel), "selectivity {sel}");
        let matches = plan.matches().clone();
        for mode in [Plan::Graph, Plan::Post] {
            let mut params = SearchParams::new(10, 64);
            params.plan = mode;
            let (mut hit, mut total) = (0, 0);
            let mut out = Vec::new();
            for q in &fx.queries {
                fx.index
                    .search_filtered_into(q, &params, Some(&plan), &mut out)
                    .unwrap();
                let mut truth: Vec<(f32, u32)> =
                    matches.iter().map(|i| (l2(q, vectors.row(i)), i)).collect();
                truth.sort_by(|a, b| a.0.total_cmp(&b.0));
                let truth: Vec<u32> = truth.iter().take(10).map(|t| t.1).collect();
                hit += out.iter().filter(|h| truth.contains(&h.id)).count();
                total += 10;
                // Returned distances are exact, whatever the traversal type.
                for h in &out {
                    let d = l2(q, vectors.row(h.id));
                    assert!((h.distance - d).abs() <= 1e-4 * d.max(1.0), "{storage:?}");
                }
            }
            let recall = hit as f64 / total as f64;
            // Measured 0.99+ here; the floor catches a broken traversal.
            assert!(
                recall >= 0.85,
                "{storage:?} {mode:?}: filtered recall {recall}"
            );
        }
    }
}

#[test]
fn planner_scans_few_matches_exactly_and_walks_the_graph_for_many() {
    let fx = fixture(Storage::F32);
    let q = &fx.queries[0];
    let mut out = Vec::new();
    let params = SearchParams::new(10, 32);
    // One label: a handful of items, scanned exactly (no expansions).
    let few = fx.index.filter("label = \"label:7\"").unwrap();
    assert!(few.count() < 30);
    let stats = fx
        .index
        .search_filtered_into(q, &params, Some(&few), &mut out)
        .unwrap();
    assert_eq!(stats.expansions, 0);
    assert_eq!(out.len(), 10.min(few.count() as usize));
    // Nearly everything: the graph.
    let many = fx.index.filter("NOT label = \"label:7\"").unwrap();
    let stats = fx
        .index
        .search_filtered_into(q, &params, Some(&many), &mut out)
        .unwrap();
    assert!(stats.expansions > 0);
    assert_eq!(out.len(), 10);
    // Nothing matches: an empty answer, not an error.
    let none = fx.index.filter("lang = \"xx\"").unwrap();
    assert_eq!(none.count(), 0);
    fx.index
        .search_filtered_into(q, &params, Some(&none), &mut out)
        .unwrap();
    assert!(out.is_empty());
    // A forced graph plan on a sparse filter still returns min(k, matching).
    let sparse = fx
        .index
        .filter("label IN (\"label:1\", \"label:2\")")
        .unwrap();
    let mut forced = params;
    forced.plan = Plan::Graph;
    fx.index
        .search_filtered_into(q, &forced, Some(&sparse), &mut out)
        .unwrap();
    assert_eq!(out.len(), 10.min(sparse.count() as usize));
}

#[test]
fn filter_errors_name_the_position_and_the_fields() {
    let fx = fixture(Storage::F32);
    let err = |src: &str| match fx.index.filter(src) {
        Err(Error::Filter(e)) => e,
        other => panic!("{src}: {other:?}"),
    };
    let e = err("lnag = \"sv\"");
    assert_eq!(e.position, 0);
    assert!(e.message.contains("unknown field \"lnag\""), "{e}");
    assert!(e.message.contains("lang (keyword)") && e.message.contains("popularity (int)"));
    let e = err("lang = \"sv\" AND popularity = \"high\"");
    assert_eq!(e.position, 29);
    assert!(
        e.message.contains("is int, but the value is a string"),
        "{e}"
    );
    let e = err("label >= \"label:3\"");
    assert_eq!(e.position, 9);
    assert!(e.message.contains(">= on keyword field"), "{e}");
    let e = err("explicit = 1");
    assert!(e.message.contains("is bool"), "{e}");
    let e = err("lang = ");
    assert_eq!(e.position, 7);
}

#[test]
fn version_1_fixture_opens_verifies_and_answers() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1-l2-300x8.fathom");
    let snap = Snapshot::open(&path).unwrap();
    assert_eq!(snap.format_version(), 1);
    assert!(verify(&snap).is_ok(), "{:?}", verify(&snap).problems);
    let index = Index::from_snapshot(snap);
    // Version 1 kept the extra .jsonl fields as JSON only: no typed store.
    assert!(index.attributes().is_none());
    assert_eq!(
        index.attributes_json("item:042"),
        Some("{\"genre\":\"rock\"}")
    );
    assert!(matches!(
        index.filter("genre = \"jazz\""),
        Err(Error::Filter(_))
    ));
    let hits = index
        .search(
            &[0.1, 0.2, 0.3, 0.4, -0.5, 0.6, -0.7, 0.8],
            &SearchParams::new(5, 0),
        )
        .unwrap();
    let ids: Vec<&str> = hits.iter().map(|h| index.id(h.id)).collect();
    // Recorded when the fixture was written by the version-1 build.
    assert_eq!(
        ids,
        ["item:258", "item:020", "item:025", "item:179", "item:149"]
    );
    assert!((hits[0].distance - 0.965_707_8).abs() < 1e-5);
}

#[test]
fn version_2_fixture_opens_verifies_and_answers_filtered_calls() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v2-l2-300x8.fathom");
    let snap = Snapshot::open(&path).unwrap();
    assert_eq!(snap.format_version(), 2);
    assert!(verify(&snap).is_ok(), "{:?}", verify(&snap).problems);
    let index = Index::from_snapshot(snap);
    let query = [0.1, 0.2, 0.3, 0.4, -0.5, 0.6, -0.7, 0.8];
    let ids = |filter: Option<&str>, ef: usize| -> Vec<String> {
        let plan = filter.map(|f| index.filter(f).unwrap());
        let mut hits = Vec::new();
        index
            .search_filtered_into(&query, &SearchParams::new(5, ef), plan.as_ref(), &mut hits)
            .unwrap();
        hits.iter().map(|h| index.id(h.id).to_string()).collect()
    };
    // Recorded when the fixture was written by the version-2 build.
    assert_eq!(ids(None, 0), RECORDED_V2_PLAIN);
    assert_eq!(ids(Some("lang = \"de\""), 0), RECORDED_V2_DE);
    // An exhaustive beam is the exact answer, which the recorded one is.
    assert_eq!(ids(Some("lang = \"de\""), 300), RECORDED_V2_DE);
}

const RECORDED_V2_PLAIN: [&str; 5] = ["item:227", "item:059", "item:294", "item:175", "item:183"];
const RECORDED_V2_DE: [&str; 5] = ["item:227", "item:183", "item:291", "item:255", "item:292"];

#[test]
fn exclusions_and_filters_share_one_admit_check_and_keep_k_hits() {
    use fathom_engine::admit::Admission;
    use roaring::RoaringBitmap;
    let fx = fixture(Storage::F32);
    let vectors = fx.index.snapshot().vectors_f32();
    let mut rng = StdRng::seed_from_u64(5);
    let k = 10;
    let mut out = Vec::new();
    for (round, q) in fx.queries.iter().enumerate() {
        let plan = fx.index.filter("markets = \"SE\"").unwrap();
        let plan = [None, Some(&plan)][round % 2];
        // Exclude most of the true neighbours, plus random others: the call
        // must find the next ones and still return k.
        let admitted_by_filter = |i: u32| plan.is_none_or(|p| p.matches().contains(i));
        let mut order: Vec<(f32, u32)> = (0..N as u32)
            .filter(|&i| admitted_by_filter(i))
            .map(|i| (l2(q, vectors.row(i)), i))
            .collect();
        order.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let mut excluded = RoaringBitmap::new();
        excluded.extend(order.iter().take(25).map(|o| o.1));
        excluded.extend((0..200).map(|_| rng.random_range(0..N as u32)));
        let admission = Admission {
            filter: plan,
            excluded: Some(&excluded),
            deleted: None,
        };
        for mode in [Plan::Auto, Plan::Exact, Plan::Graph, Plan::Post] {
            let mut params = SearchParams::new(k, 32);
            params.plan = mode;
            fx.index
                .search_admitted_into(q, &params, &admission, &mut out)
                .unwrap();
            assert_eq!(out.len(), k, "{mode:?}");
            for h in &out {
                assert!(
                    !excluded.contains(h.id),
                    "{mode:?}: excluded {} returned",
                    h.id
                );
                assert!(
                    admitted_by_filter(h.id),
                    "{mode:?}: {} fails the filter",
                    h.id
                );
            }
            if mode == Plan::Exact {
                let want: Vec<u32> = order
                    .iter()
                    .filter(|o| !excluded.contains(o.1))
                    .take(k)
                    .map(|o| o.1)
                    .collect();
                let got: Vec<u32> = out.iter().map(|h| h.id).collect();
                assert_eq!(got, want);
            }
        }
    }
}

/// The traversal's probe (the filter as one bit per item, exclusions and
/// deletions as bitmaps) admits exactly what the admission does.
#[test]
fn traversal_probe_admits_what_the_admission_does() {
    use fathom_engine::admit::{Admission, Admit};
    use roaring::RoaringBitmap;
    let fx = fixture(Storage::F32);
    let mut rng = StdRng::seed_from_u64(9);
    let mut away =
        || -> RoaringBitmap { (0..300).map(|_| rng.random_range(0..N as u32)).collect() };
    let (excluded, deleted) = (away(), away());
    for expr in [
        "markets = \"SE\"",
        "NOT markets = \"SE\" OR explicit = true",
        "popularity >= 50",
        "markets = \"SE\" AND popularity >= 50",
    ] {
        let plan = fx.index.filter(expr).unwrap();
        for (excluded, deleted) in [(None, None), (Some(&excluded), Some(&deleted))] {
            let admission = Admission {
                filter: Some(&plan),
                excluded,
                deleted,
            };
            let probe = admission.probe();
            let differ = (0..N as u32 + 70).find(|&i| probe.admit(i) != admission.admit(i));
            assert_eq!(differ, None, "{expr}");
        }
        // The admission admits some and turns some away, or this proves little.
        let admits = (0..N as u32).filter(|&i| plan.admit(i)).count();
        assert!(admits > 0 && admits < N, "{expr}: {admits}");
    }
}

/// A filter held thinly around the query (a language other than its
/// cluster's) is answered by an exact scan of the matches, while a filter
/// as common everywhere as it is overall stays on the graph; `Plan::Graph`
/// turns the scan off.
#[test]
fn filters_thin_around_the_query_are_scanned_exactly() {
    use fathom_engine::builder::Dataset;
    use fathom_engine::synth;
    let (n, dim, clusters) = (30_000, 16, 24);
    let (vectors, labels) = synth::clustered_labeled(n, dim, clusters, 5);
    let items = synth::attributes(&vectors, &labels, dim, 5);
    let mut b = AttributesBuilder::new();
    for (i, item) in items.iter().enumerate() {
        b.push(&item.to_map(), i + 1).unwrap();
    }
    let ds = Dataset {
        dim,
        vectors: vectors.clone(),
        ids: (0..n).map(|i| format!("item:{i:06}")).collect(),
        attributes: Some(b.finish()),
    };
    let built = build_with(ds, Metric::L2, Storage::F32, BuilderKind::Fathom, 64);
    let dir = tempfile::tempdir().unwrap();
    let index =
        Index::from_snapshot(Snapshot::open(write(&built, dir.path(), "t.fathom")).unwrap());
    // The most common language: the main one of several clusters, and
    // thinly present (~15% of items take a random language) in the others.
    let mut count = std::collections::HashMap::new();
    for it in &items {
        *count.entry(it.lang).or_insert(0usize) += 1;
    }
    let (&lang, _) = count.iter().max_by_key(|(_, c)| **c).unwrap();
    let anti = index.filter(&format!("lang = \"{lang}\"")).unwrap();
    let even = index.filter("explicit = true").unwrap();
    let params = SearchParams::new(10, 16);
    for f in [&anti, &even] {
        // Neither is sparse enough for the planner's exact scan up front.
        assert!(
            !fathom_engine::index::prefers_exact(f.count(), n, 16),
            "{}",
            f.count()
        );
    }
    // Queries from the clusters whose main language is another one.
    let other: Vec<usize> = (0..n)
        .filter(|&i| {
            let c = labels[i];
            let main = items
                .iter()
                .zip(&labels)
                .filter(|(_, &l)| l == c)
                .take(50)
                .filter(|(it, _)| it.lang == lang)
                .count();
            main < 25
        })
        .step_by(997)
        .take(20)
        .collect();
    assert!(other.len() >= 10);
    let mut out = Vec::new();
    let (mut scanned, mut forced_scanned) = (0, 0);
    for &i in &other {
        let q = &vectors[i * dim..(i + 1) * dim];
        let stats = index
            .search_filtered_into(q, &params, Some(&anti), &mut out)
            .unwrap();
        if stats.distances >= anti.count() {
            scanned += 1;
        }
        assert_eq!(out.len(), 10);
        let mut graph = params.clone();
        graph.plan = Plan::Graph;
        let stats = index
            .search_filtered_into(q, &graph, Some(&anti), &mut out)
            .unwrap();
        if stats.distances >= anti.count() {
            forced_scanned += 1;
        }
        let stats = index
            .search_filtered_into(q, &params, Some(&even), &mut out)
            .unwrap();
        assert!(stats.distances < even.count(), "an even filter was scanned");
    }
    assert!(
        scanned * 2 >= other.len(),
        "{scanned} of {} scanned",
        other.len()
    );
    assert_eq!(forced_scanned, 0);

    // Exclusions alone (a history crowding the query's neighbourhood) are
    // walked through, never scanned: the rest of the index is no nearer.
    const HISTORY: usize = 600;
    let q = &vectors[other[0] * dim..(other[0] + 1) * dim];
    let mut order: Vec<u32> = (0..n as u32).collect();
    let l2 = |i: u32| -> f32 {
        let row = &vectors[i as usize * dim..(i as usize + 1) * dim];
        row.iter().zip(q).map(|(a, b)| (a - b) * (a - b)).sum()
    };
    order.sort_by(|&a, &b| l2(a).total_cmp(&l2(b)));
    let history: roaring::RoaringBitmap = order[..HISTORY].iter().copied().collect();
    let admission = fathom_engine::admit::Admission {
        excluded: Some(&history),
        ..Default::default()
    };
    let stats = index
        .search_admitted_into(q, &params, &admission, &mut out)
        .unwrap();
    assert_eq!(out.len(), 10);
    assert!(out.iter().all(|h| !history.contains(h.id)));
    assert!(stats.distances < (n - HISTORY) as u64, "{stats:?}: scanned");
}

/// An index over seeded numeric attributes for long value lists: `pop`, an
/// int from -300 to 300; `score`, a float in quarters from -50 to 50
/// (sometimes -0.0, sometimes missing); `tag`, a keyword.
fn numeric_fixture(n: usize) -> (tempfile::TempDir, Index, Vec<Map<String, Value>>) {
    let mut rng = StdRng::seed_from_u64(31);
    let attrs: Vec<Map<String, Value>> = (0..n)
        .map(|_| {
            let mut o = Map::new();
            o.insert("pop".into(), json!(rng.random_range(-300..=300i64)));
            match rng.random_range(0..10) {
                0 => {}
                1 => {
                    o.insert("score".into(), json!(-0.0f64));
                }
                _ => {
                    let q = rng.random_range(-200..=200i64) as f64 / 4.0;
                    o.insert("score".into(), json!(q));
                }
            }
            o.insert("tag".into(), json!(format!("t{}", rng.random_range(0..50))));
            o
        })
        .collect();
    let mut ds = dataset(n, 8, SEED);
    let mut b = AttributesBuilder::new();
    for (i, a) in attrs.iter().enumerate() {
        b.push(a, i + 1).unwrap();
    }
    ds.attributes = Some(b.finish());
    let built = build_with(ds, Metric::L2, Storage::F32, BuilderKind::Fathom, 32);
    let dir = tempfile::tempdir().unwrap();
    let path = write(&built, dir.path(), "n.fathom");
    (
        dir,
        Index::from_snapshot(Snapshot::open(&path).unwrap()),
        attrs,
    )
}

/// `count` numbers as a filter would write them, with their values: short
/// ints (some negative), quarters and other fractions, ints written as
/// floats (`3.0`), `-0`, and repeats.
fn number_list(rng: &mut StdRng, count: usize) -> Vec<(String, f64)> {
    (0..count)
        .map(|_| {
            let text = match rng.random_range(0..10) {
                0..=4 => rng.random_range(-320..=999i64).to_string(),
                5 | 6 => format!("{}", rng.random_range(-200..=200i64) as f64 / 4.0),
                7 => format!("{}.0", rng.random_range(-60..=60i64)),
                8 => ["-0", "0", "-0.0", ".5", "-.25"][rng.random_range(0..5)].to_string(),
                _ => format!("{:.1}", rng.random_range(-500..=500i64) as f64 / 10.0),
            };
            let value = text.parse::<f64>().unwrap();
            (text, value)
        })
        .collect()
}

fn joined(list: &[(String, f64)], sep: &str) -> String {
    list.iter()
        .map(|(t, _)| t.as_str())
        .collect::<Vec<_>>()
        .join(sep)
}

/// Numeric IN lists of thousands of values (and the same conditions
/// written as ORs of `=`, ANDs of `!=` and ranges on one field) match
/// exactly what a check of every item finds, under `=`'s semantics: an
/// int equals the float of the same value, and -0 equals 0.
#[test]
fn long_numeric_in_lists_match_a_brute_force_check() {
    let n = 3000;
    let (_dir, index, attrs) = numeric_fixture(n);
    let mut rng = StdRng::seed_from_u64(8);
    let num = |o: &Map<String, Value>, f: &str| o.get(f).and_then(Value::as_f64);
    let big = number_list(&mut rng, 13_000);
    let half = number_list(&mut rng, 5_000);
    let chain = number_list(&mut rng, 2_000);
    let has =
        |list: &[(String, f64)], x: Option<f64>| x.is_some_and(|x| list.iter().any(|v| v.1 == x));
    type Check<'c> = Box<dyn Fn(&Map<String, Value>) -> bool + 'c>;
    let cases: Vec<(String, Check<'_>)> = vec![
        (
            format!("pop IN ({})", joined(&big, ",")),
            Box::new(|o| has(&big, num(o, "pop"))),
        ),
        (
            format!("score IN ({})", joined(&big, ",")),
            Box::new(|o| has(&big, num(o, "score"))),
        ),
        (
            format!("pop NOT IN ({})", joined(&big, ",")),
            Box::new(|o| !has(&big, num(o, "pop"))),
        ),
        (
            format!(
                "score NOT IN ({}) OR pop IN ({})",
                joined(&half, ","),
                joined(&half, ",")
            ),
            Box::new(|o| !has(&half, num(o, "score")) || has(&half, num(o, "pop"))),
        ),
        (
            format!(
                "pop IN ({}) AND pop IN ({}) AND tag != \"t3\"",
                joined(&half, ","),
                joined(&chain, ",")
            ),
            Box::new(|o| {
                has(&half, num(o, "pop")) && has(&chain, num(o, "pop")) && o["tag"] != json!("t3")
            }),
        ),
        (
            chain
                .iter()
                .map(|(t, _)| format!("score = {t}"))
                .collect::<Vec<_>>()
                .join(" OR "),
            Box::new(|o| has(&chain, num(o, "score"))),
        ),
        (
            chain
                .iter()
                .map(|(t, _)| format!("pop != {t}"))
                .collect::<Vec<_>>()
                .join(" AND "),
            Box::new(|o| !has(&chain, num(o, "pop"))),
        ),
        (
            "pop >= -10 AND pop < 10 AND pop != 3 OR score > 40 OR score <= -49.5 OR score = 0"
                .into(),
            Box::new(|o| {
                let p = num(o, "pop").unwrap();
                let s = num(o, "score");
                ((-10.0..10.0).contains(&p) && p != 3.0)
                    || s.is_some_and(|s| s > 40.0 || s <= -49.5 || s == 0.0)
            }),
        ),
        (
            "pop > 5 AND pop < 5 OR pop >= 7 AND pop <= 7 OR pop IN (8, 8.0, 9.5)".into(),
            Box::new(|o| matches!(num(o, "pop"), Some(7.0 | 8.0))),
        ),
    ];
    for (src, check) in &cases {
        assert!(
            src.len() <= fathom_engine::filter::MAX_FILTER_LEN,
            "{}",
            src.len()
        );
        let plan = index.filter(src).unwrap_or_else(|e| panic!("{e}"));
        let want: Vec<u32> = (0..n as u32)
            .filter(|&i| check(&attrs[i as usize]))
            .collect();
        assert!(
            !want.is_empty() && want.len() < n,
            "{}",
            &src[..40.min(src.len())]
        );
        let got: Vec<u32> = plan.matches().iter().collect();
        assert_eq!(got, want, "{}", &src[..60.min(src.len())]);
        assert_eq!(plan.count(), want.len() as u64);
    }
    // A list that names no stored value is known to match nothing as soon
    // as it is planned, from the field's sorted rows, without a scan.
    let none: Vec<String> = (0..13_000).map(|i| (1000 + i % 9000).to_string()).collect();
    let plan = index
        .filter(&format!("pop IN ({})", none.join(",")))
        .unwrap();
    assert!(plan.is_exact());
    assert_eq!(plan.count(), 0);
    // So is one matching a few items: the planner counts it exactly.
    let few = index.filter("pop IN (1, 2, 3.0, -4, 1)").unwrap();
    assert!(few.is_exact());
    let want = attrs
        .iter()
        .filter(|o| matches!(num(o, "pop"), Some(1.0 | 2.0 | 3.0 | -4.0)))
        .count();
    assert_eq!(few.count(), want as u64);
}

/// A cancel that lets `free` checks pass and stops every later one.
struct StopAfter {
    free: usize,
    checks: std::cell::Cell<usize>,
}

impl fathom_engine::search::Cancel for StopAfter {
    fn cancelled(&self) -> bool {
        self.checks.set(self.checks.get() + 1);
        self.checks.get() > self.free
    }
}

/// Planning a filter and listing its matches stop at the call's deadline or
/// on its cancel flag, with the error the traversal returns, and leave the
/// plan as it was: a later call without a deadline still gets the answer.
#[test]
fn filter_planning_and_matching_stop_at_the_deadline_and_on_cancel() {
    use fathom_engine::admit::Admit;
    use fathom_engine::search::{Deadline, Flag, NoCancel};
    use std::sync::atomic::AtomicBool;
    use std::time::Instant;
    let n = 3000;
    let (_dir, index, attrs) = numeric_fixture(n);
    // 13,000 values, a sixth of `pop`'s among them: most items match.
    let list: Vec<String> = (0..13_000)
        .map(|i| match i % 13 {
            0 => -(200 + i % 101),
            _ => 301 + i % 5000,
        })
        .map(|v| v.to_string())
        .collect();
    let expr = format!("pop NOT IN ({}) OR score > 1000", list.join(","));
    let expired = Deadline(Instant::now());
    let set = AtomicBool::new(true);
    assert!(matches!(
        index.filter_within(&expr, &expired),
        Err(Error::DeadlineExceeded)
    ));
    assert!(matches!(
        index.filter_within(&expr, &Flag(&set)),
        Err(Error::Cancelled)
    ));
    // Planning checks as it goes, not only once at the start.
    let stop = StopAfter {
        free: 1,
        checks: Default::default(),
    };
    assert!(matches!(
        index.filter_within(&expr, &stop),
        Err(Error::DeadlineExceeded)
    ));
    // A plan whose matches are listed on first need (most items match).
    let plan = index.filter_within(&expr, &NoCancel).unwrap();
    assert!(!plan.is_exact());
    assert!(matches!(
        plan.matches_within(&Flag(&set)),
        Err(Error::Cancelled)
    ));
    // Listing checks every few thousand items, not only at the start.
    let stop = StopAfter {
        free: 1,
        checks: Default::default(),
    };
    assert!(plan.matches_within(&stop).is_err());
    // A search past its deadline stops before listing them.
    let mut params = SearchParams::new(10, 32);
    params.plan = Plan::Exact;
    params.deadline = Some(Instant::now());
    let mut out = Vec::new();
    let q = queries(1, 8, SEED).remove(0);
    assert!(matches!(
        index.search_filtered_into(&q, &params, Some(&plan), &mut out),
        Err(Error::DeadlineExceeded)
    ));
    assert!(!plan.is_exact());
    // The plan still answers in full afterwards.
    let mut params = SearchParams::new(10, 32);
    params.plan = Plan::Exact;
    index
        .search_filtered_into(&q, &params, Some(&plan), &mut out)
        .unwrap();
    assert_eq!(out.len(), 10);
    assert!(plan.is_exact());
    let want = (0..n).filter(|&i| plan.admit(i as u32)).count();
    assert_eq!(plan.count(), want as u64);
    let brute = attrs
        .iter()
        .filter(|o| !(-300..=-200).contains(&o["pop"].as_i64().unwrap()))
        .count();
    assert_eq!(want, brute);
    assert!(want > n / 2 && want < n, "{want}");
}

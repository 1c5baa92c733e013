//! Value graphs: a graph over the items of one attribute value, walked by
//! filters that require the value.

use crate::common;

use std::collections::HashSet;

use common::*;
use fathom_engine::builder::{BuildOptions, BuilderKind, BuiltIndex, Dataset};
use fathom_engine::index::Plan;
use fathom_engine::snapshot::{verify, Snapshot};
use fathom_engine::{Index, Metric, SearchParams, Storage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

const N: usize = 12_000;
const DIM: usize = 16;

/// Rows with a language given by the quadrant of their first two
/// coordinates (so it follows the vector: a query from one quadrant is far
/// from the items of another), a 20% flag and a year.
fn catalog(with_attributes: bool) -> (BuiltIndex, Vec<serde_json::Value>) {
    let (ds, attrs) = catalog_dataset(with_attributes);
    let built = build_with(ds, Metric::L2, Storage::F32, BuilderKind::Fathom, 100);
    (built, attrs)
}

/// The rows and attributes of [`catalog`], plus a `tier` held by 40%.
fn catalog_dataset(with_attributes: bool) -> (Dataset, Vec<serde_json::Value>) {
    let mut ds = dataset(N, DIM, SEED);
    let mut rng = StdRng::seed_from_u64(SEED);
    let attrs: Vec<serde_json::Value> = ds
        .vectors
        .chunks_exact(DIM)
        .map(|v| {
            let lang = format!("q{}", usize::from(v[0] > 0.0) * 2 + usize::from(v[1] > 0.0));
            json!({
                "lang": lang,
                "flag": rng.random_bool(0.2),
                "year": rng.random_range(1990..2026),
                "tier": if rng.random_bool(0.4) { "gold" } else { "free" },
            })
        })
        .collect();
    if with_attributes {
        ds.attributes = Some(table(attrs.iter().map(|a| a.to_string())));
    }
    (ds, attrs)
}

fn matches(a: &serde_json::Value, filter: &str) -> bool {
    let year = a["year"].as_i64().unwrap_or(0);
    let flag = a["flag"].as_bool().unwrap_or(false);
    match filter {
        "flag = true" => flag,
        "flag = true AND year >= 2000" => flag && year >= 2000,
        lang => lang.ends_with(&format!("\"{}\"", a["lang"].as_str().unwrap_or(""))),
    }
}

#[test]
fn filters_requiring_a_value_walk_its_graph_and_find_the_true_neighbours() {
    let (mut built, attrs) = catalog(true);
    built
        .add_value_graphs(&["lang".into(), "flag".into()])
        .unwrap();
    // Four languages of about a quarter each, and flag = true (20%); the
    // 80% flag = false is past the share that gets a graph.
    assert_eq!(built.value_graphs.as_ref().unwrap().len(), 5);
    // Asked for at build, as `build --value-graphs` does.
    let (ds, _) = catalog_dataset(true);
    let opts = BuildOptions {
        threads: 1,
        seed: SEED,
        metric: Metric::L2,
        value_graphs: vec!["lang".into(), "flag".into()],
        ..BuildOptions::default()
    };
    let direct = fathom_engine::builder::build(ds, std::path::Path::new("t"), &opts, &|_, _| {});
    assert_eq!(direct.unwrap().value_graphs.map(|g| g.len()), Some(5));
    let dir = tempfile::tempdir().unwrap();
    let path = write(&built, dir.path(), "v.fathom");
    let snap = Snapshot::open(&path).unwrap();
    assert_eq!(snap.format_version(), 3);
    assert!(verify(&snap).is_ok(), "{:?}", verify(&snap).problems);
    let index = Index::from_snapshot(snap);
    let qs = queries(60, DIM, SEED);
    let rows = &built.vectors;
    let l2 = |q: &[f32], i: usize| -> f32 {
        q.iter()
            .zip(&rows[i * DIM..(i + 1) * DIM])
            .map(|(a, b)| (a - b) * (a - b))
            .sum()
    };
    let k = 10;
    let filters = [
        "lang = \"q0\"",
        "lang = \"q3\"",
        "flag = true",
        "flag = true AND year >= 2000",
    ];
    for filter in filters {
        let plan = index.filter(filter).unwrap();
        let (mut found, mut bridged, mut graph_bridged) = (0usize, 0u64, 0u64);
        for q in &qs {
            let mut truth: Vec<(f32, usize)> = (0..N)
                .filter(|&i| matches(&attrs[i], filter))
                .map(|i| (l2(q, i), i))
                .collect();
            truth.sort_by(|a, b| a.0.total_cmp(&b.0));
            let truth: HashSet<u32> = truth.iter().take(k).map(|t| t.1 as u32).collect();
            let mut out = Vec::new();
            let stats = index
                .search_filtered_into(q, &SearchParams::new(k, 48), Some(&plan), &mut out)
                .unwrap();
            bridged += stats.bridged;
            assert_eq!(out.len(), k, "{filter}");
            for h in &out {
                assert!(matches(&attrs[h.id as usize], filter), "{filter}: {}", h.id);
            }
            found += out.iter().filter(|h| truth.contains(&h.id)).count();
            let mut params = SearchParams::new(k, 48);
            params.plan = Plan::Graph;
            let mut out = Vec::new();
            graph_bridged += index
                .search_filtered_into(q, &params, Some(&plan), &mut out)
                .unwrap()
                .bridged;
        }
        let recall = found as f64 / (qs.len() * k) as f64;
        // Measured 0.97–1.0 on these filters.
        assert!(recall >= 0.9, "{filter}: recall {recall}");
        // The main graph's filtered traversal bridges through turned-away
        // nodes; a value's own graph turns none away for the value itself.
        assert!(graph_bridged > 0, "{filter}");
        if !filter.contains("AND") {
            assert_eq!(bridged, 0, "{filter}");
        }
    }
}

#[test]
fn value_graphs_refuse_fields_without_values_and_builds_without_attributes() {
    let (mut built, _) = catalog(true);
    let e = built.add_value_graphs(&["year".into()]).unwrap_err();
    assert!(e.to_string().contains("\"year\" is int"), "{e}");
    let e = built.add_value_graphs(&["genre".into()]).unwrap_err();
    assert!(e.to_string().contains("unknown field \"genre\""), "{e}");
    let (mut bare, _) = catalog(false);
    let e = bare.add_value_graphs(&["lang".into()]).unwrap_err();
    assert!(e.to_string().contains("need attributes"), "{e}");
}

#[test]
fn verify_finds_a_value_graph_missing_an_item_of_its_value() {
    let (mut built, _) = catalog(true);
    built.add_value_graphs(&["lang".into()]).unwrap();
    let graphs = built.value_graphs.as_mut().unwrap();
    // The first graph's first member becomes an item of another language.
    let first = graphs.members[0];
    let other = (0..N as u32)
        .find(|i| !graphs.members[..graphs.directory[2] as usize].contains(i))
        .unwrap();
    assert_ne!(first, other);
    graphs.members[0] = other;
    graphs.members[..graphs.directory[2] as usize].sort_unstable();
    let dir = tempfile::tempdir().unwrap();
    let path = write(&built, dir.path(), "bad.fathom");
    let report = verify(&Snapshot::open(&path).unwrap());
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("does not hold exactly its items")),
        "{:?}",
        report.problems
    );
}

#[test]
fn a_compacted_base_keeps_the_value_graphs_of_the_old_one() {
    use fathom_engine::layers::{self, publish, Layered};
    let (mut built, _) = catalog(true);
    built.add_value_graphs(&["lang".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("idx");
    let base = publish::plan_new_folder(&folder).unwrap();
    built.write(&base, "test").unwrap();
    layers::create(&folder, &base).unwrap();
    let before = Layered::open(&folder).unwrap();
    assert_eq!(before.layers()[0].value_graph_fields(), ["lang"]);
    layers::compact_build(&folder, 1).unwrap();
    let after = Layered::open(&folder).unwrap();
    assert_ne!(after.manifest, before.manifest);
    let base = &after.layers()[0];
    assert_eq!(base.value_graph_fields(), ["lang"]);
    assert_eq!(base.snapshot().value_graphs().map(|g| g.len()), Some(4));
}

#[test]
fn each_shard_of_a_sharded_build_gets_the_value_graphs_of_its_items() {
    use fathom_engine::shards::{self, PartitionChoice, Sharded};
    let (ds, _) = catalog_dataset(true);
    let opts = BuildOptions {
        threads: 1,
        seed: SEED,
        metric: Metric::L2,
        value_graphs: vec!["tier".into()],
        ..BuildOptions::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("sharded");
    shards::build_sharded(&folder, ds, 2, &PartitionChoice::Hash, &opts, &|_| {}).unwrap();
    let open = Sharded::open_with(&folder, None, &|p| Index::open(p)).unwrap();
    for shard in open.shards() {
        // "gold" (40%, about 2,400 items a shard) has a graph; "free" is
        // past half the shard.
        let base = &shard.layers()[0];
        assert_eq!(base.value_graph_fields(), ["tier"]);
        assert_eq!(base.snapshot().value_graphs().map(|g| g.len()), Some(1));
    }
}

/// A value directory whose entries were overwritten (ranges past their
/// sections, a top level past any graph, members out of order) opens, is
/// searched through the main graph or what of it still fits, never
/// panics, and fails `verify`.
#[test]
fn a_damaged_value_directory_is_searched_safely_and_fails_verify() {
    use fathom_engine::snapshot::SectionKind;
    let (mut built, attrs) = catalog(true);
    built
        .add_value_graphs(&["lang".into(), "flag".into()])
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = write(&built, dir.path(), "v.fathom");
    let (dir_at, members_at) = {
        let snap = Snapshot::open(&path).unwrap();
        let entry = |k| snap.section_entry(k).unwrap().offset as usize;
        (
            entry(SectionKind::ValueDirectory),
            entry(SectionKind::ValueMembers),
        )
    };
    let mut bytes = std::fs::read(&path).unwrap();
    let mut put = |at: usize, v: u64| bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
    put(dir_at + 2 * 8, u64::MAX / 2); // graph 0: members past the section
    put(dir_at + 64 + 7 * 8, 200); // graph 1: a top level of 200
    put(dir_at + 128 + 6 * 8, u64::MAX); // graph 2: entry point past u32
    bytes[members_at..members_at + 64].fill(0xff); // members past the index
    std::fs::write(&path, &bytes).unwrap();
    let snap = Snapshot::open(&path).unwrap();
    assert!(!verify(&snap).is_ok());
    let index = Index::from_snapshot(snap);
    for filter in [
        "lang = \"q0\"",
        "lang = \"q1\"",
        "lang = \"q2\"",
        "flag = true",
    ] {
        let plan = index.filter(filter).unwrap();
        for q in queries(10, DIM, SEED).iter() {
            let mut out = Vec::new();
            index
                .search_filtered_into(q, &SearchParams::new(10, 32), Some(&plan), &mut out)
                .unwrap();
            assert_eq!(out.len(), 10, "{filter}");
            assert!(
                out.iter().all(|h| matches(&attrs[h.id as usize], filter)),
                "{filter}"
            );
        }
    }
}

//! A layered index (base + deltas + tombstones) against a brute-force oracle
//! over its live items: upserts, deletes that survive a reopen, re-adds,
//! unknown ids reported, incompatible deltas refused, and compaction that
//! keeps every delete, including one that lands while it runs.

use crate::common;

use std::path::Path;

use common::*;
use fathom_engine::builder::{BuilderKind, Dataset};
use fathom_engine::layers::{self, Layered};
use fathom_engine::retrieve::{retrieve, Call};
use fathom_engine::{Metric, SearchParams, Storage};

const DIM: usize = 16;
const N: usize = 2000;

fn write_layer(ds: Dataset, path: &Path) {
    let built = build_with(ds, Metric::L2, Storage::F32, BuilderKind::Fathom, 100);
    built.write(path, "test").unwrap();
}

fn items(n: usize, seed: u64, prefix: &str) -> Dataset {
    let mut ds = dataset(n, DIM, seed);
    ds.ids = (0..n).map(|i| format!("{prefix}{i:05}")).collect();
    ds
}

/// The live items: id → vector, applying layers in order and deletions.
fn oracle(layered: &Layered) -> Vec<(String, Vec<f32>)> {
    let ds = layers::live_dataset(layered).unwrap();
    ds.ids
        .into_iter()
        .zip(ds.vectors.chunks_exact(DIM).map(<[f32]>::to_vec))
        .collect()
}

fn search(layered: &Layered, q: &[f32], k: usize, ef: usize) -> Vec<(String, f32)> {
    let sources = layered.sources("t", &[], 0);
    let call = Call {
        vector: q,
        params: SearchParams::new(k, ef),
        ..Call::default()
    };
    retrieve(&sources, &call)
        .unwrap()
        .hits
        .iter()
        .map(|h| {
            (
                sources[h.source as usize].index.id(h.node).to_string(),
                h.distance,
            )
        })
        .collect()
}

fn exact(live: &[(String, Vec<f32>)], q: &[f32], k: usize) -> Vec<String> {
    let mut d: Vec<(f32, &str)> = live
        .iter()
        .map(|(id, v)| {
            (
                v.iter().zip(q).map(|(a, b)| (a - b) * (a - b)).sum(),
                id.as_str(),
            )
        })
        .collect();
    d.sort_by(|a, b| a.0.total_cmp(&b.0));
    d.iter().take(k).map(|x| x.1.to_string()).collect()
}

#[test]
fn layers_upsert_delete_reopen_and_compact() {
    let dir = tempfile::tempdir().unwrap();
    let idx = dir.path().join("tracks");
    let base = dir.path().join("base.fathom");
    write_layer(items(N, SEED, "t"), &base);
    layers::create(&idx, &base).unwrap();
    assert!(layers::is_layered(&idx));
    assert!(layers::create(&idx, &base).is_err(), "created twice");

    // Delta 1: 100 new items. Delta 2: new versions of t00000..t00049,
    // moved onto query 0 so they must win its search.
    let qs = queries(20, DIM, SEED);
    let delta = layers::next_layer_path(&idx).unwrap();
    write_layer(items(100, SEED + 1, "new"), &delta);
    layers::add_delta(&idx, &delta).unwrap();
    let mut moved = items(50, SEED + 2, "t");
    for (i, row) in moved.vectors.chunks_exact_mut(DIM).enumerate() {
        for (x, q) in row.iter_mut().zip(&qs[0]) {
            *x = q + 0.001 * i as f32;
        }
    }
    let delta = layers::next_layer_path(&idx).unwrap();
    write_layer(moved, &delta);
    layers::add_delta(&idx, &delta).unwrap();

    let l = Layered::open(&idx).unwrap();
    assert_eq!(l.layers().len(), 3);
    assert_eq!(l.live(), (N + 100) as u64);
    assert_eq!(l.dead_count(), 50);
    let hits = search(&l, &qs[0], 10, 0);
    let ids: Vec<&str> = hits.iter().map(|h| h.0.as_str()).collect();
    assert_eq!(ids, (0..10).map(|i| format!("t{i:05}")).collect::<Vec<_>>());
    assert!(hits[0].1 < 1e-4, "the new version, at the query: {hits:?}");

    // Deletes: two live ids, one unknown, one twice.
    let gone = ["t00000", "new00007", "nope", "t00000"];
    let report = layers::delete(&idx, &gone, Some(&l)).unwrap();
    assert_eq!(report.deleted, ["t00000", "new00007"]);
    assert_eq!(report.unknown, ["nope"]);
    // The open set does not change; a reopen (as after a restart) applies
    // them, from every layer.
    let l = Layered::open(&idx).unwrap();
    assert_eq!(l.live(), (N + 100 - 2) as u64);
    assert!(l.find("t00000").is_none() && l.find("new00007").is_none());
    let live = oracle(&l);
    assert_eq!(live.len(), N + 98);
    let mut found = 0;
    for q in &qs {
        let got = search(&l, q, 10, 64);
        assert_eq!(got.len(), 10);
        assert!(got.iter().all(|(id, _)| id != "t00000" && id != "new00007"));
        let want = exact(&live, q, 10);
        found += got.iter().filter(|(id, _)| want.contains(id)).count();
    }
    let recall = found as f64 / (10 * qs.len()) as f64;
    assert!(recall >= 0.9, "recall@10 {recall} over the layers");
    // Exhaustive: exactly the oracle.
    for q in &qs[..5] {
        let got: Vec<String> = search(&l, q, 10, 4 * N).into_iter().map(|h| h.0).collect();
        assert_eq!(got, exact(&live, q, 10));
    }

    // A re-added id comes back from the newer layer only.
    let mut again = items(1, SEED + 3, "t");
    again.ids = vec!["t00000".into()];
    let delta = layers::next_layer_path(&idx).unwrap();
    write_layer(again, &delta);
    layers::add_delta(&idx, &delta).unwrap();
    let l = Layered::open(&idx).unwrap();
    assert_eq!(l.find("t00000").map(|f| f.0), Some(3));
    assert_eq!(l.live(), (N + 100 - 1) as u64);

    // An incompatible delta is refused and leaves the index as it was.
    let bad = layers::next_layer_path(&idx).unwrap();
    let mut wide = dataset(10, DIM * 2, 1);
    wide.ids = (0..10).map(|i| format!("w{i}")).collect();
    build_with(wide, Metric::L2, Storage::F32, BuilderKind::Fathom, 50)
        .write(&bad, "test")
        .unwrap();
    let e = layers::add_delta(&idx, &bad).unwrap_err();
    assert!(e.to_string().contains("dimension"), "{e}");
    assert_eq!(Layered::open(&idx).unwrap().layers().len(), 4);

    // Compaction keeps every live item, and a delete that lands while the
    // new base is written.
    let before = oracle(&l);
    let name = layers::compact(&idx, |layered, path| {
        let r = layers::delete(&idx, &["t00001"], None).unwrap();
        assert_eq!(r.deleted, ["t00001"]);
        let ds = layers::live_dataset(layered)?;
        let opts = layers::options_like(&layered.layers()[0], 2);
        fathom_engine::builder::build(ds, Path::new("c"), &opts, &|_, _| {})?.write(path, "c")?;
        Ok(())
    })
    .unwrap();
    let c = Layered::open(&idx).unwrap();
    assert_eq!(c.manifest.layers, [name]);
    assert_eq!(c.live(), before.len() as u64 - 1);
    assert!(
        c.find("t00001").is_none(),
        "the delete during compaction was lost"
    );
    assert!(c.find("t00000").is_some());
    let files: Vec<String> = std::fs::read_dir(&idx)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".fathom"))
        .collect();
    assert_eq!(files.len(), 1, "old layers removed: {files:?}");
    let live = oracle(&c);
    for q in &qs[..5] {
        let got: Vec<String> = search(&c, q, 10, 4 * N).into_iter().map(|h| h.0).collect();
        assert_eq!(got, exact(&live, q, 10));
    }
    // A torn last tombstone record (a crash mid-append, never
    // acknowledged) is ignored, a whole line without a checksum too; a
    // valid record after them means damage in the middle.
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(idx.join(layers::TOMBSTONES))
        .unwrap();
    f.write_all(b"99\tt000").unwrap();
    assert_eq!(Layered::open(&idx).unwrap().live(), c.live());
    f.write_all(b"02\n").unwrap();
    assert_eq!(Layered::open(&idx).unwrap().live(), c.live());
    let body = "99\tt00002";
    let sum = xxhash_rust::xxh3::xxh3_64(body.as_bytes());
    f.write_all(format!("{body}\t{sum:016x}\n").as_bytes())
        .unwrap();
    assert!(Layered::open(&idx).is_err());
}

fn add(idx: &Path, ds: Dataset) {
    let path = layers::next_layer_path(idx).unwrap();
    write_layer(ds, &path);
    layers::add_delta(idx, &path).unwrap();
}

fn named(n: usize, seed: u64, ids: impl IntoIterator<Item = String>) -> Dataset {
    let mut ds = items(n, seed, "x");
    ds.ids = ids.into_iter().collect();
    assert_eq!(ds.ids.len(), n);
    ds
}

fn live_map(l: &Layered) -> std::collections::BTreeMap<String, Vec<f32>> {
    oracle(l).into_iter().collect()
}

#[test]
fn merged_deltas_keep_upserts_deletes_and_their_order() {
    let dir = tempfile::tempdir().unwrap();
    let idx = dir.path().join("tracks");
    let base = dir.path().join("base.fathom");
    write_layer(items(N, SEED, "t"), &base);
    layers::create(&idx, &base).unwrap();
    let del = |ids: &[&str]| {
        let r = layers::delete(&idx, ids, None).unwrap();
        assert_eq!(r.deleted, ids, "all live before");
    };
    // Layer 2: new items and new versions of t00000..t00009.
    add(
        &idx,
        named(
            30,
            SEED + 1,
            (0..20)
                .map(|i| format!("a{i:05}"))
                .chain((0..10).map(|i| format!("t{i:05}"))),
        ),
    );
    del(&["a00003", "t00001", "t00020"]);
    // Layer 3 brings a00003 back after its delete.
    add(
        &idx,
        named(
            21,
            SEED + 2,
            (0..20)
                .map(|i| format!("b{i:05}"))
                .chain(["a00003".to_string()]),
        ),
    );
    del(&["b00005", "t00000"]);
    // Layer 4 brings t00000 back; c00002 is deleted after it.
    add(
        &idx,
        named(
            11,
            SEED + 3,
            (0..10)
                .map(|i| format!("c{i:05}"))
                .chain(["t00000".to_string()]),
        ),
    );
    del(&["c00002"]);
    let l = Layered::open(&idx).unwrap();
    assert_eq!(l.layers().len(), 4);
    assert_eq!(layers::merge_from(&l), Some(1), "all three deltas fit");
    let before = live_map(&l);
    let t0 = l.layers()[3].vector_of("t00000").unwrap().to_vec();

    // The merge, with a delete of a merged copy landing while it is built.
    let (name, count) = layers::merge(&idx, |layered, from, path| {
        del(&["a00004"]);
        let ds = layers::live_dataset_from(layered, from)?;
        let opts = layers::options_like(&layered.layers()[0], 2);
        fathom_engine::builder::build(ds, Path::new("m"), &opts, &|_, _| {})?.write(path, "m")?;
        Ok(())
    })
    .unwrap()
    .expect("merged");
    assert_eq!(count, 3);
    let m = Layered::open(&idx).unwrap();
    assert_eq!(m.manifest.layers, [l.manifest.layers[0].clone(), name]);
    let mut want = before.clone();
    want.remove("a00004");
    assert_eq!(live_map(&m), want, "the live set, less the late delete");
    for gone in ["a00004", "t00001", "t00020", "b00005", "c00002"] {
        assert!(m.find(gone).is_none(), "{gone} came back");
    }
    assert_eq!(
        m.find("a00003").map(|f| f.0),
        Some(1),
        "re-added, then merged"
    );
    assert_eq!(m.layers()[1].vector_of("t00000").unwrap(), &t0[..]);
    assert_eq!(
        m.find("t00005").map(|f| f.0),
        Some(1),
        "the upsert still replaces the base's copy"
    );
    let files = std::fs::read_dir(&idx)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".fathom")
        })
        .count();
    assert_eq!(files, 2, "merged layers removed");

    // Searches over the merged set against the oracle: exhaustive ones
    // exactly, graph ones (bounded past the base) close and only live.
    let live = oracle(&m);
    let qs = queries(20, DIM, SEED);
    for q in &qs[..5] {
        let got: Vec<String> = search(&m, q, 10, 4 * N).into_iter().map(|h| h.0).collect();
        assert_eq!(got, exact(&live, q, 10));
    }
    let mut found = 0;
    for q in &qs {
        let got = search(&m, q, 10, 32);
        assert_eq!(got.len(), 10);
        assert!(got.iter().all(|(id, _)| want.contains_key(id)));
        let truth = exact(&live, q, 10);
        found += got.iter().filter(|(id, _)| truth.contains(id)).count();
    }
    assert!(
        found as f64 / 200.0 >= 0.9,
        "recall {}",
        found as f64 / 200.0
    );

    // A delete after the merge reaches the merged copy; a re-add beats it.
    del(&["t00000"]);
    assert!(Layered::open(&idx).unwrap().find("t00000").is_none());
    add(&idx, named(1, SEED + 4, ["t00000".to_string()]));
    let l = Layered::open(&idx).unwrap();
    assert_eq!(l.find("t00000").map(|f| f.0), Some(2));
    let before = live_map(&l);
    let (_, count) = layers::merge_deltas(&idx, 2).unwrap().expect("merged");
    assert_eq!(count, 2);
    let m = Layered::open(&idx).unwrap();
    assert_eq!(m.layers().len(), 2);
    assert_eq!(live_map(&m), before);

    // A delta past the cap (a quarter of the base) is not merged.
    add(&idx, items(N / 4, SEED + 5, "big"));
    let l = Layered::open(&idx).unwrap();
    assert_eq!(layers::merge_from(&l), None);
    assert_eq!(layers::merge_deltas(&idx, 2).unwrap(), None);
    assert_eq!(Layered::open(&idx).unwrap().layers().len(), 3);
}

#[test]
fn bounded_layers_keep_exclusions_tombstones_and_minimums() {
    bounded_case(Storage::F32);
}

/// The bound is placed in i8 traversal distance through the base's rows.
#[test]
fn bounded_i8_layers_keep_exclusions_tombstones_and_minimums() {
    bounded_case(Storage::I8);
}

fn bounded_case(storage: Storage) {
    let dir = tempfile::tempdir().unwrap();
    let idx = dir.path().join("tracks");
    let base = dir.path().join("base.fathom");
    build_with(
        items(N, SEED, "t"),
        Metric::L2,
        storage,
        BuilderKind::Fathom,
        100,
    )
    .write(&base, "test")
    .unwrap();
    layers::create(&idx, &base).unwrap();
    let quantizer = fathom_engine::Index::open(idx.join(layers::layer_name(1)))
        .unwrap()
        .snapshot()
        .quantizer()
        .cloned();
    let add = |ds: Dataset| {
        let path = layers::next_layer_path(&idx).unwrap();
        let mut built = build_with(ds, Metric::L2, storage, BuilderKind::Fathom, 100);
        built.quantizer = quantizer.clone();
        built.write(&path, "test").unwrap();
        layers::add_delta(&idx, &path).unwrap();
    };
    add(items(200, SEED + 1, "d"));
    // Upserts of base items, and deletes in both layers.
    add(named(
        50,
        SEED + 2,
        (0..50).map(|i| format!("t{:05}", i * 7)),
    ));
    let gone: Vec<String> = (0..40)
        .map(|i| format!("t{:05}", i * 13 + 1))
        .chain((0..20).map(|i| format!("d{:05}", i * 3)))
        .collect();
    layers::delete(&idx, &gone, None).unwrap();
    let l = Layered::open(&idx).unwrap();
    let other_path = dir.path().join("other.fathom");
    write_layer(items(300, SEED + 9, "o"), &other_path);
    let other = fathom_engine::Index::open(&other_path).unwrap();
    let live = oracle(&l);
    let qs = queries(30, DIM, SEED);
    let exclude: Vec<String> = (0..100).map(|i| format!("t{:05}", i * 5)).collect();
    let (mut found, mut bounded_work, mut separate_work) = (0, 0, 0);
    for q in &qs {
        // Layered alone: only live, non-excluded items, k of them.
        let sources = l.sources("t", &[], 0);
        let call = Call {
            vector: q,
            exclude_ids: &exclude,
            params: SearchParams::new(10, 24),
            ..Call::default()
        };
        let r = retrieve(&sources, &call).unwrap();
        bounded_work += r.stats.distances;
        let ids: Vec<&str> = r
            .hits
            .iter()
            .map(|h| sources[h.source as usize].index.id(h.node))
            .collect();
        assert_eq!(ids.len(), 10);
        assert!(r.hits.windows(2).all(|w| w[0].distance <= w[1].distance));
        let admitted: Vec<(String, Vec<f32>)> = live
            .iter()
            .filter(|(id, _)| !exclude.contains(id))
            .cloned()
            .collect();
        assert!(ids.iter().all(|id| admitted.iter().any(|(a, _)| a == id)));
        let truth = exact(&admitted, q, 10);
        found += ids
            .iter()
            .filter(|id| truth.iter().any(|t| t == *id))
            .count();
        // The same layers searched each on its own, unbounded.
        for (i, s) in sources.iter().enumerate() {
            let mut out = Vec::new();
            let away = s.index.nodes_of(&exclude, true).unwrap();
            let admission = fathom_engine::admit::Admission {
                filter: None,
                excluded: Some(&away),
                deleted: Some(l.dead(i)),
            };
            separate_work += s
                .index
                .search_admitted_into(q, &call.params, &admission, &mut out)
                .unwrap()
                .distances;
        }
        // Federated with another index that must get 3 hits: the bound of
        // the layers never starves it (and theirs never applies to it).
        let mut sources = l.sources("t", &[], 0);
        sources.push(fathom_engine::retrieve::Source::index("o", &other, None, 1));
        let call = Call {
            min_per_index: 3,
            ..call
        };
        let hits = retrieve(&sources, &call).unwrap().hits;
        assert_eq!(hits.len(), 10);
        let from_other = hits
            .iter()
            .filter(|h| h.source as usize == sources.len() - 1);
        assert!(from_other.count() >= 3);
    }
    let recall = found as f64 / (10 * qs.len()) as f64;
    assert!(recall >= 0.9, "recall@10 {recall} with the bound");
    assert!(
        bounded_work < separate_work,
        "the later layers stop at the base's k-th: {bounded_work} vs {separate_work}"
    );
}

/// `kind` of an item, from its id's number: the same for every copy of an
/// id, so upserts keep it.
fn kind_of(id: &str) -> &'static str {
    let n: usize = id[1..].parse().unwrap();
    if n.is_multiple_of(3) {
        "a"
    } else {
        "b"
    }
}

fn with_kinds(mut ds: Dataset) -> Dataset {
    let mut attrs = fathom_engine::attributes::AttributesBuilder::new();
    for (row, id) in ds.ids.iter().enumerate() {
        let obj = serde_json::json!({ "kind": kind_of(id) });
        attrs.push(obj.as_object().unwrap(), row + 1).unwrap();
    }
    ds.attributes = Some(attrs.finish());
    ds
}

/// One admit check: a hit must match the filter, not be excluded and not
/// be deleted or replaced, in every layer; exhaustive searches then equal
/// the oracle over the live items.
#[test]
fn tombstones_filters_and_exclusions_admit_together() {
    let dir = tempfile::tempdir().unwrap();
    let idx = dir.path().join("tracks");
    let base = dir.path().join("base.fathom");
    write_layer(with_kinds(items(600, 3, "t")), &base);
    layers::create(&idx, &base).unwrap();
    add(&idx, with_kinds(items(90, 4, "d")));
    add(
        &idx,
        with_kinds(named(30, 5, (0..30).map(|i| format!("t{:05}", i * 9)))),
    );
    let gone: Vec<String> = (0..60)
        .map(|i| format!("t{:05}", i * 4))
        .chain((0..15).map(|i| format!("d{:05}", i * 6)))
        .collect();
    layers::delete(&idx, &gone, None).unwrap();
    let l = Layered::open(&idx).unwrap();
    let expr = "kind = \"a\"";
    let plans: Vec<_> = l
        .layers()
        .iter()
        .map(|layer| Some(layer.filter(expr).unwrap()))
        .collect();
    let sources = l.sources("t", &plans, 0);
    let exclude: Vec<String> = (0..40).map(|i| format!("t{:05}", i * 3)).collect();
    let admitted: Vec<(String, Vec<f32>)> = oracle(&l)
        .into_iter()
        .filter(|(id, _)| kind_of(id) == "a" && !exclude.contains(id))
        .collect();
    assert!(admitted.len() > 50, "{}", admitted.len());
    for q in &queries(20, DIM, 7) {
        let call = Call {
            vector: q,
            exclude_ids: &exclude,
            params: SearchParams::new(15, 1000),
            ..Call::default()
        };
        let got: Vec<String> = retrieve(&sources, &call)
            .unwrap()
            .hits
            .iter()
            .map(|h| sources[h.source as usize].index.id(h.node).to_string())
            .collect();
        assert_eq!(got, exact(&admitted, q, 15));
    }
}

//! A layered index (base + deltas + tombstones) against a brute-force oracle
//! over its live items: upserts, deletes that survive a reopen, re-adds,
//! unknown ids reported, incompatible deltas refused, and compaction that
//! keeps every delete, including one that lands while it runs.

mod common;

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
    // A torn last tombstone line (a crash mid-append, never acknowledged)
    // is ignored; a malformed complete line is corruption.
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(idx.join(layers::TOMBSTONES))
        .unwrap();
    f.write_all(b"99\tt000").unwrap();
    assert_eq!(Layered::open(&idx).unwrap().live(), c.live());
    f.write_all(b"02\n").unwrap();
    assert_eq!(Layered::open(&idx).unwrap().live(), c.live() - 1);
    f.write_all(b"garbage\n").unwrap();
    assert!(Layered::open(&idx).is_err());
}

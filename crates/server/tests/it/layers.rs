//! A layered index folder served over gRPC: searches over base + deltas
//! against a brute-force oracle of the live items, Delete (durable, applied
//! before the reply, kept over a restart, unknown ids reported), a delta and
//! a compaction picked up while serving, ListIndexes and metrics showing the
//! layers, and refusals (a manifest naming a missing file, a corrupt
//! tombstone file, Delete on a single snapshot) that keep the old set
//! serving.

use crate::common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use fathom_engine::builder::{build, BuildOptions, Dataset};
use fathom_engine::layers;
use fathom_engine::{synth, Metric};
use fathom_server::catalog::{Catalog, LoadOptions};
use fathom_server::client::Client;
use fathom_server::proto as pb;
use fathom_server::Limits;
use tonic::Code;

const BASE: usize = 600;

fn items(n: usize, seed: u64, ids: impl Fn(usize) -> String) -> Dataset {
    Dataset {
        dim: DIM,
        vectors: synth::clustered(n, DIM, 6, seed),
        ids: (0..n).map(ids).collect(),
        attributes: None,
    }
}

fn write(ds: Dataset, path: &Path) {
    let opts = BuildOptions {
        metric: Metric::L2,
        ef_construction: 64,
        threads: 1,
        ..Default::default()
    };
    build(ds, Path::new("test"), &opts, &|_, _| {})
        .unwrap()
        .write(path, "test")
        .unwrap();
}

/// A folder `dir/name/` with a base of `BASE` items `b:NNNN`.
fn layered(dir: &Path, name: &str) -> PathBuf {
    let folder = dir.join(name);
    let tmp = dir.join(format!(".{name}-base.fathom"));
    write(items(BASE, 1, |i| format!("b:{i:04}")), &tmp);
    layers::create(&folder, &tmp).unwrap();
    folder
}

fn add_delta(folder: &Path, ds: Dataset) {
    let path = layers::next_layer_path(folder).unwrap();
    write(ds, &path);
    layers::add_delta(folder, &path).unwrap();
}

/// The live items, id → vector, as the engine defines them (each layer's
/// stored copy, later layers winning, tombstones applied).
fn live(folder: &Path) -> HashMap<String, Vec<f32>> {
    let l = layers::Layered::open(folder).unwrap();
    let ds = layers::live_dataset(&l).unwrap();
    ds.ids
        .into_iter()
        .zip(ds.vectors.chunks_exact(DIM).map(<[f32]>::to_vec))
        .collect()
}

fn exact(live: &HashMap<String, Vec<f32>>, q: &[f32], k: usize) -> Vec<String> {
    let mut d: Vec<(f32, &String)> = live
        .iter()
        .map(|(id, v)| (v.iter().zip(q).map(|(a, b)| (a - b) * (a - b)).sum(), id))
        .collect();
    d.sort_by(|a, b| a.0.total_cmp(&b.0));
    d.into_iter().take(k).map(|(_, id)| id.clone()).collect()
}

async fn ids(client: &Client, q: &[f32], k: u32) -> Vec<String> {
    let hits = client
        .search_with(pb::SearchRequest {
            index: "tracks".into(),
            vector: q.to_vec(),
            k,
            ef: 400,
            ..Default::default()
        })
        .await
        .unwrap();
    hits.into_iter().map(|h| h.id).collect()
}

/// Recall@k of the served answers against the oracle, over `qs`.
async fn recall(client: &Client, live: &HashMap<String, Vec<f32>>, qs: &[Vec<f32>]) -> f64 {
    let k = 10;
    let mut found = 0;
    for q in qs {
        let got = ids(client, q, k as u32).await;
        assert!(got.iter().all(|id| live.contains_key(id)), "{got:?}");
        let want = exact(live, q, k);
        found += got.iter().filter(|id| want.contains(id)).count();
    }
    found as f64 / (k * qs.len()) as f64
}

async fn info(client: &Client) -> pb::IndexInfo {
    let list = client.list_indexes().await.unwrap();
    list.into_iter().find(|i| i.name == "tracks").unwrap()
}

fn quiet() -> fathom_server::ServeConfig {
    config(Limits::default(), false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layered_folder_serves_deletes_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let folder = layered(dir.path(), "tracks");
    // A delta that replaces 20 base items and adds 40.
    add_delta(
        &folder,
        items(60, 2, |i| {
            if i < 20 {
                format!("b:{:04}", i * 7)
            } else {
                format!("d:{i:04}")
            }
        }),
    );
    let (server, client) = serve(&[("tracks", folder.clone())], None, quiet()).await;
    let qs = queries(30, DIM, 5);

    let oracle = live(&folder);
    assert_eq!(oracle.len(), BASE + 40);
    let r = recall(&client, &oracle, &qs).await;
    assert!(r >= 0.9, "recall {r} over base + delta");
    // An upserted item is found by its new vector, from the delta.
    let moved = &oracle["b:0007"];
    assert_eq!(ids(&client, moved, 1).await, ["b:0007"]);

    let i = info(&client).await;
    assert_eq!(i.layers.len(), 2);
    assert_eq!(i.count, (BASE + 40) as u64);
    assert_eq!(i.deleted, 20);
    assert_eq!(i.layers[0].dead, 20);
    assert!(i.oldest_delta_built_at_unix_s > 0);

    // Delete the nearest items of a query, a replaced one, and ids that
    // are not there: the reply comes after they stop being returned.
    let q = &qs[0];
    let mut doomed = ids(&client, q, 5).await;
    doomed.push("b:0014".into());
    let mut asked = doomed.clone();
    asked.extend(["nope".to_string(), doomed[0].clone()]);
    let r = client.delete("tracks", &asked).await.unwrap();
    assert_eq!(r.deleted, 6);
    assert_eq!(r.unknown, ["nope"]);
    assert_eq!(r.live, (BASE + 40 - 6) as u64);
    let after = ids(&client, q, 50).await;
    for id in &doomed {
        assert!(!after.contains(id), "{id} deleted but returned");
    }
    assert_eq!(after.len(), 50, "k hits when k live items exist");
    let r = client.delete("tracks", &doomed[..1]).await.unwrap();
    assert_eq!((r.deleted, r.unknown.len()), (0, 1), "deleted twice");
    let got = client.get_items("tracks", &doomed[..1]).await;
    assert_eq!(code(got), Code::NotFound);

    let oracle = live(&folder);
    assert_eq!(oracle.len(), BASE + 40 - 6);
    let r = recall(&client, &oracle, &qs).await;
    assert!(r >= 0.9, "recall {r} after deletes");
    assert_eq!(info(&client).await.count, oracle.len() as u64);

    // A restart reads the same set from disk.
    server.shutdown().await.unwrap();
    let (server, client) = serve(&[("tracks", folder.clone())], None, quiet()).await;
    let after = ids(&client, q, 50).await;
    for id in &doomed {
        assert!(!after.contains(id), "{id} returned after a restart");
    }
    assert_eq!(info(&client).await.count, oracle.len() as u64);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deltas_and_compaction_are_picked_up_while_serving() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("catalog");
    std::fs::create_dir(&catalog).unwrap();
    let folder = layered(&catalog, "tracks");
    // Served from the catalog folder, and watched.
    let (server, client) = serve(&[], Some(&catalog), config(Limits::default(), true)).await;
    assert_eq!(info(&client).await.layers.len(), 1);

    let fresh = items(30, 3, |i| format!("new:{i:02}"));
    let probe = fresh.vectors[..DIM].to_vec();
    add_delta(&folder, fresh);
    eventually("the delta is served", Duration::from_secs(10), || {
        let (client, probe) = (client.clone(), probe.clone());
        async move { ids(&client, &probe, 1).await == ["new:00"] }
    })
    .await;
    assert_eq!(info(&client).await.layers.len(), 2);

    // A delete by the CLI's path (the file, not the RPC) is picked up too.
    layers::delete(&folder, &["new:00"], None).unwrap();
    eventually("the file delete is served", Duration::from_secs(10), || {
        let (client, probe) = (client.clone(), probe.clone());
        async move {
            !ids(&client, &probe, 5)
                .await
                .contains(&"new:00".to_string())
        }
    })
    .await;

    // Compact while searches run: none fails, and the new base takes over.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (client, stop) = (client.clone(), Arc::clone(&stop));
        tokio::spawn(async move {
            let qs = queries(20, DIM, 8);
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let got = ids(&client, &qs[n % qs.len()], 10).await;
                assert_eq!(got.len(), 10);
                assert!(!got.contains(&"new:00".to_string()));
                n += 1;
            }
            n
        })
    };
    let compacted = {
        let folder = folder.clone();
        tokio::task::spawn_blocking(move || layers::compact_build(&folder, 1).unwrap())
            .await
            .unwrap()
    };
    eventually(
        "the compacted base is served",
        Duration::from_secs(10),
        || {
            let client = client.clone();
            let compacted = compacted.clone();
            async move {
                let i = info(&client).await;
                i.layers.len() == 1 && i.layers[0].file == compacted
            }
        },
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(load.await.unwrap() > 0);
    let i = info(&client).await;
    assert_eq!((i.count, i.deleted), ((BASE + 29) as u64, 0));
    assert_eq!(ids(&client, &probe, 1).await.len(), 1);
    assert!(!ids(&client, &probe, 5)
        .await
        .contains(&"new:00".to_string()));

    let metrics = http_get(server.metrics_addr().unwrap(), "/metrics").await;
    assert!(
        metrics.contains("fathom_index_layers{index=\"tracks\"} 1"),
        "{metrics}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_manifests_and_tombstones_are_refused_and_the_old_set_serves() {
    let dir = tempfile::tempdir().unwrap();
    let folder = layered(dir.path(), "tracks");
    let single = dir.path().join("single.fathom");
    write(items(50, 4, |i| format!("s:{i}")), &single);
    let (server, client) = serve(
        &[("tracks", folder.clone()), ("single", single)],
        None,
        quiet(),
    )
    .await;
    let q = queries(1, DIM, 9).remove(0);
    let before = ids(&client, &q, 10).await;

    // A manifest naming a layer that is not there.
    let manifest = folder.join(layers::MANIFEST);
    let good = std::fs::read_to_string(&manifest).unwrap();
    let bad = good.replace(
        "\"layer-000001.fathom\"",
        "\"layer-000001.fathom\", \"layer-000002.fathom\"",
    );
    assert_ne!(bad, good);
    std::fs::write(&manifest, &bad).unwrap();
    let e = client.reload(Some("tracks")).await;
    assert_eq!(code(e), Code::FailedPrecondition);
    assert_eq!(ids(&client, &q, 10).await, before);
    assert!(!info(&client).await.last_reload_error.is_empty());
    std::fs::write(&manifest, &good).unwrap();
    client.reload(Some("tracks")).await.unwrap();

    // A tombstone file that is not tombstones.
    std::fs::write(folder.join(layers::TOMBSTONES), "garbage\n").unwrap();
    let e = client.reload(Some("tracks")).await;
    assert_eq!(code(e), Code::DataLoss);
    assert_eq!(ids(&client, &q, 10).await, before);
    // A delete reads the same file and refuses too, deleting nothing.
    let e = client.delete("tracks", &before[..1]).await;
    assert_eq!(code(e), Code::DataLoss);
    assert_eq!(ids(&client, &q, 10).await, before);

    // A single snapshot has nothing to delete from; unknown index.
    let e = client.delete("single", &["s:1"]).await;
    assert_eq!(code(e), Code::FailedPrecondition);
    let e = client.delete("nope", &["s:1"]).await;
    assert_eq!(code(e), Code::NotFound);
    server.shutdown().await.unwrap();
}

/// A FIFO put in place of a served folder's tombstones: a Delete answers
/// at once instead of hanging to its deadline, and once the file is back,
/// reloads and deletes work again (no reload is left stuck).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_in_a_served_folder_neither_hangs_nor_wedges_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let folder = layered(dir.path(), "tracks");
    let (server, client) = serve(&[("tracks", folder.clone())], None, quiet()).await;
    let q = queries(1, DIM, 9).remove(0);
    let before = ids(&client, &q, 10).await;
    let tombstones = folder.join(layers::TOMBSTONES);
    let made = std::process::Command::new("mkfifo")
        .arg(&tombstones)
        .status()
        .unwrap();
    assert!(made.success());
    let client = client.with_timeout(Duration::from_secs(5));
    let started = std::time::Instant::now();
    let e = client.delete("tracks", &before[..1]).await.unwrap_err();
    assert_ne!(e.code(), Code::DeadlineExceeded, "{e}");
    assert!(e.to_string().contains("FIFO"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the delete waited on the FIFO"
    );
    let e = client.reload(Some("tracks")).await.unwrap_err();
    assert!(e.to_string().contains("FIFO"), "{e}");
    assert_eq!(ids(&client, &q, 10).await, before, "the old set serves on");
    std::fs::remove_file(&tombstones).unwrap();
    client.reload(Some("tracks")).await.unwrap();
    let r = client.delete("tracks", &before[..1]).await.unwrap();
    assert_eq!(r.deleted, 1);
    assert!(!ids(&client, &q, 10).await.contains(&before[0]));
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_written_in_place_withdraws_only_its_index() {
    let dir = tempfile::tempdir().unwrap();
    let folder = layered(dir.path(), "tracks");
    let (server, client) = serve(
        &[("tracks", folder.clone()), ("other", prebuilt("v0"))],
        None,
        config(Limits::default(), true),
    )
    .await;
    let q = queries(1, DIM, 9).remove(0);
    assert_eq!(ids(&client, &q, 10).await.len(), 10);
    // `cp` over a served layer: truncate, then write something else.
    let layer = folder.join("layer-000001.fathom");
    std::fs::write(&layer, b"not a snapshot").unwrap();
    eventually("the index is withdrawn", Duration::from_secs(10), || {
        let client = client.clone();
        async move { !info(&client).await.withdrawn.is_empty() }
    })
    .await;
    let e = client
        .search_with(pb::SearchRequest {
            index: "tracks".into(),
            vector: q.clone(),
            k: 10,
            ..Default::default()
        })
        .await;
    assert_eq!(code(e), Code::DataLoss);
    let other = client.search("other", &q, 5, 0).await.unwrap();
    assert_eq!(other.len(), 5);
    server.shutdown().await.unwrap();
}

/// Deletions must be applied to a catalog opened afresh exactly as the
/// engine applies them: the catalog is not a second implementation.
#[test]
fn the_catalog_serves_what_the_engine_opens() {
    let dir = tempfile::tempdir().unwrap();
    let folder = layered(dir.path(), "tracks");
    add_delta(&folder, items(10, 6, |i| format!("b:{i:04}")));
    layers::delete(&folder, &["b:0100", "b:0001"], None).unwrap();
    let catalog = Catalog::open(
        &[("tracks".into(), folder.clone())],
        None,
        LoadOptions::default(),
    )
    .unwrap();
    let loaded = catalog.get("tracks").unwrap();
    assert_eq!(loaded.searchable().live(), live(&folder).len() as u64);
    assert!(loaded.searchable().find("b:0100").is_none());
    assert!(loaded.searchable().find("b:0001").is_none());
    let (index, node) = loaded.searchable().find("b:0002").unwrap();
    assert_eq!(
        index.snapshot().vectors_f32().row(node),
        &live(&folder)["b:0002"][..]
    );
}

//! Hot reload under load loses no call; a watched folder swaps good snapshots in and refuses corrupt ones.
#![allow(unused_imports)]

use crate::common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::*;
use fathom_engine::builder::{build, BuildOptions, Dataset};
use fathom_engine::{synth, Index, Metric, SearchParams};
use fathom_server::catalog::{Catalog, LoadOptions};
use fathom_server::client::{Client, ClientError};
use fathom_server::proto as pb;
use fathom_server::{self as server, Limits, RunningServer, SearchThreads, ServeConfig};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_has_no_failed_requests() {
    let dir = tempfile::tempdir().unwrap();
    let path = deploy("v0", dir.path(), "items");
    let (server, client) = serve(&[("items", path)], None, config(Limits::default(), false)).await;
    let q = queries(1, DIM, 8).remove(0);

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let mut loaders = Vec::new();
    for _ in 0..2 {
        let (c, q, stop, ok) = (client.clone(), q.clone(), stop.clone(), ok.clone());
        loaders.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut calls = 0;
            while !stop.load(Ordering::Relaxed) && calls < 200_000 {
                calls += 1;
                match c.search("items", &q, 10, 0).await {
                    Ok(h) if h.len() == 10 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(h) => failures.push(format!("{} hits", h.len())),
                    Err(e) => failures.push(e.to_string()),
                }
            }
            failures
        }));
    }
    for v in ["v1", "v2", "v3", "v1"] {
        let before = ok.load(Ordering::Relaxed);
        deploy(v, dir.path(), "items");
        let infos = client.reload(Some("items")).await.unwrap();
        assert_eq!(infos[0].name, "items");
        let hits = client.search("items", &q, 10, 0).await.unwrap();
        assert_eq!(version(&hits), v, "answers come from the new snapshot");
        // Let the background load overlap each swap.
        eventually("background searches", Duration::from_secs(10), || {
            let ok = ok.clone();
            async move { ok.load(Ordering::Relaxed) >= before + 50 }
        })
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    for l in loaders {
        let failures = l.await.unwrap();
        assert!(
            failures.is_empty(),
            "failed requests during reload: {failures:?}"
        );
    }
    assert!(ok.load(Ordering::Relaxed) >= 200);
    let metrics = server.metrics().render();
    assert!(
        metrics.contains("fathom_index_reloads_total{index=\"items\"} 4"),
        "{metrics}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watched_folder_swaps_good_snapshots_and_refuses_corrupt_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = deploy("v0", dir.path(), "items");
    let (server, client) = serve(&[], Some(dir.path()), config(Limits::default(), true)).await;
    let q = queries(1, DIM, 8).remove(0);
    assert_eq!(
        version(&client.search("items", &q, 10, 0).await.unwrap()),
        "v0"
    );

    // A good snapshot renamed into the folder is picked up without a call.
    deploy("v1", dir.path(), "items");
    eventually("the watcher to swap in v1", Duration::from_secs(10), || {
        let c = client.clone();
        let q = q.clone();
        async move { version(&c.search("items", &q, 10, 0).await.unwrap()) == "v1" }
    })
    .await;

    // A new file adds a new index.
    deploy("v2", dir.path(), "more");
    eventually("the watcher to add `more`", Duration::from_secs(10), || {
        let c = client.clone();
        async move { c.list_indexes().await.unwrap().len() == 2 }
    })
    .await;
    assert_eq!(
        version(&client.search("more", &q, 10, 0).await.unwrap()),
        "v2"
    );

    // A corrupt one is refused: the error shows, v1 keeps serving.
    let tmp = dir.path().join(".items.bad");
    corrupt_copy(&prebuilt("v3"), &tmp);
    std::fs::rename(&tmp, &path).unwrap();
    eventually(
        "the refusal to show in ListIndexes",
        Duration::from_secs(10),
        || {
            let c = client.clone();
            async move {
                let list = c.list_indexes().await.unwrap();
                !list
                    .iter()
                    .find(|i| i.name == "items")
                    .unwrap()
                    .last_reload_error
                    .is_empty()
            }
        },
    )
    .await;
    let info = client
        .list_indexes()
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.name == "items")
        .unwrap();
    assert!(
        info.last_reload_error.contains("corrupt"),
        "{}",
        info.last_reload_error
    );
    assert!(info.last_reload_error_at_unix_ms > 0);
    assert_eq!(
        version(&client.search("items", &q, 10, 0).await.unwrap()),
        "v1"
    );
    // The Reload call reports the damage as DATA_LOSS.
    assert_eq!(code(client.reload(Some("items")).await), Code::DataLoss);
    assert_eq!(code(client.reload(None).await), Code::DataLoss);
    assert_eq!(
        version(&client.search("items", &q, 10, 0).await.unwrap()),
        "v1"
    );
    let metrics = server.metrics().render();
    assert!(
        metrics.contains("fathom_index_reload_failures_total{index=\"items\"} 3"),
        "{metrics}"
    );

    // Fixed on disk: the next reload succeeds and clears the error.
    deploy("v3", dir.path(), "items");
    eventually("the watcher to swap in v3", Duration::from_secs(10), || {
        let c = client.clone();
        let q = q.clone();
        async move { version(&c.search("items", &q, 10, 0).await.unwrap()) == "v3" }
    })
    .await;
    let list = client.list_indexes().await.unwrap();
    assert!(list.iter().all(|i| i.last_reload_error.is_empty()));
    server.shutdown().await.unwrap();
}

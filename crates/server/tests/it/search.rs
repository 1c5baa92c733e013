//! Search and BatchSearch over gRPC equal in-process search, and every error gets its status code.
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
async fn search_and_batch_equal_in_process_search() {
    for threads in [
        SearchThreads::Auto,
        SearchThreads::Inline,
        SearchThreads::Blocking,
        SearchThreads::Pool(2),
    ] {
        search_and_batch_equal_in_process_search_with(threads).await;
    }
}

async fn search_and_batch_equal_in_process_search_with(threads: SearchThreads) {
    let path = prebuilt("v0");
    let config = ServeConfig {
        search_threads: threads,
        ..config(Limits::default(), false)
    };
    let (server, client) = serve(&[("items", path.clone())], None, config).await;
    let index = Index::open(&path).unwrap();
    let qs = queries(40, DIM, 77);
    for (k, ef) in [(10, 0), (10, 48), (1, 16), (25, 200)] {
        let params = SearchParams::new(k, ef);
        let mut expected = Vec::new();
        for q in &qs {
            let want: Vec<(String, f32)> = index
                .search(q, &params)
                .unwrap()
                .iter()
                .map(|n| (index.id(n.id).to_string(), n.distance))
                .collect();
            let got: Vec<(String, f32)> = client
                .search("items", q, k as u32, ef as u32)
                .await
                .unwrap()
                .into_iter()
                .map(|h| (h.id, h.distance))
                .collect();
            assert_eq!(got, want, "Search k={k} ef={ef} ({threads})");
            expected.push(want);
        }
        let batch = client
            .batch_search("items", &qs, k as u32, ef as u32)
            .await
            .unwrap();
        let batch: Vec<Vec<(String, f32)>> = batch
            .into_iter()
            .map(|hits| hits.into_iter().map(|h| (h.id, h.distance)).collect())
            .collect();
        assert_eq!(batch, expected, "BatchSearch k={k} ef={ef} ({threads})");
    }
    // An empty batch is a valid, empty answer.
    let none: Vec<Vec<f32>> = Vec::new();
    assert!(client
        .batch_search("items", &none, 5, 0)
        .await
        .unwrap()
        .is_empty());

    // GetItems returns the stored vectors, in request order.
    let items = client
        .get_items("items", &["v0:000007", "v0:000001"][..])
        .await
        .unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0].id, "v0:000007");
    assert_eq!(items[0].vector, index.vector_of("v0:000007").unwrap());
    assert_eq!(items[1].vector, index.vector_of("v0:000001").unwrap());
    // Searching by a stored vector finds that item first.
    let hits = client
        .search("items", &items[0].vector, 3, 0)
        .await
        .unwrap();
    assert_eq!(hits[0].id, "v0:000007");

    let list = client.list_indexes().await.unwrap();
    assert_eq!(list.len(), 1);
    let info = &list[0];
    assert_eq!(info.name, "items");
    assert_eq!(info.count, N as u64);
    assert_eq!(info.dim, DIM as u32);
    assert_eq!(info.metric, "cosine");
    assert_eq!(info.storage, "f32");
    assert_eq!(info.format_version, fathom_engine::snapshot::FORMAT_VERSION);
    assert_eq!(info.default_ef, 32);
    assert!(info.built_at_unix_s > 0 && info.loaded_at_unix_ms > 0);
    assert!(info.path.ends_with("v0.fathom"));
    assert!(info.last_reload_error.is_empty());
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_error_gets_its_status_code() {
    let limits = Limits {
        max_k: 100,
        max_ef: 500,
        max_batch: 8,
        max_message_bytes: 4096,
        max_concurrency: 64,
        max_exclusions: 5,
        max_examples: 4,
        ..Limits::default()
    };
    let (server, client) = serve(&[("items", prebuilt("v0"))], None, config(limits, false)).await;
    let q = queries(1, DIM, 5).remove(0);

    assert_eq!(code(client.search("nope", &q, 10, 0).await), Code::NotFound);
    assert_eq!(
        code(client.search("items", &q[..DIM - 1], 10, 0).await),
        Code::InvalidArgument
    );
    let mut nan = q.clone();
    nan[3] = f32::NAN;
    assert_eq!(
        code(client.search("items", &nan, 10, 0).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(client.search("items", &[0.0; DIM], 10, 0).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(client.search("items", &q, 0, 0).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(client.search("items", &q, 101, 0).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(client.search("items", &q, 10, 501).await),
        Code::InvalidArgument
    );
    // Batches: too many queries, or one bad query among good ones.
    let nine = vec![q.clone(); 9];
    assert_eq!(
        code(client.batch_search("items", &nine, 10, 0).await),
        Code::InvalidArgument
    );
    let mixed = vec![q.clone(), q[..4].to_vec()];
    let err = client
        .batch_search("items", &mixed, 10, 0)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.to_string().contains("query 1"), "{err}");
    assert_eq!(
        code(client.batch_search("nope", &mixed, 10, 0).await),
        Code::NotFound
    );
    // A request over the message size limit.
    let huge = vec![0.5f32; 2000];
    assert_eq!(
        code(client.search("items", &huge, 10, 0).await),
        Code::ResourceExhausted
    );
    // GetItems: unknown ids, too many ids, unknown index.
    assert_eq!(
        code(client.get_items("items", &["v0:000001", "nope"][..]).await),
        Code::NotFound
    );
    assert_eq!(
        code(client.get_items("items", &["v0:000001"; 9][..]).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(client.get_items("nope", &["v0:000001"][..]).await),
        Code::NotFound
    );
    assert_eq!(code(client.reload(Some("nope")).await), Code::NotFound);

    // A deadline that has passed by the time the search runs.
    let short = Client::connect(&server.local_addr().to_string(), Duration::from_secs(5))
        .await
        .unwrap()
        .with_timeout(Duration::from_micros(1));
    assert_eq!(
        code(short.search("items", &q, 10, 16).await),
        Code::DeadlineExceeded
    );

    // The server still answers normally after all of that.
    assert_eq!(client.search("items", &q, 10, 0).await.unwrap().len(), 10);
    server.shutdown().await.unwrap();
}

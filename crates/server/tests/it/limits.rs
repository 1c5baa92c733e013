//! Deadlines stop long batches, and overload is shed with RESOURCE_EXHAUSTED.
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
async fn deadline_stops_a_long_batch() {
    let _heavy = HEAVY.lock().await;
    let (server, client) = serve(
        &[("slow", prebuilt("slow"))],
        None,
        config(slow_limits(8), false),
    )
    .await;
    // Only the grpc-timeout header carries the deadline: the client does
    // not give up on its own, so the answer (and the metric below) must come
    // from the server. A client-side timer racing the server's would make
    // the call CANCELLED on a loaded machine.
    let mut req = tonic::Request::new(pb::BatchSearchRequest {
        index: "slow".into(),
        queries: slow_batch()
            .into_iter()
            .map(|vector| pb::Query {
                vector,
                ..Default::default()
            })
            .collect(),
        k: 10,
        ef: SLOW_EF,
        ..Default::default()
    });
    req.set_timeout(Duration::from_millis(100));
    let start = Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(10), client.raw().batch_search(req))
        .await
        .expect("the server answers by itself");
    assert_eq!(
        answer.map(|_| ()).unwrap_err().code(),
        Code::DeadlineExceeded
    );
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );
    eventually(
        "the server to finish the call",
        Duration::from_secs(2),
        || async { server.in_flight() == 0 },
    )
    .await;
    let metrics = server.metrics().render();
    assert!(
        metrics.contains("fathom_requests_total{code=\"DEADLINE_EXCEEDED\",index=\"slow\",method=\"BatchSearch\"} 1"),
        "{metrics}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_shed_with_resource_exhausted() {
    let _heavy = HEAVY.lock().await;
    let (server, client) = serve(
        &[("slow", prebuilt("slow"))],
        None,
        config(slow_limits(1), false),
    )
    .await;
    let q = queries(1, SLOW_DIM, 3).remove(0);
    let busy = {
        let c = client.clone();
        tokio::spawn(async move { c.batch_search("slow", &slow_batch(), 10, SLOW_EF).await })
    };
    eventually(
        "the slow call to be in flight",
        Duration::from_secs(10),
        || async { server.in_flight() >= 1 },
    )
    .await;
    assert_eq!(
        code(client.search("slow", &q, 10, 0).await),
        Code::ResourceExhausted
    );
    assert_eq!(busy.await.unwrap().unwrap().len(), SLOW_BATCH);
    // The slot is free again.
    assert_eq!(client.search("slow", &q, 10, 0).await.unwrap().len(), 10);
    let metrics = server.metrics().render();
    assert!(metrics.contains("code=\"RESOURCE_EXHAUSTED\""), "{metrics}");
    server.shutdown().await.unwrap();
}

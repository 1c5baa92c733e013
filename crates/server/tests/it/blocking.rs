//! Nothing one caller or one file does holds up the others: a reload stuck
//! opening a file, and work whose caller went away.

use crate::common;

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use fathom_server::client::{Client, ClientError, Hit};
use fathom_server::RunningServer;
use tokio::task::JoinHandle;
use tonic::Code;

/// A FIFO. Dropping this opens it for writing once, so that a reader
/// blocked in `open` (the bug under test) gets an end of file and its
/// thread ends with the test instead of hanging the test process.
struct Fifo(PathBuf);

impl Fifo {
    fn make(path: &Path) -> Fifo {
        let status = std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .expect("mkfifo");
        assert!(status.success());
        Fifo(path.to_path_buf())
    }
}

impl Drop for Fifo {
    fn drop(&mut self) {
        // Fails with ENXIO when no reader has it open: nothing to release.
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&self.0);
    }
}

async fn within<T>(what: &str, limit: Duration, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(limit, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what} did not finish within {limit:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_in_the_catalog_blocks_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let pipes = tempfile::tempdir().unwrap();
    deploy("v0", dir.path(), "a");
    deploy("v1", dir.path(), "b");
    let (server, client) = serve(&[], Some(dir.path()), config(Default::default(), true)).await;
    let client = client.with_timeout(Duration::from_secs(3));
    let fifo = Fifo::make(&pipes.path().join("pipe"));
    // Re-point `b` at the FIFO the way a deploy replaces a file: a symlink
    // renamed over it. The watcher reloads `b`.
    let link = dir.path().join(".b.link");
    std::os::unix::fs::symlink(&fifo.0, &link).unwrap();
    std::fs::rename(&link, dir.path().join("b.fathom")).unwrap();
    // Past the watcher's debounce: the reload has started.
    tokio::time::sleep(Duration::from_millis(400)).await;

    let q = queries(1, DIM, 5).remove(0);
    let limit = Duration::from_secs(2);
    for _ in 0..3 {
        let hits = within(
            "a search on another index",
            limit,
            client.search("a", &q, 5, 0),
        )
        .await;
        assert_eq!(hits.unwrap().len(), 5);
        let list = within("ListIndexes", limit, client.list_indexes()).await;
        assert_eq!(list.unwrap().len(), 2);
        let addr = server.metrics_addr().unwrap();
        within("GET /metrics", limit, http_get(addr, "/metrics")).await;
    }
    // `b` keeps serving its old snapshot.
    let hits = within("a search on b", limit, client.search("b", &q, 5, 0)).await;
    assert_eq!(version(&hits.unwrap()), "v1");
    // The FIFO is refused for what it is, without being opened.
    let e = within("Reload of b", limit, client.reload(Some("b")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    assert!(e.to_string().contains("FIFO"), "{e}");
    let b = client
        .list_indexes()
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.name == "b")
        .unwrap();
    assert!(b.last_reload_error.contains("FIFO"), "{b:?}");

    within("shutdown", Duration::from_secs(5), server.shutdown())
        .await
        .unwrap();
    drop(fifo);
}

/// How long a small Search takes on the slow index, the median of a few.
async fn search_time(client: &Client, q: &[f32]) -> Duration {
    let mut times = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        client.search("slow", q, 10, 0).await.unwrap();
        times.push(start.elapsed());
    }
    times.sort();
    times[times.len() / 2]
}

/// Two callers, each on its own connection, send batches of exhaustive
/// searches (each many seconds of work) with no deadline; returns once both
/// are in flight.
async fn two_heavy_batches(
    server: &RunningServer,
) -> Vec<JoinHandle<Result<Vec<Vec<Hit>>, ClientError>>> {
    let batch: Vec<Vec<f32>> = (0..10).flat_map(|_| slow_batch()).collect();
    let addr = format!("http://{}", server.local_addr());
    let mut callers = Vec::new();
    for _ in 0..2 {
        let c = Client::connect(&addr, Duration::from_secs(5))
            .await
            .unwrap();
        let batch = batch.clone();
        callers.push(tokio::spawn(async move {
            c.batch_search("slow", &batch, 10, SLOW_EF).await
        }));
    }
    eventually(
        "both batches in flight",
        Duration::from_secs(10),
        || async { server.in_flight() >= 2 },
    )
    .await;
    callers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_stops_when_its_caller_goes_away() {
    let _heavy = HEAVY.lock().await;
    let (server, client) = serve(
        &[("slow", prebuilt("slow"))],
        None,
        config(slow_limits(64), false),
    )
    .await;
    let q = queries(1, SLOW_DIM, 3).remove(0);
    let baseline = search_time(&client, &q).await;

    // Two callers send heavy batches, then leave.
    let callers = two_heavy_batches(&server).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for c in callers {
        c.abort();
        assert!(c.await.unwrap_err().is_cancelled());
    }

    let start = Instant::now();
    let hits = client.search("slow", &q, 10, 0).await.unwrap();
    let after = start.elapsed();
    assert_eq!(hits.len(), 10);
    // Behind two orphaned batches this takes seconds; once they stop, about
    // the baseline. The bound is generous for a shared, noisy machine.
    let bound = (baseline * 50).max(Duration::from_millis(500));
    assert!(
        after < bound,
        "a search after the callers left took {after:?} (baseline {baseline:?})"
    );
    // Counted when the server sees each stream reset, which a search that
    // does not wait behind the batches may beat.
    eventually(
        "both batches counted as cancelled",
        Duration::from_secs(10),
        || async {
            server.metrics().render().contains(
                "fathom_requests_total{code=\"CANCELLED\",index=\"slow\",method=\"BatchSearch\"} 2",
            )
        },
    )
    .await;
    server.shutdown().await.unwrap();
}

/// Callers that stay connected and keep the batch lane busy for seconds
/// must not delay single searches: with one queue for both, a search waits
/// for a whole batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_batches_do_not_starve_single_searches() {
    let _heavy = HEAVY.lock().await;
    let (server, client) = serve(
        &[("slow", prebuilt("slow"))],
        None,
        config(slow_limits(64), false),
    )
    .await;
    let q = queries(1, SLOW_DIM, 3).remove(0);
    let baseline = search_time(&client, &q).await;

    let callers = two_heavy_batches(&server).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let during = search_time(&client, &q).await;
    let still_running = server.in_flight() >= 2;
    for c in callers {
        c.abort();
        let _ = c.await;
    }
    assert!(still_running, "the batches ended before the searches did");
    // Behind the batches this takes seconds. The bound is generous for a
    // shared, noisy machine.
    let bound = (baseline * 50).max(Duration::from_millis(500));
    assert!(
        during < bound,
        "a search during two live batches took {during:?} (baseline {baseline:?})"
    );
    server.shutdown().await.unwrap();
}

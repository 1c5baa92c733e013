//! The gRPC server against real clients on 127.0.0.1 (port 0): answers
//! equal in-process search, every error's status code, hot reload under
//! load, refusal of corrupt snapshots, health, reflection, metrics and
//! graceful shutdown. Snapshots are tiny and built in temp folders.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use fathom::build::{build, BuildOptions, Dataset};
use fathom::catalog::{Catalog, LoadOptions};
use fathom::client::{Client, ClientError};
use fathom::server::{self, pb, Limits, RunningServer, SearchThreads, ServeConfig};
use fathom::{synth, Index, Metric, SearchParams};
use tonic::Code;

const DIM: usize = 16;
const N: usize = 2000;
const SLOW_N: usize = 20_000;
const SLOW_DIM: usize = 256;
/// A beam as wide as the slow index: every search is exhaustive.
const SLOW_EF: u32 = SLOW_N as u32;
/// Queries in a slow batch: each is an exhaustive search.
const SLOW_BATCH: usize = 400;

/// Build a clustered snapshot whose ids are `{prefix}:000001`...
fn make_snapshot(path: &Path, n: usize, dim: usize, seed: u64, prefix: &str) {
    let opts = BuildOptions {
        metric: Metric::Cosine,
        ef_construction: 64,
        threads: 2,
        default_ef: 32,
        ..Default::default()
    };
    make_snapshot_with(path, n, dim, seed, prefix, &opts);
}

fn make_snapshot_with(
    path: &Path,
    n: usize,
    dim: usize,
    seed: u64,
    prefix: &str,
    opts: &BuildOptions,
) {
    let vectors = synth::clustered(n, dim, 12, seed);
    let ids = (1..=n).map(|i| format!("{prefix}:{i:06}")).collect();
    let ds = Dataset {
        dim,
        vectors,
        ids,
        attributes: None,
    };
    let built = build(ds, Path::new("test"), opts, &|_, _| {}).expect("build");
    built.write(path, "test").expect("write");
}

/// Snapshots built once per test run and copied where a test needs them.
fn prebuilt(which: &str) -> PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let d = tempfile::tempdir().expect("tempdir");
        for (name, seed) in [("v0", 1), ("v1", 2), ("v2", 3), ("v3", 4)] {
            make_snapshot(&d.path().join(format!("{name}.fathom")), N, DIM, seed, name);
        }
        // Big enough that a batch of exact searches (ef >= n) takes a
        // while, in a small message; its graph quality does not matter.
        let coarse = BuildOptions {
            m: 4,
            ef_construction: 16,
            threads: 2,
            ..Default::default()
        };
        make_snapshot_with(
            &d.path().join("slow.fathom"),
            SLOW_N,
            SLOW_DIM,
            9,
            "slow",
            &coarse,
        );
        d
    });
    dir.path().join(format!("{which}.fathom"))
}

/// Copy a prebuilt snapshot into `dir` under `name`, atomically (copy to a
/// hidden temp file, then rename) as a deploy would.
fn deploy(which: &str, dir: &Path, name: &str) -> PathBuf {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::copy(prebuilt(which), &tmp).expect("copy");
    let dst = dir.join(format!("{name}.fathom"));
    std::fs::rename(&tmp, &dst).expect("rename");
    dst
}

fn config(limits: Limits, watch: bool) -> ServeConfig {
    ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        limits,
        default_ef: None,
        search_threads: SearchThreads::default(),
        watch,
        shutdown_grace: Duration::from_secs(10),
    }
}

async fn serve(
    specs: &[(&str, PathBuf)],
    folder: Option<&Path>,
    config: ServeConfig,
) -> (RunningServer, Client) {
    let specs: Vec<(String, PathBuf)> = specs
        .iter()
        .map(|(n, p)| (n.to_string(), p.clone()))
        .collect();
    let catalog = Catalog::open(&specs, folder, LoadOptions::default()).expect("catalog");
    let server = server::start(config, Arc::new(catalog))
        .await
        .expect("start");
    let client = Client::connect(
        &format!("http://{}", server.local_addr()),
        Duration::from_secs(5),
    )
    .await
    .expect("connect")
    .with_timeout(Duration::from_secs(10));
    (server, client)
}

fn queries(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
    synth::clustered(n, dim, 12, seed)
        .chunks_exact(dim)
        .map(<[f32]>::to_vec)
        .collect()
}

fn code(r: Result<impl std::fmt::Debug, ClientError>) -> Code {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.code(),
    }
}

/// Poll `f` every 10 ms until it returns true; panic after `limit`.
async fn eventually<F, Fut>(what: &str, limit: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

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
    assert_eq!(info.format_version, fathom::snapshot::FORMAT_VERSION);
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

/// Tests that keep the CPU busy on purpose run one at a time, so that their
/// timings do not depend on each other.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A batch of exhaustive searches on the slow index: long enough (a tenth
/// of a second or more) to be caught in flight, in a small message.
fn slow_batch() -> Vec<Vec<f32>> {
    queries(SLOW_BATCH, SLOW_DIM, 31)
}

fn slow_limits(max_concurrency: usize) -> Limits {
    Limits {
        max_batch: 10_000,
        max_ef: SLOW_N,
        max_concurrency,
        ..Limits::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_stops_a_long_batch() {
    let _heavy = HEAVY.lock().await;
    let (server, client) = serve(
        &[("slow", prebuilt("slow"))],
        None,
        config(slow_limits(8), false),
    )
    .await;
    let batch = slow_batch();
    let timed = client.clone().with_timeout(Duration::from_millis(100));
    let start = Instant::now();
    assert_eq!(
        code(timed.batch_search("slow", &batch, 10, SLOW_EF).await),
        Code::DeadlineExceeded
    );
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );
    // The server itself stopped the batch and answered DEADLINE_EXCEEDED
    // (the client may have noticed the deadline first on its own side).
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

/// Which snapshot version answered: the id prefix of the first hit.
fn version(hits: &[pb::Hit]) -> String {
    hits[0].id.split(':').next().unwrap_or_default().to_string()
}

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

/// A copy of `src` with one byte flipped inside the vector section.
fn corrupt_copy(src: &Path, dst: &Path) {
    let mut bytes = std::fs::read(src).unwrap();
    let at = bytes.len() / 3;
    bytes[at] ^= 0x5a;
    std::fs::write(dst, bytes).unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reflection_and_metrics() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    let (server, client) = serve(
        &[("items", prebuilt("v0"))],
        None,
        config(Limits::default(), false),
    )
    .await;
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", server.local_addr()))
            .unwrap()
            .connect()
            .await
            .unwrap();

    let mut health = HealthClient::new(channel.clone());
    for service in ["", server::SERVICE_NAME] {
        let status = health
            .check(HealthCheckRequest {
                service: service.to_string(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(
            status,
            ServingStatus::Serving as i32,
            "health of {service:?}"
        );
    }

    {
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        let mut reflection = ServerReflectionClient::new(channel.clone());
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = reflection
            .server_reflection_info(tokio_stream::once(req))
            .await
            .unwrap()
            .into_inner();
        let resp = stream.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
            panic!("unexpected reflection answer {resp:?}");
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        assert!(
            names.iter().any(|n| n == "fathom.v1.Retrieval"),
            "{names:?}"
        );
        assert!(
            names.iter().any(|n| n == "grpc.health.v1.Health"),
            "{names:?}"
        );
    }
    {
        // grpcurl's default protocol.
        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
        use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
        let mut reflection = ServerReflectionClient::new(channel.clone());
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "fathom.v1.Retrieval".into(),
            )),
        };
        let mut stream = reflection
            .server_reflection_info(tokio_stream::once(req))
            .await
            .unwrap()
            .into_inner();
        let resp = stream.message().await.unwrap().unwrap();
        assert!(
            matches!(resp.message_response, Some(MessageResponse::FileDescriptorResponse(ref f)) if !f.file_descriptor_proto.is_empty()),
            "{resp:?}"
        );
    }

    // Metrics over plain HTTP, after one search and one miss.
    let q = queries(1, DIM, 4).remove(0);
    client.search("items", &q, 5, 0).await.unwrap();
    let _ = client.search("nope", &q, 5, 0).await;
    let body = http_get(server.metrics_addr().unwrap(), "/metrics").await;
    for want in [
        "fathom_requests_total{code=\"OK\",index=\"items\",method=\"Search\"} 1",
        "fathom_requests_total{code=\"NOT_FOUND\",index=\"\",method=\"Search\"} 1",
        "fathom_request_duration_seconds_bucket{code=\"OK\",index=\"items\",method=\"Search\",le=",
        "fathom_requests_in_flight 0",
        "fathom_index_items{index=\"items\"} 2000",
        "fathom_index_file_bytes{index=\"items\"}",
        "fathom_index_reloads_total{index=\"items\"} 0",
        "fathom_index_reload_failures_total{index=\"items\"} 0",
    ] {
        assert!(body.contains(want), "metrics lack {want:?}:\n{body}");
    }
    server.shutdown().await.unwrap();
}

/// A minimal HTTP/1.1 GET over loopback.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_calls() {
    let _heavy = HEAVY.lock().await;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    let (server, client) = serve(
        &[("slow", prebuilt("slow"))],
        None,
        config(slow_limits(8), false),
    )
    .await;
    let addr = server.local_addr();
    let other = Client::connect(&addr.to_string(), Duration::from_secs(5))
        .await
        .unwrap();
    let q = queries(1, SLOW_DIM, 3).remove(0);
    other.search("slow", &q, 10, 0).await.unwrap();
    let health = HealthClient::new(
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );

    let in_flight = {
        let c = client.clone();
        tokio::spawn(async move { c.batch_search("slow", &slow_batch(), 10, SLOW_EF).await })
    };
    eventually(
        "the slow call to be in flight",
        Duration::from_secs(10),
        || async { server.in_flight() >= 1 },
    )
    .await;
    let stopping = tokio::spawn(server.shutdown());
    // Health turns NOT_SERVING and new calls are refused while the slow
    // call is still running.
    eventually(
        "health to report NOT_SERVING",
        Duration::from_secs(5),
        || {
            let mut h = health.clone();
            async move {
                match h
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                {
                    Ok(r) => r.into_inner().status == ServingStatus::NotServing as i32,
                    Err(_) => true,
                }
            }
        },
    )
    .await;
    assert!(
        !in_flight.is_finished(),
        "the slow call ended before shutdown began"
    );
    // Refused by the handler (UNAVAILABLE), or at the transport when the
    // GOAWAY got there first.
    let refused = other.search("slow", &q, 10, 0).await.unwrap_err();
    if refused.to_string().contains("shutting down") {
        assert_eq!(refused.code(), Code::Unavailable, "{refused}");
    }

    // The in-flight call completes with its full answer.
    let results = in_flight.await.unwrap().expect("in-flight call completes");
    assert_eq!(results.len(), SLOW_BATCH);
    assert!(results.iter().all(|r| r.len() == 10));
    stopping.await.unwrap().unwrap();
    // And the port no longer accepts connections.
    assert!(Client::connect(&addr.to_string(), Duration::from_secs(2))
        .await
        .is_err());
}

/// `fathom demo` end to end, as a user runs it: first run builds a (tiny)
/// catalog and serves it, SIGHUP reloads, SIGTERM stops it cleanly; the
/// second run reuses the catalog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_builds_serves_reloads_and_stops_on_sigterm() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("demo-catalog");
    for run in 0..2 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fathom"))
            .args([
                "demo",
                "--tracks",
                "600",
                "--episodes",
                "300",
                "--dim",
                "16",
            ])
            .args([
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "off",
                "--dir",
            ])
            .arg(&catalog)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = |r: Box<dyn std::io::Read + Send>| {
            let (tx, rx) = std::sync::mpsc::channel::<String>();
            std::thread::spawn(move || {
                for l in std::io::BufReader::new(r).lines().map_while(Result::ok) {
                    let _ = tx.send(l);
                }
            });
            rx
        };
        let stdout = lines(Box::new(child.stdout.take().unwrap()));
        let stderr = lines(Box::new(child.stderr.take().unwrap()));
        // Wait (bounded) for "serving on ADDR".
        let deadline = Instant::now() + Duration::from_secs(60);
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = stdout
                .recv_timeout(left)
                .expect("demo never said it was serving");
            if let Some(rest) = line.strip_prefix("fathom demo is serving on ") {
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        let client = Client::connect(&addr, Duration::from_secs(5))
            .await
            .unwrap();
        let item = client.get_items("tracks", &["track:000042"]).await.unwrap();
        let hits = client
            .search("tracks", &item[0].vector, 3, 0)
            .await
            .unwrap();
        assert_eq!(hits[0].id, "track:000042");
        let list = client.list_indexes().await.unwrap();
        let names: Vec<&str> = list.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["episodes", "tracks"]);

        let signal = |sig: &str| {
            let ok = Command::new("kill")
                .args([sig, &child.id().to_string()])
                .status()
                .unwrap()
                .success();
            assert!(ok, "kill {sig}");
        };
        signal("-HUP");
        let mut log = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !log
            .iter()
            .any(|l: &String| l.contains("reloaded") && l.contains("sighup"))
        {
            let left = deadline.saturating_duration_since(Instant::now());
            log.push(stderr.recv_timeout(left).expect("no reload after SIGHUP"));
        }
        signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "demo did not stop on SIGTERM");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert!(status.success(), "demo exited with {status}");
        log.extend(stderr.try_iter());
        let built = log.iter().any(|l| l.starts_with("built "));
        let reused = log.iter().any(|l| l.starts_with("reusing "));
        assert_eq!((built, reused), (run == 0, run == 1), "{log:#?}");
        assert!(log.iter().any(|l| l.contains("stopped")), "{log:#?}");
    }
}

//! The shared harness of the server tests: tiny snapshots built once in temp
//! folders, a real tonic server on 127.0.0.1 (port 0), clients and polling.
#![allow(dead_code, unused_imports)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use fathom_engine::builder::{build, BuildOptions, Dataset};
use fathom_engine::{synth, Index, Metric, SearchParams};
use fathom_server::catalog::{Catalog, LoadOptions};
use fathom_server::client::{Client, ClientError};
use fathom_server::proto as pb;
use fathom_server::{self as server, Limits, RunningServer, SearchThreads, ServeConfig};
use tonic::Code;

/// Tests that keep the CPU busy on purpose run one at a time (within one
/// test binary), so that their timings do not depend on each other.
pub static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub const DIM: usize = 16;
pub const N: usize = 2000;
pub const SLOW_N: usize = 20_000;
pub const SLOW_DIM: usize = 256;
/// A beam as wide as the slow index: every search is exhaustive.
pub const SLOW_EF: u32 = SLOW_N as u32;
/// Queries in a slow batch: each is an exhaustive search.
pub const SLOW_BATCH: usize = 400;

/// Build a clustered snapshot whose ids are `{prefix}:000001`...
pub fn make_snapshot(path: &Path, n: usize, dim: usize, seed: u64, prefix: &str) {
    let opts = BuildOptions {
        metric: Metric::Cosine,
        ef_construction: 64,
        threads: 2,
        default_ef: 32,
        ..Default::default()
    };
    make_snapshot_with(path, n, dim, seed, prefix, &opts);
}

pub fn make_snapshot_with(
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

/// This run's folder for files built once and kept for the whole run, in
/// cargo's per-target temp folder under the process id: a `TempDir` in a
/// static is never dropped, so it would leave each run's snapshots behind
/// (tens of MB per test binary, enough to fill a disk over a day of runs).
/// Folders of runs that have ended are removed when the next one starts.
pub fn run_dir(what: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("runs");
        let exe = std::env::current_exe().expect("test binary path");
        let binary = exe
            .file_name()
            .expect("a file name")
            .to_string_lossy()
            .into_owned();
        for old in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            let file = old.file_name().to_string_lossy().into_owned();
            let pid = file
                .strip_prefix(&format!("{binary}-"))
                .and_then(|p| p.parse::<u32>().ok());
            if pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists()) {
                let _ = std::fs::remove_dir_all(old.path());
            }
        }
        root.join(format!("{binary}-{}", std::process::id()))
    });
    let d = dir.join(what);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("a folder for this run");
    d
}

/// Snapshots built once per test run and copied where a test needs them.
pub fn prebuilt(which: &str) -> PathBuf {
    binary_watchdog();
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let d = run_dir("prebuilt");
        for (name, seed) in [("v0", 1), ("v1", 2), ("v2", 3), ("v3", 4)] {
            make_snapshot(&d.join(format!("{name}.fathom")), N, DIM, seed, name);
        }
        // Big enough that a batch of exact searches (ef >= n) takes a
        // while, in a small message; its graph quality does not matter.
        let coarse = BuildOptions {
            m: 4,
            ef_construction: 16,
            threads: 2,
            ..Default::default()
        };
        make_snapshot_with(&d.join("slow.fathom"), SLOW_N, SLOW_DIM, 9, "slow", &coarse);
        d
    });
    dir.join(format!("{which}.fathom"))
}

/// Copy a prebuilt snapshot into `dir` under `name`, atomically (copy to a
/// hidden temp file, then rename) as a deploy would.
pub fn deploy(which: &str, dir: &Path, name: &str) -> PathBuf {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::copy(prebuilt(which), &tmp).expect("copy");
    let dst = dir.join(format!("{name}.fathom"));
    std::fs::rename(&tmp, &dst).expect("rename");
    dst
}

pub fn config(limits: Limits, watch: bool) -> ServeConfig {
    ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        limits,
        default_ef: None,
        search_threads: SearchThreads::default(),
        watch,
        shutdown_grace: Duration::from_secs(10),
        ..ServeConfig::default()
    }
}

pub async fn serve(
    specs: &[(&str, PathBuf)],
    folder: Option<&Path>,
    config: ServeConfig,
) -> (RunningServer, Client) {
    binary_watchdog();
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

pub fn queries(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
    synth::clustered(n, dim, 12, seed)
        .chunks_exact(dim)
        .map(<[f32]>::to_vec)
        .collect()
}

pub fn code(r: Result<impl std::fmt::Debug, ClientError>) -> Code {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.code(),
    }
}

/// Poll `f` every 10 ms until it returns true; panic after `limit`.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut f: F)
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

/// Ends the test binary if the test holding it runs past `limit`, with
/// every thread's stack on stderr (through gdb, where it is installed), so
/// that a hang shows where it is instead of stalling the whole run.
pub struct Watchdog {
    _done: std::sync::mpsc::Sender<()>,
}

/// A watchdog over the whole test binary, started by the first server or
/// snapshot a test asks for: every binary here runs in well under a
/// minute, so one still running after 15 minutes is stuck somewhere.
pub fn binary_watchdog() {
    static WATCHING: OnceLock<Watchdog> = OnceLock::new();
    WATCHING.get_or_init(|| watchdog("this test binary", Duration::from_secs(900)));
}

pub fn watchdog(test: &'static str, limit: Duration) -> Watchdog {
    let (done, wait) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        use std::io::Write;
        if wait.recv_timeout(limit) == Err(std::sync::mpsc::RecvTimeoutError::Timeout) {
            // Written to the process's stderr, not the harness's capture.
            let _ = writeln!(
                std::io::stderr(),
                "{test} still runs after {limit:?}: stacks follow, then abort"
            );
            let _ = std::process::Command::new("gdb")
                .args(["-p", &std::process::id().to_string(), "-batch"])
                .args(["-ex", "thread apply all bt"])
                .status();
            std::process::abort();
        }
    });
    Watchdog { _done: done }
}

/// Run `test` on a runtime like `#[tokio::test(flavor = "multi_thread",
/// worker_threads = 2)]`'s, under a watchdog that also covers the
/// runtime's shutdown (which waits for every worker thread).
pub fn run_watched<F: std::future::Future>(
    name: &'static str,
    limit: Duration,
    test: F,
) -> F::Output {
    let _watchdog = watchdog(name, limit);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(test)
}

/// A batch of exhaustive searches on the slow index: long enough (a tenth
/// of a second or more) to be caught in flight, in a small message.
pub fn slow_batch() -> Vec<Vec<f32>> {
    queries(SLOW_BATCH, SLOW_DIM, 31)
}

pub fn slow_limits(max_concurrency: usize) -> Limits {
    Limits {
        max_batch: 10_000,
        max_ef: SLOW_N,
        max_concurrency,
        ..Limits::default()
    }
}

/// Which snapshot version answered: the id prefix of the first hit.
pub fn version(hits: &[pb::Hit]) -> String {
    hits[0].id.split(':').next().unwrap_or_default().to_string()
}

/// A copy of `src` with one byte flipped inside the vector section.
pub fn corrupt_copy(src: &Path, dst: &Path) {
    let mut bytes = std::fs::read(src).unwrap();
    let at = bytes.len() / 3;
    bytes[at] ^= 0x5a;
    std::fs::write(dst, bytes).unwrap();
}

/// A minimal HTTP/1.1 GET over loopback.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
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

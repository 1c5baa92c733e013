//! Damaged snapshots.
//!
//! A served snapshot overwritten or truncated in place, under a stream of
//! searches, against a real `fathom serve` process: the process stays up,
//! that index answers DATA_LOSS (never a wrong answer, never INTERNAL), the
//! other index keeps answering OK, and a valid file put back is served
//! again. With `--load memory` the index keeps answering from its copy.
//! (Before the SIGBUS guard, the first search after a truncation killed the
//! process with SIGBUS, exit status 135.)
//!
//! Stored vectors holding NaN: `fathom search` and `serve --no-verify` report
//! corruption (non-zero exit, DATA_LOSS) instead of answering NaN distances.

use crate::common;

use std::collections::BTreeMap;
use std::io::{BufRead, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Reaped;
use fathom_engine::builder::{build, BuildOptions, Dataset};
use fathom_engine::{synth, Metric};
use fathom_server::client::Client;

const N: usize = 3000;
const DIM: usize = 16;

/// A `fathom serve` process, killed when dropped.
struct Server {
    child: Reaped,
    target: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn assert_alive(&mut self, when: &str) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "the server died {when}: {status}\n{}",
                self.log.lock().unwrap().join("\n")
            );
        }
    }
}

fn snapshot(path: &Path, seed: u64, prefix: &str) {
    let vectors = synth::clustered(N, DIM, 12, seed);
    let ds = Dataset {
        dim: DIM,
        vectors,
        ids: (0..N).map(|i| format!("{prefix}:{i:05}")).collect(),
        attributes: None,
    };
    let opts = BuildOptions {
        metric: Metric::Cosine,
        m: 8,
        ef_construction: 40,
        threads: 2,
        default_ef: 32,
        ..Default::default()
    };
    let built = build(ds, Path::new("test"), &opts, &|_, _| {}).unwrap();
    built.write(path, "test").unwrap();
}

struct Fixture {
    _dir: tempfile::TempDir,
    catalog: PathBuf,
    /// Valid snapshots to copy over `tracks.fathom`: ids `v1:`, `v2:`.
    v1: Vec<u8>,
    v2: Vec<u8>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("catalog");
    std::fs::create_dir(&catalog).unwrap();
    let spare = dir.path().join("spare");
    std::fs::create_dir(&spare).unwrap();
    snapshot(&catalog.join("tracks.fathom"), 1, "v1");
    snapshot(&catalog.join("episodes.fathom"), 2, "ep");
    snapshot(&spare.join("v2.fathom"), 3, "v2");
    Fixture {
        v1: std::fs::read(catalog.join("tracks.fathom")).unwrap(),
        v2: std::fs::read(spare.join("v2.fathom")).unwrap(),
        catalog,
        _dir: dir,
    }
}

fn serve(catalog: &Path, extra: &[&str]) -> Server {
    serve_args(&["--catalog".as_ref(), catalog.as_os_str()], extra)
}

fn serve_args(what: &[&std::ffi::OsStr], extra: &[&str]) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_fathom"))
        .arg("serve")
        .args(what)
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "off"])
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut server = Server {
        child: Reaped(child),
        target: String::new(),
        log: Arc::clone(&log),
    };
    let stderr = server.child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            log.lock().unwrap().push(l.clone());
            let _ = tx.send(l);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).expect("the server never listened");
        if line.contains("listening") {
            let grpc = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("grpc="))
                .expect("grpc address");
            server.target = format!("http://{grpc}");
            return server;
        }
    }
}

/// Write `bytes` over `path` in place (same inode), as `cp` does.
fn overwrite(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

fn truncate(path: &Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// Same length, every byte after the first 4 KiB scrambled, in place.
fn scribble(path: &Path) {
    let len = std::fs::metadata(path).unwrap().len();
    let mut x = 0x9e3779b97f4a7c15u64;
    let junk: Vec<u8> = (4096..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(4096)).unwrap();
    f.write_all(&junk).unwrap();
}

/// Searches in a loop on every index, counting outcomes per index: the
/// status code, or for OK the id prefix of the first hit.
struct Load {
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<BTreeMap<(String, String), usize>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn query() -> Vec<f32> {
    synth::clustered_queries(1, DIM, 12, 1).remove(0)
}

async fn outcome(client: &Client, index: &str) -> String {
    match client.search(index, &query(), 10, 0).await {
        Ok(hits) if hits.len() == 10 => {
            format!("OK {}", hits[0].id.split(':').next().unwrap_or(""))
        }
        Ok(hits) => format!("OK with {} hits", hits.len()),
        Err(e) => format!("{:?}", e.code()),
    }
}

impl Load {
    fn start(client: &Client) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Mutex::new(BTreeMap::new()));
        let mut tasks = Vec::new();
        for index in ["tracks", "episodes"] {
            let (c, stop, tally) = (client.clone(), stop.clone(), tally.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let o = outcome(&c, index).await;
                    *tally
                        .lock()
                        .unwrap()
                        .entry((index.to_string(), o))
                        .or_default() += 1;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }));
        }
        Load { stop, tally, tasks }
    }

    async fn finish(self) -> BTreeMap<(String, String), usize> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        Arc::try_unwrap(self.tally).unwrap().into_inner().unwrap()
    }
}

/// Poll `index` until its answer is `want`; panic (with the server log)
/// after 20 s or if the server dies.
async fn until(server: &mut Server, client: &Client, index: &str, want: &str, when: &str) {
    let start = Instant::now();
    loop {
        server.assert_alive(when);
        let got = outcome(client, index).await;
        if got == want {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{when}: {index} answers {got}, not {want}\n{}",
            server.log.lock().unwrap().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn connect(server: &Server) -> Client {
    Client::connect(&server.target, Duration::from_secs(5))
        .await
        .unwrap()
        .with_timeout(Duration::from_secs(10))
}

/// Only OK and DATA_LOSS for the damaged index, only OK for the other.
/// An entry of `allowed` ending in `*` admits any answer starting with it.
fn check_tally(tally: &BTreeMap<(String, String), usize>, allowed: &[&str]) {
    for ((index, o), count) in tally {
        let fine = match index.as_str() {
            "episodes" => o == "OK ep",
            _ => allowed.iter().any(|a| match a.strip_suffix('*') {
                Some(prefix) => o.starts_with(prefix),
                None => a == o,
            }),
        };
        assert!(fine, "{index} answered {o} ({count} times): {tally:?}");
    }
    let ok_episodes = tally
        .get(&("episodes".to_string(), "OK ep".to_string()))
        .copied()
        .unwrap_or(0);
    assert!(ok_episodes >= 20, "{tally:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overwritten_in_place_while_watched() {
    let f = fixture();
    let tracks = f.catalog.join("tracks.fathom");
    let mut server = serve(&f.catalog, &[]);
    let client = connect(&server).await;
    until(&mut server, &client, "tracks", "OK v1", "at start").await;
    let load = Load::start(&client);
    tokio::time::sleep(Duration::from_millis(200)).await;

    truncate(&tracks, f.v1.len() as u64 / 2);
    until(
        &mut server,
        &client,
        "tracks",
        "DataLoss",
        "truncated to half",
    )
    .await;
    truncate(&tracks, 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    until(&mut server, &client, "tracks", "DataLoss", "truncated to 0").await;
    // Copied back in place: the watcher reloads it at close.
    overwrite(&tracks, &f.v1);
    until(&mut server, &client, "tracks", "OK v1", "valid file back").await;
    // `cp other.fathom tracks.fathom`: a different valid snapshot.
    overwrite(&tracks, &f.v2);
    until(
        &mut server,
        &client,
        "tracks",
        "OK v2",
        "another valid file",
    )
    .await;
    // Same length, scrambled: verify refuses it, the mapping shows it.
    scribble(&tracks);
    until(&mut server, &client, "tracks", "DataLoss", "scrambled").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    overwrite(&tracks, &f.v1);
    until(
        &mut server,
        &client,
        "tracks",
        "OK v1",
        "valid file back again",
    )
    .await;

    let tally = load.finish().await;
    server.assert_alive("at the end");
    // A call that was already reading when a write began, before the
    // watcher withdrew the index, may see a mix of old and new bytes: a
    // wrong answer (fewer than k hits, garbled ids), never a crash
    // (docs/server.md). The phases above still had to reach their states.
    check_tally(&tally, &["OK *", "DataLoss"]);
    assert!(
        tally.contains_key(&("tracks".into(), "DataLoss".into())),
        "{tally:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_without_a_watcher_is_caught_at_the_fault() {
    let f = fixture();
    let tracks = f.catalog.join("tracks.fathom");
    // No watcher: only the read past the new end can tell.
    let mut server = serve(&f.catalog, &["--no-watch"]);
    let client = connect(&server).await;
    until(&mut server, &client, "tracks", "OK v1", "at start").await;
    let load = Load::start(&client);
    tokio::time::sleep(Duration::from_millis(200)).await;

    truncate(&tracks, f.v1.len() as u64 / 3);
    until(&mut server, &client, "tracks", "DataLoss", "truncated").await;
    overwrite(&tracks, &f.v1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Withdrawn until reloaded: the old mapping reads zeros now.
    assert_eq!(outcome(&client, "tracks").await, "DataLoss");
    client.reload(Some("tracks")).await.unwrap();
    until(&mut server, &client, "tracks", "OK v1", "reloaded").await;

    let tally = load.finish().await;
    server.assert_alive("at the end");
    check_tally(&tally, &["OK v1", "DataLoss"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_in_memory_keeps_serving() {
    let f = fixture();
    let tracks = f.catalog.join("tracks.fathom");
    let mut server = serve(&f.catalog, &["--load", "memory"]);
    let client = connect(&server).await;
    until(&mut server, &client, "tracks", "OK v1", "at start").await;
    let load = Load::start(&client);
    tokio::time::sleep(Duration::from_millis(200)).await;

    truncate(&tracks, 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    scribble(&tracks);
    overwrite(&tracks, &f.v1[..f.v1.len() / 2]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(outcome(&client, "tracks").await, "OK v1");
    overwrite(&tracks, &f.v2);
    until(&mut server, &client, "tracks", "OK v2", "a valid file").await;

    let tally = load.finish().await;
    server.assert_alive("at the end");
    // The copy never stopped answering.
    check_tally(&tally, &["OK v1", "OK v2"]);
}

/// A copy of `src` whose stored vectors are NaN from row 0 on (its checksum
/// no longer matches: only an unverified open serves it).
fn with_nan_vectors(src: &Path, dst: &Path) {
    let snap = fathom_engine::snapshot::Snapshot::open(src).unwrap();
    let e = snap
        .section_entry(fathom_engine::snapshot::SectionKind::Vectors)
        .unwrap()
        .clone();
    drop(snap);
    let mut bytes = std::fs::read(src).unwrap();
    let section = &mut bytes[e.offset as usize..(e.offset + e.len) as usize];
    for w in section.chunks_exact_mut(4) {
        w.copy_from_slice(&f32::NAN.to_le_bytes());
    }
    std::fs::write(dst, bytes).unwrap();
}

#[test]
fn search_on_nan_vectors_fails_instead_of_answering_nan() {
    let f = fixture();
    let bad = f.catalog.join("bad.fathom.nan");
    with_nan_vectors(&f.catalog.join("tracks.fathom"), &bad);
    let vector = query()
        .iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let out = Command::new(env!("CARGO_BIN_EXE_fathom"))
        .arg("search")
        .arg(&bad)
        .args(["--vector", &vector, "-k", "5"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "exit 0 with: {stdout}");
    assert!(!stdout.contains("NaN"), "{stdout}");
    assert!(stderr.contains("non-finite distance"), "{stderr}");
    // The intact file still searches.
    let ok = Command::new(env!("CARGO_BIN_EXE_fathom"))
        .arg("search")
        .arg(f.catalog.join("tracks.fathom"))
        .args(["--vector", &vector, "-k", "5"])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_no_verify_answers_data_loss_for_nan_vectors() {
    let f = fixture();
    let bad = f.catalog.join("bad.fathom.nan");
    with_nan_vectors(&f.catalog.join("tracks.fathom"), &bad);
    let mut bad_spec = std::ffi::OsString::from("tracks=");
    bad_spec.push(&bad);
    let mut ok_spec = std::ffi::OsString::from("episodes=");
    ok_spec.push(f.catalog.join("episodes.fathom"));
    let mut server = serve_args(
        &["--index".as_ref(), &bad_spec, "--index".as_ref(), &ok_spec],
        &["--no-verify", "--no-watch"],
    );
    let client = connect(&server).await;
    for _ in 0..5 {
        assert_eq!(outcome(&client, "tracks").await, "DataLoss");
        assert_eq!(outcome(&client, "episodes").await, "OK ep");
    }
    let err = client.search("tracks", &query(), 10, 0).await.unwrap_err();
    assert!(err.to_string().contains("non-finite"), "{err}");
    server.assert_alive("at the end");
}

/// A snapshot replaced by a symlink to a FIFO (what a hung network file
/// system looks like to `open`) and reloaded by the watcher and by SIGHUP:
/// the reload is refused without opening it, every index keeps answering,
/// ListIndexes says why, and SIGTERM still stops the process within its
/// grace period. (Before, the reload blocked in `open` holding a lock that
/// ListIndexes waited on: every call timed out and SIGTERM was ignored.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_behind_a_served_name_stops_nothing() {
    let f = fixture();
    let mut server = serve(&f.catalog, &["--shutdown-grace", "3"]);
    let client = connect(&server).await;
    let fifo = f.catalog.join("pipe");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let link = f.catalog.join(".tracks.link");
    std::os::unix::fs::symlink(&fifo, &link).unwrap();
    std::fs::rename(&link, f.catalog.join("tracks.fathom")).unwrap();
    let pid = server.child.id().to_string();
    let signal = |sig: &str| {
        let ok = Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    };
    signal("-HUP");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let list = tokio::time::timeout(Duration::from_secs(5), client.list_indexes())
            .await
            .expect("ListIndexes answers while the catalog holds a FIFO")
            .unwrap();
        let tracks = list.iter().find(|i| i.name == "tracks").unwrap();
        if tracks.last_reload_error.contains("FIFO") {
            break;
        }
        assert!(Instant::now() < deadline, "the FIFO was never refused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(outcome(&client, "tracks").await, "OK v1");
    assert_eq!(outcome(&client, "episodes").await, "OK ep");
    server.assert_alive("after the FIFO");

    signal("-TERM");
    let stopped = Instant::now();
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(3 + 10),
            "SIGTERM did not stop the server within its grace period"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
}

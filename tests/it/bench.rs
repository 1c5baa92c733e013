//! `fathom bench` end to end against a real server on 127.0.0.1 (port 0):
//! the counts add up, the percentiles are monotone, the recall equals
//! `fathom_engine::eval::evaluate` for the same queries and ef (Search, BatchSearch,
//! open loop, sweep), and a target that is unreachable, silent, or dies
//! mid-run fails fast with a clear message. Each run is about a second.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use fathom_engine::builder::{build, BuildOptions, Dataset};
use fathom_engine::eval::evaluate;
use fathom_engine::exact::knn_batch;
use fathom_engine::formats::{write_fvecs, write_ivecs};
use fathom_engine::vectors::Rows;
use fathom_engine::{synth, Index, Metric};
use fathom_server::catalog::{Catalog, LoadOptions};
use fathom_server::{self as server, Limits, RunningServer, SearchThreads, ServeConfig};
use serde_json::Value;

const N: usize = 3000;
const DIM: usize = 16;
const NQ: usize = 60;
const K: usize = 10;

/// A snapshot with ids `item:00000`... (row i has id `item:{i:05}`), its
/// ids file, queries and exact ground truth; built once per test run.
struct Fixture {
    dir: tempfile::TempDir,
    queries: Vec<Vec<f32>>,
    truth: Vec<Vec<u32>>,
}

impl Fixture {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn arg(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_string()
    }
    /// recall@K of in-process search at `ef`, as `fathom eval` computes it.
    fn eval_recall(&self, ef: usize) -> f64 {
        let index = Index::open(self.path("items.fathom")).unwrap();
        let (row, _) = evaluate(&index, &self.queries, &self.truth, K, ef, 1).unwrap();
        row.recall
    }
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let vectors = synth::clustered(N, DIM, 12, 11);
        let ids: Vec<String> = (0..N).map(|i| format!("item:{i:05}")).collect();
        std::fs::write(dir.path().join("ids.txt"), ids.join("\n")).unwrap();
        let ds = Dataset {
            dim: DIM,
            vectors,
            ids,
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
        built
            .write(&dir.path().join("items.fathom"), "test")
            .unwrap();
        let queries = synth::clustered_queries(NQ, DIM, 12, 11);
        write_fvecs(&dir.path().join("q.fvecs"), DIM, &queries.concat()).unwrap();
        let rows = Rows {
            data: &built.vectors,
            dim: DIM,
            stride: DIM,
        };
        let truth: Vec<Vec<u32>> = knn_batch(rows, Metric::Cosine, &queries, K, 2);
        write_ivecs(&dir.path().join("gt.ivecs"), &truth).unwrap();
        Fixture {
            dir,
            queries,
            truth,
        }
    })
}

/// A server for the fixture's snapshot (as index `items`) on its own
/// runtime, so the bench process can be waited on from the test thread.
struct TestServer {
    rt: tokio::runtime::Runtime,
    server: Option<RunningServer>,
    target: String,
}

impl TestServer {
    fn start() -> TestServer {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let specs = vec![("items".to_string(), fixture().path("items.fathom"))];
        let catalog = Catalog::open(&specs, None, LoadOptions::default()).unwrap();
        let config = ServeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            metrics_listen: None,
            limits: Limits::default(),
            default_ef: None,
            search_threads: SearchThreads::Pool(2),
            watch: false,
            shutdown_grace: Duration::from_secs(5),
            ..ServeConfig::default()
        };
        let server = rt
            .block_on(server::start(config, Arc::new(catalog)))
            .unwrap();
        let target = format!("http://{}", server.local_addr());
        TestServer {
            rt,
            server: Some(server),
            target,
        }
    }

    fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            self.rt.block_on(s.shutdown()).unwrap();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
    took: Duration,
}

/// Start `fathom bench` with `args`; the caller waits with [`Bench::wait`].
struct Bench {
    child: std::process::Child,
    out: tempfile::NamedTempFile,
    err: tempfile::NamedTempFile,
    started: Instant,
}

fn spawn(args: &[&str]) -> Bench {
    let out = tempfile::NamedTempFile::new().unwrap();
    let err = tempfile::NamedTempFile::new().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_fathom"))
        .arg("bench")
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.reopen().unwrap())
        .stderr(err.reopen().unwrap())
        .spawn()
        .expect("run fathom bench");
    Bench {
        child,
        out,
        err,
        started: Instant::now(),
    }
}

impl Bench {
    /// Wait at most `limit`; a bench still running then is killed and the
    /// test fails: it must never hang.
    fn wait(mut self, limit: Duration) -> Run {
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if self.started.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "fathom bench still running after {limit:?}; stderr: {}",
                    std::fs::read_to_string(self.err.path()).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let run = Run {
            ok: status.success(),
            stdout: std::fs::read_to_string(self.out.path()).unwrap(),
            stderr: std::fs::read_to_string(self.err.path()).unwrap(),
            took: self.started.elapsed(),
        };
        assert!(
            !run.stderr.contains("panicked"),
            "fathom bench panicked: {}",
            run.stderr
        );
        run
    }
}

fn bench(args: &[&str]) -> Run {
    spawn(args).wait(Duration::from_secs(60))
}

/// The common flags of a measured run against `target`.
fn base_args(target: &str) -> Vec<String> {
    let f = fixture();
    [
        "--target",
        target,
        "--index",
        "items",
        "--queries",
        &f.arg("q.fvecs"),
        "--ground-truth",
        &f.arg("gt.ivecs"),
        "--ids",
        &f.arg("ids.txt"),
        "-k",
        &K.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn with(base: &[String], extra: &[&str]) -> Vec<String> {
    let mut v = base.to_vec();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn run_args(args: &[String]) -> Run {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    bench(&refs)
}

fn json_lines(s: &str) -> Vec<Value> {
    s.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn u(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

fn f(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

/// The invariants every report keeps.
fn check_report(v: &Value, ef: usize, expect_recall: f64) {
    let (sent, ok, errors) = (u(v, "sent"), u(v, "ok"), u(v, "errors"));
    assert_eq!(sent, ok + errors, "sent = ok + errors: {v}");
    assert!(ok > 0, "no successful call: {v}");
    assert_eq!(errors, 0, "a healthy server gave errors: {v}");
    let codes: u64 = v["codes"]
        .as_object()
        .unwrap()
        .values()
        .map(|c| c.as_u64().unwrap())
        .sum();
    assert_eq!(codes, sent, "codes add up to sent: {v}");
    assert_eq!(u(&v["codes"], "OK"), ok);
    let lat: Vec<f64> = ["min_us", "p50_us", "p90_us", "p99_us", "p999_us", "max_us"]
        .iter()
        .map(|k| f(v, k))
        .collect();
    assert!(lat[0] > 0.0, "{v}");
    assert!(
        lat.windows(2).all(|w| w[0] <= w[1]),
        "percentiles not monotone: {lat:?}"
    );
    let mean = f(v, "mean_us");
    assert!(lat[0] <= mean && mean <= lat[5], "{v}");
    assert!(f(v, "qps") > 0.0 && f(v, "duration_s") > 0.0);
    assert!(f(v, "client_cpu_pct") > 0.0, "{v}");
    assert_eq!(u(v, "ef"), ef as u64);
    assert_eq!(u(v, "k"), K as u64);
    assert_eq!(v["index"], "items");
    // Every query was answered, so the recall covers them all and equals
    // what in-process evaluation gives for the same queries and ef.
    assert_eq!(u(v, "recall_queries"), NQ as u64, "{v}");
    assert_eq!(u(v, "unmapped_ids"), 0);
    let recall = f(v, "recall");
    assert!(
        (recall - expect_recall).abs() < 1e-12,
        "bench recall {recall} vs eval recall {expect_recall} at ef {ef}"
    );
}

#[test]
fn closed_loop_search_and_batch_match_eval() {
    let fx = fixture();
    let server = TestServer::start();
    let base = base_args(&server.target);
    let ef = 10;
    let expect = fx.eval_recall(ef);
    assert!(expect > 0.3 && expect < 1.0, "ef {ef} recall {expect}");

    let out = fx
        .dir
        .path()
        .join(format!("closed-{}.json", std::process::id()));
    let r = run_args(&with(
        &base,
        &[
            "--ef",
            "10",
            "--concurrency",
            "4",
            "--duration",
            "1s",
            "--warmup",
            "200ms",
            "--json",
            "--out",
            out.to_str().unwrap(),
        ],
    ));
    assert!(r.ok, "{}", r.stderr);
    let lines = json_lines(&r.stdout);
    assert_eq!(lines.len(), 1, "{}", r.stdout);
    let v = &lines[0];
    check_report(v, ef, expect);
    assert_eq!(v["mode"], "closed");
    assert_eq!(v["concurrency"], 4);
    assert!(v["rate"].is_null());
    assert_eq!(v["method"], "Search");
    // --out holds what --json printed.
    assert_eq!(std::fs::read_to_string(&out).unwrap(), r.stdout);

    // BatchSearch: 7 queries a call, so calls start at every query offset.
    let r = run_args(&with(
        &base,
        &[
            "--ef",
            "10",
            "--batch",
            "7",
            "--concurrency",
            "2",
            "--duration",
            "800ms",
            "--warmup",
            "0s",
            "--json",
        ],
    ));
    assert!(r.ok, "{}", r.stderr);
    let v = &json_lines(&r.stdout)[0];
    check_report(v, ef, expect);
    assert_eq!(v["method"], "BatchSearch");
    assert_eq!(v["batch"], 7);
    let qps = f(v, "qps");
    let calls = f(v, "calls_per_s");
    assert!((qps - 7.0 * calls).abs() < 1e-6 * qps, "{v}");

    // The readable table.
    let r = run_args(&with(
        &base,
        &[
            "--ef",
            "10",
            "--concurrency",
            "2",
            "--duration",
            "300ms",
            "--warmup",
            "0s",
        ],
    ));
    assert!(r.ok, "{}", r.stderr);
    for want in [
        "closed loop: 2 callers",
        "p99.9",
        "recall@10",
        "client CPU",
        "OK ",
    ] {
        assert!(r.stdout.contains(want), "{want:?} missing in\n{}", r.stdout);
    }
}

#[test]
fn open_loop_keeps_its_schedule_and_counts() {
    let fx = fixture();
    let server = TestServer::start();
    let ef = 24;
    let r = run_args(&with(
        &base_args(&server.target),
        &[
            "--ef",
            "24",
            "--rate",
            "400",
            "--concurrency",
            "8",
            "--duration",
            "1s",
            "--warmup",
            "200ms",
            "--json",
        ],
    ));
    assert!(r.ok, "{}", r.stderr);
    let v = &json_lines(&r.stdout)[0];
    check_report(v, ef, fx.eval_recall(ef));
    assert_eq!(v["mode"], "open");
    assert_eq!(f(v, "rate"), 400.0);
    // 400 calls are due in one second; each is either sent or counted unsent.
    assert_eq!(u(v, "scheduled"), 400, "{v}");
    assert_eq!(u(v, "sent") + u(v, "unsent"), 400, "{v}");
    assert!(u(v, "late") <= u(v, "sent"));
    let lag: Vec<f64> = ["send_lag_p50_us", "send_lag_p99_us", "max_send_lag_us"]
        .iter()
        .map(|k| f(v, k))
        .collect();
    assert!(lag[0] <= lag[1] && lag[1] <= lag[2], "{v}");
}

#[test]
fn ef_sweep_prints_a_table_and_draws_the_chart() {
    let fx = fixture();
    let server = TestServer::start();
    let svg = fx
        .dir
        .path()
        .join(format!("sweep-{}.svg", std::process::id()));
    let out = fx
        .dir
        .path()
        .join(format!("sweep-{}.json", std::process::id()));
    let r = run_args(&with(
        &base_args(&server.target),
        &[
            "--sweep-ef",
            "10,40",
            "--concurrency",
            "2",
            "--duration",
            "500ms",
            "--warmup",
            "100ms",
            "--plot",
            svg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    ));
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stdout.contains("ef sweep"), "{}", r.stdout);
    let rows: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("10 ") || l.trim_start().starts_with("40 "))
        .collect();
    assert_eq!(rows.len(), 2, "{}", r.stdout);
    let runs = json_lines(&std::fs::read_to_string(&out).unwrap());
    assert_eq!(runs.len(), 2);
    for (v, ef) in runs.iter().zip([10, 40]) {
        check_report(v, ef, fx.eval_recall(ef));
    }
    let chart = std::fs::read_to_string(&svg).unwrap();
    assert!(
        chart.starts_with("<svg"),
        "{}",
        &chart[..100.min(chart.len())]
    );
    assert!(chart.contains("ef 10, ") && chart.contains("ef 40, "));
    assert!(chart.contains(" QPS"), "every point shows its QPS");
    assert!(chart.contains("log scale"));
}

/// A reload while measuring is reported: recall may mix two snapshots.
#[test]
fn a_reload_during_the_run_is_reported() {
    let server = TestServer::start();
    let args = with(
        &base_args(&server.target),
        &["--duration", "1500ms", "--warmup", "0s", "--json"],
    );
    let bench = spawn(&args.iter().map(String::as_str).collect::<Vec<_>>());
    std::thread::sleep(Duration::from_millis(600));
    let target = server.target.clone();
    server.rt.block_on(async move {
        let client = fathom_server::client::Client::connect(&target, Duration::from_secs(2))
            .await
            .unwrap();
        client.reload(Some("items")).await.unwrap();
    });
    let r = bench.wait(Duration::from_secs(30));
    assert!(r.ok, "{}", r.stderr);
    assert!(
        r.stderr.contains("was reloaded during this measurement")
            && r.stderr.contains("same file, build time and size"),
        "{}",
        r.stderr
    );
    let runs = json_lines(&r.stdout);
    assert!(runs[0]["snapshot_changed"].is_string(), "{}", r.stdout);
}

#[test]
fn unreachable_or_silent_target_fails_fast() {
    let fx = fixture();
    let q = fx.arg("q.fvecs");
    // Nothing listens on a port just released.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let target = format!("http://127.0.0.1:{port}");
    let r = bench(&[
        "--target",
        &target,
        "--index",
        "items",
        "--queries",
        &q,
        "--connect-timeout",
        "1s",
    ]);
    assert!(!r.ok);
    assert!(
        r.stderr.contains(&format!("cannot connect to {target}")),
        "{}",
        r.stderr
    );
    assert!(r.took < Duration::from_secs(10), "took {:?}", r.took);

    // A listener that accepts and then says nothing: the connect timeout or
    // the per-call deadline ends it.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = format!("http://{}", silent.local_addr().unwrap());
    let holder = std::thread::spawn(move || {
        let mut held = Vec::new();
        silent.set_nonblocking(true).unwrap();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(15) {
            if let Ok((s, _)) = silent.accept() {
                held.push(s);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let r = bench(&[
        "--target",
        &target,
        "--index",
        "items",
        "--queries",
        &q,
        "--connect-timeout",
        "1s",
        "--timeout",
        "500ms",
    ]);
    assert!(!r.ok);
    assert!(
        r.stderr.starts_with("error:") && r.stderr.contains(&target),
        "{}",
        r.stderr
    );
    assert!(r.took < Duration::from_secs(10), "took {:?}", r.took);
    drop(holder);
}

#[test]
fn server_gone_mid_run_fails_with_a_message() {
    let mut server = TestServer::start();
    let args = with(
        &base_args(&server.target),
        &[
            "--duration",
            "30s",
            "--warmup",
            "0s",
            "--timeout",
            "300ms",
            "--concurrency",
            "2",
            "--json",
        ],
    );
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let running = spawn(&refs);
    std::thread::sleep(Duration::from_millis(800));
    let stopped = Instant::now();
    server.stop();
    let r = running.wait(Duration::from_secs(30));
    assert!(!r.ok, "{}", r.stdout);
    assert!(
        r.stderr.contains("failed mid-run") && r.stderr.contains("no call succeeded"),
        "{}",
        r.stderr
    );
    // Stall window: 2 × 300 ms + 1 s, plus slack for a loaded machine.
    assert!(
        stopped.elapsed() < Duration::from_secs(8),
        "took {:?}",
        stopped.elapsed()
    );
    // The partial measurement is still reported, marked as aborted.
    let v = &json_lines(&r.stdout)[0];
    assert!(v["aborted"].is_string(), "{v}");
    assert_eq!(u(v, "sent"), u(v, "ok") + u(v, "errors"));
    assert!(u(v, "ok") > 0 && u(v, "errors") > 0, "{v}");
}

#[test]
fn bad_inputs_fail_with_clear_messages() {
    let fx = fixture();
    let server = TestServer::start();
    let t = server.target.as_str();
    let q = fx.arg("q.fvecs");
    let gt = fx.arg("gt.ivecs");
    let ids = fx.arg("ids.txt");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--target", t, "--index", "nope", "--queries", &q],
            "serves no index \"nope\" (it serves: items)",
        ),
        (
            vec!["--target", t, "--index", "items", "--queries", &gt],
            "unknown vector file type",
        ),
        (
            // The server's ids are not row numbers: recall needs --ids.
            vec![
                "--target",
                t,
                "--index",
                "items",
                "--queries",
                &q,
                "--ground-truth",
                &gt,
            ],
            "pass --ids FILE",
        ),
        (
            vec![
                "--target",
                t,
                "--index",
                "items",
                "--queries",
                &q,
                "--ids",
                &ids,
            ],
            "needs --ground-truth",
        ),
        (
            vec![
                "--target",
                t,
                "--index",
                "items",
                "--queries",
                &q,
                "--ground-truth",
                &gt,
                "--ids",
                &ids,
                "--plot",
                "x.png",
            ],
            "only .svg",
        ),
        (
            vec![
                "--target",
                t,
                "--index",
                "items",
                "--queries",
                &q,
                "-k",
                "5000",
            ],
            "INVALID_ARGUMENT",
        ),
        (
            vec![
                "--target",
                t,
                "--index",
                "items",
                "--queries",
                &q,
                "--duration",
                "soon",
            ],
            "not a duration",
        ),
        (
            vec![
                "--target",
                t,
                "--index",
                "items",
                "--queries",
                &q,
                "--duration",
                "99999999999s",
            ],
            "--duration must be at most",
        ),
        (
            vec!["--target", "not a url", "--index", "items", "--queries", &q],
            "invalid target",
        ),
    ];
    for (args, want) in cases {
        let r = bench(&args);
        assert!(!r.ok, "{args:?} succeeded");
        assert!(
            r.stderr.contains(want),
            "{args:?}: want {want:?} in {}",
            r.stderr
        );
        assert!(
            r.took < Duration::from_secs(10),
            "{args:?} took {:?}",
            r.took
        );
    }
    // A query file of another dimension.
    let other = fx.dir.path().join("q8.fvecs");
    write_fvecs(&other, 8, &[0.5; 16]).unwrap();
    let r = bench(&[
        "--target",
        t,
        "--index",
        "items",
        "--queries",
        other.to_str().unwrap(),
    ]);
    assert!(!r.ok);
    assert!(r.stderr.contains("has dimension 16"), "{}", r.stderr);
}

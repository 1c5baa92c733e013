//! `fathom route` over 4 shards × 2 replicas, all real processes on
//! loopback: routed answers match one index over the union, a replica
//! killed or restarted under load fails no call, a hung shard gives a
//! partial answer in time (or UNAVAILABLE when the caller requires all),
//! and deletes reach every replica or say which did not confirm.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fathom_engine::formats::write_fvecs;
use fathom_engine::synth;
use fathom_server::client::{Client, ClientError};
use fathom_server::proto as pb;
use tonic::Code;

use crate::common::Reaped;
use crate::query::fathom;

const N: usize = 2000;
const DIM: usize = 16;
const SHARDS: usize = 4;
const REPLICAS: usize = 2;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Start a process and wait (bounded) for its "listening" log line.
fn start(args: &[String]) -> Reaped {
    let child = Command::new(env!("CARGO_BIN_EXE_fathom"))
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    crate::common::until_listening(child).0
}

struct Cluster {
    dir: PathBuf,
    ports: Vec<Vec<u16>>,
    replicas: Vec<Vec<Option<Reaped>>>,
    _router: Reaped,
    target: String,
}

impl Cluster {
    fn replica_args(&self, s: usize, r: usize) -> Vec<String> {
        let spec = format!("words={}", self.dir.join("words").display());
        [
            "serve",
            "--index",
            &spec,
            "--shard",
            &s.to_string(),
            "--no-watch",
            "--metrics-listen",
            "off",
            "--shutdown-grace",
            "5",
            "--listen",
            &format!("127.0.0.1:{}", self.ports[s][r]),
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    }

    fn up(dir: &Path, hedge: &str) -> Cluster {
        let ports: Vec<Vec<u16>> = (0..SHARDS)
            .map(|_| (0..REPLICAS).map(|_| free_port()).collect())
            .collect();
        let mut c = Cluster {
            dir: dir.to_path_buf(),
            ports,
            replicas: Vec::new(),
            _router: Reaped(Command::new("true").spawn().unwrap()),
            target: String::new(),
        };
        for s in 0..SHARDS {
            let row = (0..REPLICAS)
                .map(|r| Some(start(&c.replica_args(s, r))))
                .collect();
            c.replicas.push(row);
        }
        let spec = c
            .ports
            .iter()
            .map(|rs| {
                rs.iter()
                    .map(|p| format!("127.0.0.1:{p}"))
                    .collect::<Vec<_>>()
                    .join("|")
            })
            .collect::<Vec<_>>()
            .join(",");
        let port = free_port();
        c._router = start(&[
            "route".into(),
            "--index".into(),
            format!("words={spec}"),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--metrics-listen".into(),
            "off".into(),
            "--hedge-after".into(),
            hedge.into(),
            "--health-interval".into(),
            "200ms".into(),
        ]);
        c.target = format!("http://127.0.0.1:{port}");
        c
    }

    fn pid(&self, s: usize, r: usize) -> i32 {
        self.replicas[s][r].as_ref().unwrap().id() as i32
    }
}

fn fixture(dir: &Path) {
    let vectors = synth::clustered(N, DIM, 8, 21);
    write_fvecs(&dir.join("base.fvecs"), DIM, &vectors).unwrap();
    let ids: String = (0..N).map(|i| format!("t:{i:05}\n")).collect();
    std::fs::write(dir.join("ids.txt"), ids).unwrap();
    let attrs: String = (0..N)
        .map(|i| {
            format!(
                "{{\"id\": \"t:{i:05}\", \"genre\": \"g{}\", \"year\": {}}}\n",
                i % 7,
                1990 + i % 30
            )
        })
        .collect();
    std::fs::write(dir.join("attrs.jsonl"), attrs).unwrap();
    for (out, extra) in [("words/", vec!["--shards", "4"]), ("whole.fathom", vec![])] {
        let mut args = vec![
            "build",
            "--input",
            dir.join("base.fvecs").to_str().unwrap().to_string().leak(),
            "--ids",
            dir.join("ids.txt").to_str().unwrap().to_string().leak(),
            "--attributes",
            dir.join("attrs.jsonl").to_str().unwrap().to_string().leak(),
            "--threads",
            "2",
            "--output",
        ];
        let out = format!("{}/{out}", dir.display());
        args.push(out.leak());
        args.extend(extra);
        let o = fathom(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
}

/// The ids `fathom search ARGS --json` returns, nearest first.
fn ids_of(args: &[&str]) -> Vec<String> {
    let o = fathom(args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    crate::common::hit_ids(&o.stdout)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn query(i: usize) -> Vec<f32> {
    synth::clustered_queries(64, DIM, 8, 21)[i % 64].clone()
}

async fn search(c: &Client, req: pb::SearchRequest) -> Result<pb::SearchResponse, ClientError> {
    let mut raw = c.raw();
    let mut r = tonic::Request::new(req);
    r.set_timeout(Duration::from_millis(500));
    Ok(raw.search(r).await?.into_inner())
}

/// The ids a routed Search answers, nearest first.
fn routed_ids(rt: &tokio::runtime::Runtime, c: &Client, req: pb::SearchRequest) -> Vec<String> {
    rt.block_on(search(c, req))
        .unwrap()
        .hits
        .into_iter()
        .map(|h| h.id)
        .collect()
}

fn plain(i: usize, k: u32) -> pb::SearchRequest {
    pb::SearchRequest {
        index: "words".into(),
        vector: query(i),
        k,
        ef: 600,
        ..Default::default()
    }
}

/// Calls from 2 tasks until `stop`; failures counted.
fn load(
    rt: &tokio::runtime::Runtime,
    target: &str,
    stop: Arc<AtomicBool>,
) -> (
    Arc<AtomicU64>,
    Arc<AtomicU64>,
    Vec<tokio::task::JoinHandle<()>>,
) {
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let handles = (0..2)
        .map(|t| {
            let (ok, failed, stop, target) =
                (ok.clone(), failed.clone(), stop.clone(), target.to_string());
            rt.spawn(async move {
                let c = Client::connect(&target, Duration::from_secs(2))
                    .await
                    .unwrap();
                let mut i = t;
                while !stop.load(Ordering::Relaxed) {
                    match search(&c, plain(i, 10)).await {
                        Ok(r) if r.hits.len() == 10 && r.shards_answered == r.shards_total => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        other => {
                            eprintln!("failed call: {other:?}");
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    i += 2;
                }
            })
        })
        .collect();
    (ok, failed, handles)
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) on a child process id this test started.
    unsafe { libc::kill(pid, sig) };
}

#[test]
fn routed_answers_match_one_index_and_survive_failures() {
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path());
    let mut cluster = Cluster::up(dir.path(), "auto");
    let rt = runtime();
    let client = rt
        .block_on(Client::connect(&cluster.target, Duration::from_secs(5)))
        .unwrap();

    // Over the union: at an ef that searches each 500-item shard
    // exhaustively, the routed answer is the exact one, as from the
    // whole index in one process; with a filter, exclusions and a group
    // cap applied after the merge too.
    let whole = dir.path().join("whole.fathom");
    for i in 0..8 {
        let q = query(i);
        let vector = q
            .iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let want = |extra: &[&str]| -> Vec<String> {
            let mut args = vec![
                "search",
                whole.to_str().unwrap(),
                "--vector",
                &vector,
                "-k",
                "10",
                "--ef",
                "2000",
                "--json",
            ];
            args.extend_from_slice(extra);
            ids_of(&args)
        };
        let got = |req: pb::SearchRequest| -> Vec<String> {
            let r = rt.block_on(search(&client, req)).unwrap();
            assert_eq!((r.shards_answered, r.shards_total), (4, 4));
            r.hits.into_iter().map(|h| h.id).collect()
        };
        assert_eq!(got(plain(i, 10)), want(&[]));
        let filtered = pb::SearchRequest {
            filter: "genre = \"g3\"".into(),
            ..plain(i, 10)
        };
        assert_eq!(got(filtered), want(&["--filter", "genre = \"g3\""]));
        let exclude = want(&[])[..3].to_vec();
        std::fs::write(dir.path().join("ex.txt"), exclude.join("\n")).unwrap();
        let excluded = pb::SearchRequest {
            exclude_ids: exclude.clone(),
            ..plain(i, 10)
        };
        let ex_file = dir.path().join("ex.txt");
        assert_eq!(
            got(excluded),
            want(&["--exclude-file", ex_file.to_str().unwrap()])
        );
        let capped = pb::SearchRequest {
            group_by: "genre".into(),
            group_size: 1,
            candidates: 600,
            ..plain(i, 5)
        };
        let want_capped = ids_of(&[
            "search",
            whole.to_str().unwrap(),
            "--vector",
            &vector,
            "-k",
            "5",
            "--ef",
            "2000",
            "--json",
            "--group-by",
            "genre",
            "--group-size",
            "1",
            "--candidates",
            "600",
        ]);
        assert_eq!(got(capped), want_capped);
    }

    // Recall at a small beam: each shard is searched at that ef, so the
    // union does at least as well as one index searched at it.
    let (mut routed, mut single) = (0usize, 0usize);
    for i in 0..32 {
        let vector = query(i)
            .iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let w = whole.to_str().unwrap();
        let truth = ids_of(&[
            "search", w, "--vector", &vector, "-k", "10", "--ef", "2000", "--json",
        ]);
        let one = ids_of(&[
            "search", w, "--vector", &vector, "-k", "10", "--ef", "10", "--json",
        ]);
        let r = rt
            .block_on(search(
                &client,
                pb::SearchRequest {
                    ef: 10,
                    ..plain(i, 10)
                },
            ))
            .unwrap();
        single += one.iter().filter(|id| truth.contains(id)).count();
        routed += r.hits.iter().filter(|h| truth.contains(&h.id)).count();
    }
    let (routed, single) = (routed as f64 / 320.0, single as f64 / 320.0);
    assert!(
        routed >= single - 0.005,
        "routed recall {routed} against one index's {single}"
    );

    // Seeds by id: their vectors come from the owning shards, and the
    // seeds never come back; the same as one index.
    let like = ["t:00001", "t:00700", "t:01999"];
    let want = ids_of(&[
        "search",
        whole.to_str().unwrap(),
        "--like",
        &like.join(","),
        "-k",
        "10",
        "--ef",
        "2000",
        "--json",
    ]);
    let seeded = pb::SearchRequest {
        vector: Vec::new(),
        positive_ids: like.iter().map(|s| s.to_string()).collect(),
        ..plain(0, 10)
    };
    let r = rt.block_on(search(&client, seeded)).unwrap();
    let got: Vec<String> = r.hits.into_iter().map(|h| h.id).collect();
    assert_eq!(got, want);
    assert!(got.iter().all(|id| !like.contains(&id.as_str())));

    // A replica killed under load: no call fails.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed, handles) = load(&rt, &cluster.target, stop.clone());
    std::thread::sleep(Duration::from_millis(500));
    signal(cluster.pid(1, 0), libc::SIGKILL);
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        rt.block_on(h).unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "calls failed after a replica was killed"
    );
    assert!(ok.load(Ordering::Relaxed) > 20);
    cluster.replicas[1][0] = Some(start(&cluster.replica_args(1, 0)));

    // Both replicas of shard 2 hung: a 500 ms call answers in time from 3
    // of 4 shards; with require_complete it is UNAVAILABLE.
    for r in 0..REPLICAS {
        signal(cluster.pid(2, r), libc::SIGSTOP);
    }
    let t = Instant::now();
    let partial = rt.block_on(search(&client, plain(0, 10))).unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(700),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!((partial.shards_answered, partial.shards_total), (3, 4));
    assert_eq!(partial.hits.len(), 10);
    let strict = pb::SearchRequest {
        require_complete: true,
        ..plain(0, 10)
    };
    match rt.block_on(search(&client, strict)) {
        Err(ClientError::Rpc(s)) => assert_eq!(s.code(), Code::Unavailable, "{s:?}"),
        other => panic!("expected UNAVAILABLE, got {other:?}"),
    }
    for r in 0..REPLICAS {
        signal(cluster.pid(2, r), libc::SIGCONT);
    }
    let back = Instant::now();
    loop {
        let r = rt.block_on(search(&client, plain(0, 10)));
        if matches!(&r, Ok(r) if r.shards_answered == 4) {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "still partial: {r:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // A rolling restart under load: one replica at a time, each back up
    // before the next goes; no call fails.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed, handles) = load(&rt, &cluster.target, stop.clone());
    for s in 0..SHARDS {
        for r in 0..REPLICAS {
            signal(cluster.pid(s, r), libc::SIGTERM);
            let mut old = cluster.replicas[s][r].take().unwrap();
            let _ = old.wait();
            cluster.replicas[s][r] = Some(start(&cluster.replica_args(s, r)));
            // The router's next health check (every 200 ms) finds it serving.
            std::thread::sleep(Duration::from_millis(400));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        rt.block_on(h).unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "calls failed in a rolling restart"
    );
    assert!(ok.load(Ordering::Relaxed) > 20);

    // Deletes: gone at once; with a replica down the call names it, and the
    // same call succeeds once the replica is back.
    let victim = "t:00042";
    let delete = |ids: &[&str]| rt.block_on(client.delete("words", ids));
    assert_eq!(delete(&[victim]).unwrap().deleted, 1);
    let gone = rt.block_on(client.get_items("words", &[victim]));
    assert!(
        matches!(gone, Err(ClientError::Rpc(ref s)) if s.code() == Code::NotFound),
        "{gone:?}"
    );
    let other = "t:00043";
    let shard = fathom_engine::shards::shard_of(other, SHARDS as u32) as usize;
    let down = format!("127.0.0.1:{}", cluster.ports[shard][1]);
    signal(cluster.pid(shard, 1), libc::SIGKILL);
    let mut dead = cluster.replicas[shard][1].take().unwrap();
    let _ = dead.wait();
    match delete(&[other]) {
        Err(ClientError::Rpc(s)) => {
            assert_eq!(s.code(), Code::Unavailable);
            assert!(s.message().contains(&down), "{}", s.message());
        }
        r => panic!("expected UNAVAILABLE naming {down}, got {r:?}"),
    }
    cluster.replicas[shard][1] = Some(start(&cluster.replica_args(shard, 1)));
    assert!(delete(&[other]).is_ok());
    for _ in 0..4 {
        let r = rt
            .block_on(search(
                &client,
                pb::SearchRequest {
                    k: 1000,
                    ..plain(0, 1000)
                },
            ))
            .unwrap();
        assert!(r.hits.iter().all(|h| h.id != victim && h.id != other));
    }
}

/// Shard servers and a router each with tokens of their own, the router
/// holding a token for the shards; and a federated call over two sharded
/// indexes with per-index minimums applied after the merge.
#[test]
fn a_router_with_tokens_and_tls_routes_federated_calls() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let vectors = synth::clustered(600, DIM, 4, 5);
    write_fvecs(&d.join("base.fvecs"), DIM, &vectors).unwrap();
    for (name, prefix) in [("words", "w"), ("more", "m")] {
        let ids: String = (0..600).map(|i| format!("{prefix}:{i:04}\n")).collect();
        std::fs::write(d.join(format!("{name}.txt")), ids).unwrap();
        let o = fathom(&[
            "build",
            "--input",
            d.join("base.fvecs").to_str().unwrap(),
            "--ids",
            d.join(format!("{name}.txt")).to_str().unwrap(),
            "--shards",
            "2",
            "--threads",
            "2",
            "--output",
            &format!("{}/{name}/", d.display()),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let write_secret = |name: &str, text: &str| {
        use std::os::unix::fs::PermissionsExt;
        let p = d.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    };
    let shard_tokens = write_secret("shard-tokens", "admin shard-admin-0123456789abcdef\n");
    let shard_token = write_secret("shard-token", "shard-admin-0123456789abcdef\n");
    let router_tokens = write_secret("router-tokens", "search caller-search-0123456789ab\n");
    // The shards speak TLS; the router trusts their CA.
    let pki = d.join("pki");
    let o = fathom(&["tls", "init", pki.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ports: Vec<u16> = (0..2).map(|_| free_port()).collect();
    let _shards: Vec<Reaped> = (0..2)
        .map(|s| {
            start(&[
                "serve".into(),
                "--index".into(),
                format!("words={}", d.join("words").display()),
                "--index".into(),
                format!("more={}", d.join("more").display()),
                "--shard".into(),
                s.to_string(),
                "--tokens".into(),
                shard_tokens.display().to_string(),
                "--max-exclusions".into(),
                "4".into(),
                "--tls-cert".into(),
                pki.join("server.pem").display().to_string(),
                "--tls-key".into(),
                pki.join("server.key").display().to_string(),
                "--no-watch".into(),
                "--metrics-listen".into(),
                "off".into(),
                "--listen".into(),
                format!("127.0.0.1:{}", ports[s]),
            ])
        })
        .collect();
    let spec = format!("127.0.0.1:{},127.0.0.1:{}", ports[0], ports[1]);
    let port = free_port();
    let _router = start(&[
        "route".into(),
        "--index".into(),
        format!("words={spec}"),
        "--index".into(),
        format!("more={spec}"),
        "--shard-token-file".into(),
        shard_token.display().to_string(),
        "--shard-tls-ca".into(),
        pki.join("ca.pem").display().to_string(),
        "--shard-connections".into(),
        "2".into(),
        "--tokens".into(),
        router_tokens.display().to_string(),
        "--max-batch".into(),
        "8".into(),
        "--max-exclusions".into(),
        "4".into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--metrics-listen".into(),
        "off".into(),
    ]);
    let target = format!("http://127.0.0.1:{port}");
    let rt = runtime();
    let connect = |token: Option<&str>| {
        let security = fathom_server::client::Security {
            token: token.map(str::to_string),
            ..Default::default()
        };
        rt.block_on(Client::connect_with(
            &target,
            Duration::from_secs(5),
            &security,
        ))
        .unwrap()
    };
    let request = pb::SearchRequest {
        indexes: vec!["words".into(), "more".into()],
        vector: query(3),
        k: 10,
        min_per_index: 4,
        ..Default::default()
    };
    match rt.block_on(search(&connect(None), request.clone())) {
        Err(ClientError::Rpc(s)) => assert_eq!(s.code(), Code::Unauthenticated),
        r => panic!("a call without a token was answered: {r:?}"),
    }
    let r = rt
        .block_on(search(
            &connect(Some("caller-search-0123456789ab")),
            request,
        ))
        .unwrap();
    assert_eq!((r.shards_answered, r.shards_total), (4, 4));
    assert_eq!(r.hits.len(), 10);
    for (name, prefix) in [("words", "w:"), ("more", "m:")] {
        let mine: Vec<_> = r.hits.iter().filter(|h| h.index == name).collect();
        assert!(mine.len() >= 4, "{name} got {} hits", mine.len());
        assert!(mine.iter().all(|h| h.id.starts_with(prefix)));
    }
    assert!(r.hits.windows(2).all(|w| w[0].distance <= w[1].distance));

    // A batch answers each query as the Search it stands for.
    let caller = connect(Some("caller-search-0123456789ab"));
    let batch = pb::BatchSearchRequest {
        indexes: vec!["words".into(), "more".into()],
        queries: (0..3)
            .map(|i| pb::Query {
                vector: query(i),
                ..Default::default()
            })
            .collect(),
        k: 6,
        min_per_index: 2,
        exclude_ids: vec!["w:0001".into()],
        ..Default::default()
    };
    let mut raw = caller.raw();
    let answers = rt.block_on(raw.batch_search(batch)).unwrap().into_inner();
    assert_eq!(answers.results.len(), 3);
    for (i, got) in answers.results.iter().enumerate() {
        let one = pb::SearchRequest {
            indexes: vec!["words".into(), "more".into()],
            vector: query(i),
            k: 6,
            min_per_index: 2,
            exclude_ids: vec!["w:0001".into()],
            ..Default::default()
        };
        let want = rt.block_on(search(&caller, one)).unwrap();
        let ids = |r: &pb::SearchResponse| r.hits.iter().map(|h| h.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(got), ids(&want));
        assert_eq!(got.shards_answered, 4);
    }

    // The router's own caps are checked before anything fans out: a
    // batch over --max-batch never reaches a shard.
    let too_big = pb::BatchSearchRequest {
        index: "words".into(),
        queries: (0..9)
            .map(|i| pb::Query {
                vector: query(i),
                ..Default::default()
            })
            .collect(),
        k: 5,
        ..Default::default()
    };
    match rt.block_on(raw.batch_search(too_big)) {
        Err(s) => {
            assert_eq!(s.code(), Code::InvalidArgument);
            assert!(s.message().contains("batch size"), "{}", s.message());
        }
        Ok(_) => panic!("a batch over --max-batch was routed"),
    }

    // Diversity after the merge: over every item as candidates, the
    // router's picks are those of the sharded folder searched in process.
    let vector = query(5)
        .iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let words = d.join("words");
    let want = ids_of(&[
        "search",
        words.to_str().unwrap(),
        "--vector",
        &vector,
        "-k",
        "6",
        "--ef",
        "600",
        "--diversity",
        "0.5",
        "--candidates",
        "600",
        "--json",
    ]);
    let diverse = pb::SearchRequest {
        index: "words".into(),
        vector: query(5),
        k: 6,
        ef: 600,
        diversity: 0.5,
        candidates: 600,
        ..Default::default()
    };
    let got = routed_ids(&rt, &caller, diverse);
    assert_eq!(got, want);
    let nearest = ids_of(&[
        "search",
        words.to_str().unwrap(),
        "--vector",
        &vector,
        "-k",
        "6",
        "--ef",
        "600",
        "--json",
    ]);
    assert_ne!(got, nearest, "diversity changed nothing");

    // Seeds by id on top of as many exclusions as the shards accept: the
    // seeds are not exclusions, as on one server, and the answer is the
    // sharded folder's in process.
    let excluded = ["w:0010", "w:0011", "w:0012", "w:0013"];
    std::fs::write(d.join("excluded.txt"), excluded.join("\n")).unwrap();
    let want = ids_of(&[
        "search",
        words.to_str().unwrap(),
        "--like",
        "w:0003,w:0007",
        "--exclude-file",
        d.join("excluded.txt").to_str().unwrap(),
        "-k",
        "6",
        "--ef",
        "600",
        "--json",
    ]);
    let seeded = pb::SearchRequest {
        index: "words".into(),
        positive_ids: vec!["w:0003".into(), "w:0007".into()],
        exclude_ids: excluded.iter().map(|s| s.to_string()).collect(),
        k: 6,
        ef: 600,
        ..Default::default()
    };
    let got = routed_ids(&rt, &caller, seeded);
    assert_eq!(got, want);
    assert!(got
        .iter()
        .all(|id| !["w:0003", "w:0007"].contains(&id.as_str())));
}

#[test]
fn a_router_probes_the_shards_nearest_the_query() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let n = 1200;
    write_fvecs(&d.join("base.fvecs"), DIM, &synth::clustered(n, DIM, 8, 31)).unwrap();
    let ids: String = (0..n).map(|i| format!("k:{i:04}\n")).collect();
    std::fs::write(d.join("ids.txt"), ids).unwrap();
    let attrs: String = (0..n)
        .map(|i| format!("{{\"id\": \"k:{i:04}\", \"tag\": \"t{i}\"}}\n"))
        .collect();
    std::fs::write(d.join("attrs.jsonl"), attrs).unwrap();
    let folder = d.join("kw");
    let o = fathom(&[
        "build",
        "--input",
        d.join("base.fvecs").to_str().unwrap(),
        "--ids",
        d.join("ids.txt").to_str().unwrap(),
        "--attributes",
        d.join("attrs.jsonl").to_str().unwrap(),
        "--shards",
        "4",
        "--partition",
        "kmeans",
        // Items near a second centroid are stored there too: the router
        // keeps one hit per id, and counts a delete once.
        "--closure",
        "0.2",
        "--threads",
        "2",
        "--output",
        &format!("{}/", folder.display()),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let _shards: Vec<Reaped> = (0..4)
        .map(|s| {
            start(&[
                "serve".into(),
                "--index".into(),
                format!("kw={}", folder.display()),
                "--shard".into(),
                s.to_string(),
                "--no-watch".into(),
                "--metrics-listen".into(),
                "off".into(),
                "--listen".into(),
                format!("127.0.0.1:{}", ports[s]),
            ])
        })
        .collect();
    let port = free_port();
    let spec: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let _router = start(&[
        "route".into(),
        "--index".into(),
        format!("kw={}", spec.join(",")),
        "--probe".into(),
        "1".into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--metrics-listen".into(),
        "off".into(),
    ]);
    let rt = runtime();
    let c = rt
        .block_on(Client::connect(
            &format!("http://127.0.0.1:{port}"),
            Duration::from_secs(5),
        ))
        .unwrap();
    let csv = |v: &[f32]| {
        v.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let request = |q: &[f32], filter: &str| pb::SearchRequest {
        index: "kw".into(),
        vector: q.to_vec(),
        k: 10,
        ef: 64,
        filter: filter.into(),
        ..Default::default()
    };

    // One probe: the nearest shard only, as the folder searched in process.
    for i in 0..4 {
        let q = query(i);
        let want = ids_of(&[
            "search",
            folder.to_str().unwrap(),
            "--vector",
            &csv(&q),
            "-k",
            "10",
            "--ef",
            "64",
            "--probe",
            "1",
            "--json",
        ]);
        let r = rt.block_on(search(&c, request(&q, ""))).unwrap();
        let got: Vec<String> = r.hits.iter().map(|h| h.id.clone()).collect();
        assert_eq!(got, want);
        assert_eq!((r.shards_answered, r.shards_total), (1, 1));
    }

    // A filter matching three items of the farthest shard only: the probe
    // widens until it finds all three.
    let q = query(5);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(folder.join("shards.json")).unwrap()).unwrap();
    let cos = |c: &serde_json::Value| {
        let c: Vec<f32> = c
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        let dot: f32 = c.iter().zip(&q).map(|(a, b)| a * b).sum();
        dot / q.iter().map(|x| x * x).sum::<f32>().sqrt()
    };
    let centroids = manifest["centroids"].as_array().unwrap();
    let far = (0..4)
        .min_by(|&a, &b| cos(&centroids[a]).total_cmp(&cos(&centroids[b])))
        .unwrap();
    let mut three = ids_of(&[
        "search",
        folder.join(format!("shard-{far:04}")).to_str().unwrap(),
        "--vector",
        &csv(&q),
        "-k",
        "3",
        "--json",
    ]);
    let filter = three
        .iter()
        .map(|id| format!("tag = \"t{}\"", id[2..].parse::<usize>().unwrap()))
        .collect::<Vec<_>>()
        .join(" OR ");
    let r = rt.block_on(search(&c, request(&q, &filter))).unwrap();
    let mut got: Vec<String> = r.hits.iter().map(|h| h.id.clone()).collect();
    got.sort();
    three.sort();
    assert_eq!(got, three);
    assert!(r.shards_total > 1);
    let copies: serde_json::Value =
        serde_json::from_slice(&std::fs::read(folder.join("shards.json")).unwrap()).unwrap();
    let stored: u64 = copies["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["count"].as_u64().unwrap())
        .sum();
    assert!(stored > n as u64, "{stored} stored for {n}");
    // Every shard at once: the copies come back once each.
    let mut all = request(&q, "");
    all.probe = 4;
    all.k = 40;
    let r = rt.block_on(search(&c, all)).unwrap();
    let ids: std::collections::HashSet<&String> = r.hits.iter().map(|h| &h.id).collect();
    assert_eq!((r.hits.len(), ids.len()), (40, 40));

    // Items are found in whichever shard holds them, and deleted there.
    let mut raw = c.raw();
    let items = rt
        .block_on(raw.get_items(pb::GetItemsRequest {
            index: "kw".into(),
            ids: vec![three[0].clone(), three[1].clone()],
        }))
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(
        items.iter().map(|i| &i.id).collect::<Vec<_>>(),
        [&three[0], &three[1]]
    );
    let deleted = rt
        .block_on(raw.delete(pb::DeleteRequest {
            index: "kw".into(),
            ids: vec![three[0].clone(), "never".into()],
        }))
        .unwrap()
        .into_inner();
    assert_eq!(
        (deleted.deleted, deleted.unknown),
        (1, vec!["never".to_string()])
    );
    let r = rt.block_on(search(&c, request(&q, &filter))).unwrap();
    assert_eq!(r.hits.len(), 2);
}

#[test]
fn a_router_asks_its_shards_to_sample_and_pools_their_recall() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let n = 1200;
    write_fvecs(&d.join("base.fvecs"), DIM, &synth::clustered(n, DIM, 8, 5)).unwrap();
    let folder = d.join("hs");
    let o = fathom(&[
        "build",
        "--input",
        d.join("base.fvecs").to_str().unwrap(),
        "--shards",
        "2",
        "--m",
        "4",
        "--ef-construction",
        "8",
        "--output",
        &format!("{}/", folder.display()),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ports: Vec<u16> = (0..2).map(|_| free_port()).collect();
    // The shards sample at their default rate, and whatever a router asks.
    let _shards: Vec<Reaped> = (0..2)
        .map(|s| {
            start(&[
                "serve".into(),
                "--index".into(),
                format!("hs={}", folder.display()),
                "--shard".into(),
                s.to_string(),
                "--recall-budget".into(),
                "1".into(),
                "--no-watch".into(),
                "--metrics-listen".into(),
                "off".into(),
                "--listen".into(),
                format!("127.0.0.1:{}", ports[s]),
            ])
        })
        .collect();
    let port = free_port();
    let spec: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let _router = start(&[
        "route".into(),
        "--index".into(),
        format!("hs={}", spec.join(",")),
        "--recall-sample".into(),
        "1".into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--metrics-listen".into(),
        "off".into(),
    ]);
    let rt = runtime();
    let c = rt
        .block_on(Client::connect(
            &format!("http://127.0.0.1:{port}"),
            Duration::from_secs(5),
        ))
        .unwrap();
    for i in 0..40 {
        let req = pb::SearchRequest {
            ef: 10,
            ..plain(i, 10)
        };
        rt.block_on(search(
            &c,
            pb::SearchRequest {
                index: "hs".into(),
                ..req
            },
        ))
        .unwrap();
    }
    // Every routed call was sampled by both shards, and the router's list
    // pools the two estimates.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let e = loop {
        let list = rt.block_on(c.list_indexes()).unwrap();
        if let Some(e) = list[0].recall.iter().find(|e| e.kind == "plain") {
            if e.samples >= 80 {
                break e.clone();
            }
        }
        assert!(std::time::Instant::now() < deadline, "{:?}", list[0].recall);
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(e.samples, 80);
    assert!(
        0.0 < e.low && e.low <= e.estimate && e.estimate <= e.high && e.high <= 1.0,
        "{e:?}"
    );
    let per_shard: Vec<f64> = ports
        .iter()
        .map(|p| {
            let s = rt
                .block_on(Client::connect(
                    &format!("http://127.0.0.1:{p}"),
                    Duration::from_secs(5),
                ))
                .unwrap();
            let list = rt.block_on(s.list_indexes()).unwrap();
            let e = list[0].recall.iter().find(|e| e.kind == "plain").unwrap();
            assert_eq!(e.samples, 40);
            e.estimate
        })
        .collect();
    let mean = (per_shard[0] + per_shard[1]) / 2.0;
    assert!(
        (e.estimate - mean).abs() < 1e-9,
        "{} against {per_shard:?}",
        e.estimate
    );
}
